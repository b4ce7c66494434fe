"""Reconciler on a real SQLite outbox: what the registry's snapshot and
changes, and a delivery that used up its attempts, do to deliveries; read
back from the outbox."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import pytest

from edgesense.common.errors import Unavailable
from edgesense.delivery.record.reconciler import Reconciler
from edgesense.delivery.store.outbox import Outbox
from edgesense.delivery.store.rows import FAILED, HELD, PENDING, Outcome, StoredEvent
from edgesense.delivery.webhooks.index import ACTIVE, DISABLED, Target, WebhookIndex
from edgesense.delivery.webhooks.registry_link import FailureReport
from tests.delivery.conftest import new_delivery

DISABLED_REASON = "webhook disabled"


def target(webhook_id: str, status: str = ACTIVE) -> Target:
    url = f"https://hooks.example.test/{webhook_id}"
    return Target(webhook_id, "p", url, frozenset(), frozenset(), status, "s")


class Calls:
    """What the reconciler asked of the dispatcher and the registry link."""

    def __init__(self) -> None:
        self.wakes = 0
        self.reports: list[FailureReport] = []

    def wake(self) -> None:
        self.wakes += 1

    def report_failure(self, report: FailureReport) -> None:
        self.reports.append(report)


def reconciler_on(outbox: Outbox, index: WebhookIndex, calls: Calls) -> Reconciler:
    reconciler = Reconciler(outbox, index)
    reconciler.attach(calls.wake, calls.report_failure)
    return reconciler


async def store(outbox: Outbox, *webhooks: str, first: int = 1) -> None:
    """dlv_{first}, dlv_{first + 1}, ... pending and due now, to these
    webhooks in that order."""
    now = time.time()
    numbers = range(first, first + len(webhooks))
    await outbox.accept(
        [StoredEvent(f"evt_{n}", "p", b"") for n in numbers],
        [new_delivery(n, webhook, due=now) for n, webhook in zip(numbers, webhooks, strict=True)],
        now,
    )


async def states(outbox: Outbox, count: int) -> list[tuple[str, str | None]]:
    """(status, reason) of dlv_1 .. dlv_{count}."""
    found = []
    for n in range(1, count + 1):
        one = await outbox.one("p", f"dlv_{n}")
        assert one is not None
        found.append((one[0].status, one[0].status_reason))
    return found


def exhausted(number: int) -> Outcome:
    reason = "6 attempts failed; last: HTTP 500"
    return Outcome(f"dlv_{number}", 6, time.time(), 5, 500, None, "", FAILED, reason, 6, 0.0)


async def test_a_snapshot_releases_and_holds(outbox: Outbox) -> None:
    await store(outbox, "wh_on", "wh_off", "wh_on")
    await outbox.hold(["wh_on"], DISABLED_REASON, time.time())  # disabled before
    calls = Calls()
    reconciler = reconciler_on(outbox, WebhookIndex(), calls)
    await reconciler.on_snapshot([target("wh_on"), target("wh_off", DISABLED)])
    assert await states(outbox, 3) == [
        (PENDING, None),
        (HELD, DISABLED_REASON),
        (PENDING, None),
    ]
    assert calls.wakes == 1


async def test_a_deleted_webhook_fails_its_open_deliveries(outbox: Outbox) -> None:
    await store(outbox, "wh_1")
    await outbox.hold(["wh_1"], DISABLED_REASON, time.time())
    await store(outbox, "wh_1", "wh_2", first=2)
    reconciler = reconciler_on(outbox, WebhookIndex(), Calls())
    await reconciler.on_change(target("wh_1"), None)
    assert await states(outbox, 3) == [
        (FAILED, "webhook deleted"),  # held
        (FAILED, "webhook deleted"),  # pending
        (PENDING, None),  # another webhook's
    ]


async def test_disabling_holds_and_enabling_releases(outbox: Outbox) -> None:
    await store(outbox, "wh_1", "wh_2")
    calls = Calls()
    reconciler = reconciler_on(outbox, WebhookIndex(), calls)
    await reconciler.on_change(target("wh_1"), target("wh_1", DISABLED))
    assert await states(outbox, 2) == [(HELD, DISABLED_REASON), (PENDING, None)]
    assert calls.wakes == 0
    await reconciler.on_change(target("wh_1", DISABLED), target("wh_1"))
    assert await states(outbox, 2) == [(PENDING, None), (PENDING, None)]
    assert calls.wakes == 1  # released: to be claimed now
    found = await outbox.one("p", "dlv_1")
    assert found is not None
    assert found[0].next_attempt_at <= time.time()


async def written_exhausted(outbox: Outbox) -> Outcome:
    """dlv_1 to wh_1, failed as the outcome writer leaves it before reporting it."""
    outcome = exhausted(1)
    await store(outbox, "wh_1")
    await outbox.fail_all(["wh_1"], str(outcome.status_reason), time.time())
    return outcome


def report_of(outcome: Outcome) -> FailureReport:
    """What on_exhausted reports for dlv_1 to wh_1: the reason and the last attempt."""
    return FailureReport(
        "wh_1",
        "dlv_1",
        str(outcome.status_reason),
        started_at=outcome.started_at,
        status_code=outcome.status_code,
        error=outcome.error,
    )


async def test_exhausted_disables_here_reports_and_holds(outbox: Outbox) -> None:
    outcome = await written_exhausted(outbox)
    await store(outbox, "wh_1", "wh_2", first=2)
    index = WebhookIndex()
    index.replace([target("wh_1"), target("wh_2")])
    calls = Calls()
    reconciler = reconciler_on(outbox, index, calls)
    await reconciler.on_exhausted(target("wh_1"), outcome)
    here = index.get("wh_1")
    assert here is not None
    assert (here.status, here.disabled_reason) == (DISABLED, outcome.status_reason)
    assert calls.reports == [report_of(outcome)]
    assert await states(outbox, 3) == [
        (FAILED, outcome.status_reason),
        (HELD, DISABLED_REASON),
        (PENDING, None),  # another webhook's
    ]


class HoldRefusedOnce:
    """The real outbox, whose first hold() fails as the database refusing it."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.refused = False

    async def hold(self, webhook_ids: Sequence[str], reason: str, now: float) -> int:
        if not self.refused:
            self.refused = True
            raise Unavailable("database is down")
        return await self.outbox.hold(webhook_ids, reason, now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.outbox, name)


async def test_a_failed_hold_is_done_by_the_registrys_disable(outbox: Outbox) -> None:
    """on_exhausted's hold fails after the webhook was disabled here and
    reported; the registry's disable, streamed back, finds it disabled in the
    index already, and holds its deliveries all the same."""
    outcome = await written_exhausted(outbox)
    await store(outbox, "wh_1", "wh_1", first=2)
    index = WebhookIndex()
    index.replace([target("wh_1")])
    calls = Calls()
    flaky = HoldRefusedOnce(outbox)
    reconciler = reconciler_on(flaky, index, calls)
    with pytest.raises(Unavailable):
        await reconciler.on_exhausted(target("wh_1"), outcome)
    assert flaky.refused
    assert calls.reports == [report_of(outcome)]
    assert (await states(outbox, 3))[1:] == [(PENDING, None), (PENDING, None)]
    # The registry's change, applied as RegistryLink applies it.
    disabled = dataclasses.replace(
        target("wh_1", DISABLED), disabled_reason=calls.reports[0].reason
    )
    previous = index.upsert(disabled)
    assert previous is not None
    assert not previous.active
    await reconciler.on_change(previous, disabled)
    assert (await states(outbox, 3))[1:] == [(HELD, DISABLED_REASON), (HELD, DISABLED_REASON)]
