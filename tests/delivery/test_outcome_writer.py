"""OutcomeWriter on a real SQLite outbox: outcomes are written back in
batches, a delivery that used up its attempts is reported, the dispatcher is
woken when a retry is due, and close() lets the write under way finish and
writes what is left. Failures are injected around the real outbox: the
database down (the batch waits), an unexpected error (the batch is written
one outcome at a time, and one that cannot be written is dropped)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import cast

import pytest

from edgesense.common.errors import Unavailable
from edgesense.delivery.record.writer import OutcomeWriter
from edgesense.delivery.store.outbox import Outbox
from edgesense.delivery.store.rows import FAILED, HELD, PENDING, SUCCEEDED, Outcome, StoredEvent
from edgesense.delivery.webhooks.index import ACTIVE, Target
from tests.delivery.conftest import new_delivery

TARGET = Target("wh_1", "p", "https://hooks.example.test/x", frozenset(), frozenset(), ACTIVE, "s")


@pytest.fixture
async def outbox(outbox: Outbox) -> Outbox:
    """The SQLite outbox with dlv_0..dlv_2 to wh_1, leased to "me"."""
    now = time.time()
    await outbox.accept(
        [StoredEvent(f"evt_{n}", "p", b"") for n in range(3)],
        [
            new_delivery(n, "wh_1", due=now, lease_owner="me", lease_expires_at=now + 30)
            for n in range(3)
        ],
        now,
    )
    return outbox


def outcome(number: int, status: str, next_attempt_at: float = 0.0) -> Outcome:
    return Outcome(
        f"dlv_{number}", 1, time.time(), 12, 500, None, "no", status, "HTTP 500", 1, next_attempt_at
    )


async def state(outbox: Outbox, number: int) -> tuple[str, int]:
    found = await outbox.one("p", f"dlv_{number}")
    assert found is not None
    row, attempts = found
    return row.status, len(attempts)


async def test_outcomes_are_written_and_acted_on(outbox: Outbox) -> None:
    exhausted: list[tuple[Target, Outcome]] = []
    retry_due = asyncio.Event()

    async def on_exhausted(target: Target, outcome: Outcome) -> None:
        exhausted.append((target, outcome))

    writer = OutcomeWriter(outbox, "me", on_exhausted=on_exhausted, on_retry_due=retry_due.set)
    running = asyncio.create_task(writer.run())
    failed, retried = outcome(0, FAILED), outcome(1, PENDING, time.time() + 0.1)
    writer.add(failed, TARGET)
    writer.add(retried, TARGET)
    await asyncio.wait_for(retry_due.wait(), 5)  # once written, and the retry is due
    assert exhausted == [(TARGET, failed)]
    writer.add(outcome(2, SUCCEEDED), TARGET)  # after run() went back to waiting
    await writer.close(running, 5)
    assert running.done()
    assert [await state(outbox, n) for n in range(3)] == [(FAILED, 1), (PENDING, 1), (SUCCEEDED, 1)]


async def test_an_ordered_webhooks_ended_deliveries_release_their_devices(
    outbox: Outbox,
) -> None:
    """Once written, a delivery of an ordered webhook that ended (succeeded or
    failed) lets its device's next one be claimed: the dispatcher is told
    which webhooks to refill. A retry, a hold, or an unordered webhook's
    delivery tells it nothing."""
    ordered = dataclasses.replace(TARGET, ordered=True)
    released: list[set[tuple[str, str]]] = []

    async def on_exhausted(target: Target, outcome: Outcome) -> None:
        pass

    writer = OutcomeWriter(
        outbox,
        "me",
        on_exhausted=on_exhausted,
        on_retry_due=lambda: None,
        on_order_released=lambda webhooks: released.append(set(webhooks)),
    )
    writer.add(outcome(0, PENDING, time.time() + 60), ordered)
    writer.add(outcome(1, HELD), ordered)
    writer.add(outcome(2, SUCCEEDED), TARGET)
    await writer.flush()
    assert released == []
    for status in (SUCCEEDED, FAILED):
        writer.add(outcome(0, status), ordered)
        writer.add(outcome(1, status), ordered)
        await writer.flush()
    assert released == [{("p", "wh_1")}, {("p", "wh_1")}]


class Releases:
    """Records what each write asks the outbox to release (rows.PARKED_AT)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.released: list[list[str]] = []

    async def record(
        self, owner: str, outcomes: list[Outcome], now: float, released: Sequence[str] = ()
    ) -> None:
        self.released.append(list(released))
        await self.outbox.record(owner, outcomes, now, released)


