"""OutcomeWriter on a real SQLite outbox: outcomes are written back in
batches, a delivery that used up its attempts is reported, the dispatcher is
woken when a retry is due, and close() writes what is left."""

from __future__ import annotations

import asyncio
import time

import pytest

from edgesense.common.errors import Unavailable
from edgesense.delivery.record.writer import OutcomeWriter
from edgesense.delivery.store.outbox import Outbox
from edgesense.delivery.store.rows import FAILED, PENDING, SUCCEEDED, Outcome, StoredEvent
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

    async def record(self, owner: str, outcomes: list[Outcome], now: float) -> None:
        if not self.refused.is_set():
            self.refused.set()
            raise RuntimeError("driver exploded")
        await self.outbox.record(owner, outcomes, now)


async def test_run_survives_an_unexpected_error(outbox: Outbox) -> None:
    """run() logs a failed write and tries again: the outcome is written once
    the outbox takes it, and the writer keeps going."""
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
