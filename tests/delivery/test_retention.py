"""Retention's rounds (record/maintenance.py) on a real SQLite outbox: bounded
work per round, a backlog taken over several rounds, every row counted in
edgesense_retention_deleted_total. What a batch deletes is tested on both
databases in test_outbox.py; the loop in a running service in
tests/integration/test_delivery_processes.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from edgesense.common.config import Settings
from edgesense.common.errors import ConfigurationError
from edgesense.delivery.record import maintenance
from edgesense.delivery.record.maintenance import apply_retention, retention_period
from edgesense.delivery.store.outbox import Outbox
from edgesense.delivery.store.rows import SUCCEEDED, Deleted, Outcome, StoredEvent
from tests.delivery.conftest import new_delivery
from tests.support.waiting import eventually

NOW = 1_000_000.0


def deleted_total(kind: str) -> float:
    value = REGISTRY.get_sample_value("edgesense_retention_deleted_total", {"kind": kind})
    return value or 0.0


async def ended_deliveries(outbox: Outbox, count: int) -> None:
    """`count` deliveries (each of its own event) that succeeded at NOW."""
    planned = [new_delivery(n, "wh_a", due=NOW) for n in range(count)]
    events = [StoredEvent(d.event_id, "p", b"{}") for d in planned]
    await outbox.accept(events, planned, NOW)
    await outbox.claim("me", NOW, 30, count)
    outcomes = [
        Outcome(d.delivery_id, 1, NOW, 5, 200, None, None, SUCCEEDED, None, 1, NOW) for d in planned
    ]
    await outbox.record("me", outcomes, NOW)


async def test_a_round_deletes_at_most_its_batches_and_says_when_rows_are_left(
    outbox: Outbox,
) -> None:
    await ended_deliveries(outbox, 7)
    before = {kind: deleted_total(kind) for kind in ("deliveries", "attempts", "events")}

    first = await apply_retention(outbox, NOW + 1, batches=2, batch=2)
    assert first == (Deleted(4, 4, 4), True)  # two full batches: more may be left
    assert (await outbox.counts())[SUCCEEDED] == 3
    second = await apply_retention(outbox, NOW + 1, batches=2, batch=2)
    assert second == (Deleted(3, 3, 3), False)  # the second batch was not full
    assert await apply_retention(outbox, NOW + 1, batches=2, batch=2) == (Deleted(0, 0, 0), False)
    assert (await outbox.counts())[SUCCEEDED] == 0
    for kind in before:
        assert deleted_total(kind) - before[kind] == 7


async def test_nothing_is_deleted_before_the_retention_has_passed(outbox: Outbox) -> None:
    await ended_deliveries(outbox, 3)
    assert await apply_retention(outbox, NOW) == (Deleted(0, 0, 0), False)
    assert (await outbox.counts())[SUCCEEDED] == 3


def test_retention_days_accept_fractions_and_set_how_often_it_runs() -> None:
    settings = Settings.from_env({"EDGESENSE_RETENTION_DAYS": "0.001"}, dev=False)
    assert settings.retention_seconds == 86.4
    assert retention_period(settings.retention_seconds) == 10.0
    assert retention_period(4.0) == 2.0
    assert Settings.from_env({}, dev=False).retention_seconds == 30 * 86400
    for bad in ("0", "-1", "a month"):
        with pytest.raises(ConfigurationError, match="EDGESENSE_RETENTION_DAYS"):
            Settings.from_env({"EDGESENSE_RETENTION_DAYS": bad}, dev=False)


async def test_retention_waits_until_the_online_indexes_are_built(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """maintain() counts the queue every round but deletes nothing until
    `indexes_built` is set, which build_indexes_until_done does (at once on
    SQLite, whose migrations made the indexes)."""
    monkeypatch.setattr(maintenance, "COUNT_EVERY_SECONDS", 0.01)
    await ended_deliveries(outbox, 3)
    rounds = 0

    def begin_pending_count() -> Callable[[int], None]:
        nonlocal rounds
        rounds += 1
        return lambda _pending: None

    built = asyncio.Event()
    settings = Settings.from_env({}, dev=False)  # 30 days: NOW is long past it
    task = asyncio.create_task(maintenance.maintain(outbox, begin_pending_count, settings, built))
    try:
        await eventually(lambda: rounds >= 3, what="three rounds of maintenance")
        assert (await outbox.counts())[SUCCEEDED] == 3
        await maintenance.build_indexes_until_done(outbox, built)
        assert built.is_set()

        async def deleted() -> bool:
            return (await outbox.counts())[SUCCEEDED] == 0

        await eventually(deleted, what="retention to delete the ended deliveries")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_retention_waits_for_the_indexes_only_so_long(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A build that cannot finish must not stop the outbox from shrinking:
    past RETENTION_WAITS_AT_MOST_SECONDS retention runs without them, and says so."""
    monkeypatch.setattr(maintenance, "COUNT_EVERY_SECONDS", 0.01)
    monkeypatch.setattr(maintenance, "RETENTION_WAITS_AT_MOST_SECONDS", 0.0)
    await ended_deliveries(outbox, 2)
    settings = Settings.from_env({}, dev=False)
    never = asyncio.Event()
    task = asyncio.create_task(
        maintenance.maintain(outbox, lambda: lambda _pending: None, settings, never)
    )
    try:

        async def deleted() -> bool:
            return (await outbox.counts())[SUCCEEDED] == 0

        await eventually(deleted, what="retention to run without the indexes")
        assert "retention runs without the outbox's online indexes" in caplog.text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_index_build_retries_back_off_to_a_ceiling_and_never_overflow() -> None:
    delays = [maintenance.retry_delay(failures, 30.0, 600.0) for failures in range(8)]
    assert delays == [30.0, 30.0, 60.0, 120.0, 240.0, 480.0, 600.0, 600.0]
    assert maintenance.retry_delay(10**6, 30.0, 600.0) == 600.0