async def test_keyed_deliveries_that_ended_release_their_devices_next_in_the_write(
    outbox: Outbox,
) -> None:
    """Decided by the delivery (it has an order key), not the webhook's setting
    now: a webhook switched to unordered still releases what was stored keyed."""
    recording = Releases(outbox)

    async def on_exhausted(target: Target, outcome: Outcome) -> None:
        pass

    writer = OutcomeWriter(
        cast(Outbox, recording), "me", on_exhausted=on_exhausted, on_retry_due=lambda: None
    )
    writer.add(outcome(0, SUCCEEDED)._replace(keyed=True), TARGET)
    writer.add(outcome(1, PENDING, time.time() + 60)._replace(keyed=True), TARGET)
    writer.add(outcome(2, FAILED), TARGET)  # no key: nothing to release
    await writer.flush()
    assert recording.released == [["dlv_0"]]


async def test_close_writes_what_is_left(outbox: Outbox) -> None:
    async def never(target: Target, outcome: Outcome) -> None:
        raise AssertionError("nothing is exhausted here")

    writer = OutcomeWriter(outbox, "me", on_exhausted=never, on_retry_due=lambda: None)
    running = asyncio.create_task(writer.run())
    writer.add(outcome(0, SUCCEEDED), TARGET)  # run() has not written it yet
    await writer.close(running, 5)
    assert await state(outbox, 0) == (SUCCEEDED, 1)
    await writer.flush()  # nothing left: no second write
    assert await state(outbox, 0) == (SUCCEEDED, 1)


async def test_a_failing_report_skips_nothing_else(outbox: Outbox) -> None:
    """The batch is written; then the first exhausted delivery's report fails
    (the database refusing the hold, then a bug): the second is still
    reported, the retry wake still set, and the batch is not written twice."""
    reported: list[str] = []
    retry_due = asyncio.Event()
    failures = iter([Unavailable("database is down"), RuntimeError("a bug")])

    async def on_exhausted(target: Target, outcome: Outcome) -> None:
        reported.append(outcome.delivery_id)
        failure = next(failures, None)
        if failure is not None:
            raise failure

    writer = OutcomeWriter(outbox, "me", on_exhausted=on_exhausted, on_retry_due=retry_due.set)
    for n in range(2):
        writer.add(outcome(n, FAILED), TARGET)
    writer.add(outcome(2, PENDING, time.time()), TARGET)
    await writer.flush()
    assert reported == ["dlv_0", "dlv_1"]
    await asyncio.wait_for(retry_due.wait(), 5)
    await writer.flush()  # nothing queued again
    assert [await state(outbox, n) for n in range(3)] == [(FAILED, 1), (FAILED, 1), (PENDING, 1)]


class RefusesOnce:
    """The real outbox, whose first record() fails as an unexpected error
    (fault injection: a database driver raising something we did not map)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.refused = asyncio.Event()

    async def record(
        self, owner: str, outcomes: list[Outcome], now: float, released: Sequence[str] = ()
    ) -> None:
        if not self.refused.is_set():
            self.refused.set()
            raise RuntimeError("driver exploded")
        await self.outbox.record(owner, outcomes, now)


async def test_run_survives_an_unexpected_error(outbox: Outbox) -> None:
    """A batch whose write fails unexpectedly is written again one outcome at
    a time: the outcome is written, and the writer keeps going."""
    flaky = RefusesOnce(outbox)
    written = asyncio.Event()
    writer = OutcomeWriter(
        flaky,  # type: ignore[arg-type]  # only record() is used
        "me",
        on_exhausted=lambda target, outcome: asyncio.sleep(0),
        on_retry_due=written.set,
    )
    running = asyncio.create_task(writer.run())
    writer.add(outcome(0, PENDING, time.time()), TARGET)
    await asyncio.wait_for(written.wait(), 10)  # after the failure, a second write
    assert flaky.refused.is_set()
    assert not running.done()
    await writer.close(running, 5)
    assert await state(outbox, 0) == (PENDING, 1)


class Refuses:
    """The real outbox, whose record() fails for a while: as the database
    down (Unavailable) until `down` is cleared, and always, as an unexpected
    error, for a batch that holds `poison`'s outcome (one that can never be
    written: a bug, a row the driver cannot take)."""

    def __init__(self, outbox: Outbox, poison: str = "") -> None:
        self.outbox = outbox
        self.poison = poison
        self.down = False
        self.calls = 0

    async def record(
        self, owner: str, outcomes: list[Outcome], now: float, released: Sequence[str] = ()
    ) -> None:
        self.calls += 1
        if self.down:
            raise Unavailable("database is down")
        if any(o.delivery_id == self.poison for o in outcomes):
            raise RuntimeError("driver cannot take this row")
        await self.outbox.record(owner, outcomes, now)


async def lease_of(outbox: Outbox, number: int) -> str | None:
    found = await outbox.one("p", f"dlv_{number}")
    assert found is not None
    owner: str | None = found[0].lease_owner
    return owner


async def test_an_outcome_that_cannot_be_written_is_dropped(outbox: Outbox) -> None:
    """The batch fails for dlv_1's outcome: dlv_0 and dlv_2 are written one
    at a time and acted on (dlv_2 reported), dlv_1's is dropped, its delivery
    left leased (sent again once the lease expires), and not tried again."""
    reported: list[str] = []

    async def on_exhausted(target: Target, outcome: Outcome) -> None:
        reported.append(outcome.delivery_id)

    poisoned = Refuses(outbox, poison="dlv_1")
    writer = OutcomeWriter(
        poisoned,  # type: ignore[arg-type]  # only record() is used
        "me",
        on_exhausted=on_exhausted,
        on_retry_due=lambda: None,
    )
    writer.add(outcome(0, SUCCEEDED), TARGET)
    writer.add(outcome(1, SUCCEEDED), TARGET)
    writer.add(outcome(2, FAILED), TARGET)
    await writer.flush()
    assert [await state(outbox, n) for n in range(3)] == [
        (SUCCEEDED, 1),
        (PENDING, 0),
        (FAILED, 1),
    ]
    assert await lease_of(outbox, 1) == "me"
    assert reported == ["dlv_2"]
    calls = poisoned.calls  # the batch, then each of the three
    assert calls == 4
    await writer.flush()
    assert poisoned.calls == calls  # dropped: nothing queued again


async def test_the_database_down_keeps_the_whole_batch(outbox: Outbox) -> None:
    """Unavailable: nothing is written one at a time or dropped; the batch is
    written whole once the database is back."""
    refusing = Refuses(outbox)
    refusing.down = True
    writer = OutcomeWriter(
        refusing,  # type: ignore[arg-type]  # only record() is used
        "me",
        on_exhausted=lambda target, outcome: asyncio.sleep(0),
        on_retry_due=lambda: None,
    )
    for n in range(3):
        writer.add(outcome(n, SUCCEEDED), TARGET)
    with pytest.raises(Unavailable):
        await writer.flush()
    assert refusing.calls == 1
    refusing.down = False
    await writer.flush()
    assert refusing.calls == 2
    assert [await state(outbox, n) for n in range(3)] == [(SUCCEEDED, 1)] * 3


class Gated:
    """The real outbox, whose record() waits for `gate` once it has begun."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def record(
        self, owner: str, outcomes: list[Outcome], now: float, released: Sequence[str] = ()
    ) -> None:
        self.entered.set()
        await self.gate.wait()
        await self.outbox.record(owner, outcomes, now)


async def test_close_lets_the_flush_under_way_finish(outbox: Outbox) -> None:
    """close() comes while run() is writing dlv_0's outcome, just after
    dlv_1's was added: run() finishes that flush (dlv_0 is reported) and is
    not cancelled; close() writes and reports dlv_1."""
    reported: list[str] = []

    async def on_exhausted(target: Target, outcome: Outcome) -> None:
        reported.append(outcome.delivery_id)

    gated = Gated(outbox)
    writer = OutcomeWriter(
        gated,  # type: ignore[arg-type]  # only record() is used
        "me",
        on_exhausted=on_exhausted,
        on_retry_due=lambda: None,
    )
    running = asyncio.create_task(writer.run())
    writer.add(outcome(0, FAILED), TARGET)
    await gated.entered.wait()  # run() is writing dlv_0
    writer.add(outcome(1, FAILED), TARGET)
    closing = asyncio.create_task(writer.close(running, 5))
    # Tasks run in the order they were made ready: close() begins before the
    # write goes on.
    gated.gate.set()
    await closing
    assert not running.cancelled()
    assert sorted(reported) == ["dlv_0", "dlv_1"]
    assert [await state(outbox, n) for n in range(2)] == [(FAILED, 1), (FAILED, 1)]
