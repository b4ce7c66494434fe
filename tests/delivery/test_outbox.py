"""Both outbox implementations, on a real database each (SQLite file,
PostgreSQL), do the same thing for every method of the `Outbox` interface."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.databases import admin_dsn
from edgesense.common.errors import Unavailable
from edgesense.delivery.record.policy import RetryPolicy, after_attempt
from edgesense.delivery.send.attempt import AttemptResult
from edgesense.delivery.store import outbox_postgres, outbox_sqlite, reads
from edgesense.delivery.store.online_indexes import (
    ONLINE_INDEXES,
    REPLACED,
    ensure_online_indexes,
)
from edgesense.delivery.store.outbox import Outbox, open_outbox
from edgesense.delivery.store.outbox_postgres import PostgresOutbox
from edgesense.delivery.store.outbox_sqlite import SqliteOutbox
from edgesense.delivery.store.rows import (
    FAILED,
    HELD,
    PENDING,
    SUCCEEDED,
    Deleted,
    NewDelivery,
    Outcome,
    StoredEvent,
    nearest_rank,
    ranked_durations,
)
from edgesense.storage.engine import create_engine, dispose_engine
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.delivery.conftest import new_delivery
from tests.support.waiting import eventually

NOW = 1_000_000.0
LEASE = 30.0
# More ids in one list than a statement may have parameters: asyncpg takes at
# most 32,767, a default build of SQLite 32,766 (some builds allow more).
MANY = 40_000


@pytest.fixture
async def outbox(database_url: str) -> AsyncIterator[Outbox]:
    outbox = await open_outbox(database_url)
    yield outbox
    await outbox.close()


def event(number: int) -> StoredEvent:
    return StoredEvent(f"evt_{number}", "p", f"payload {number}".encode())


def delivery(
    number: int, webhook_id: str, due: float = NOW, of_event: int | None = None
) -> NewDelivery:
    """`dlv_{number}` of event `evt_{number}` (or `evt_{of_event}`) to `webhook_id`."""
    return new_delivery(number, webhook_id, due=due, created=NOW, of_event=of_event)


def outcome(delivery_id: str, status: str, attempt: int = 1) -> Outcome:
    return Outcome(delivery_id, attempt, NOW, 5, 200, None, "ok", status, None, attempt, NOW + 60)


async def store(outbox: Outbox, *planned: NewDelivery) -> None:
    events = [event(int(d.event_id.removeprefix("evt_"))) for d in planned]
    await outbox.accept(events, planned, NOW)


async def read(outbox: Outbox, delivery_id: str) -> tuple[Any, list[Any]]:
    """The delivery's row and its attempt log."""
    found = await outbox.one("p", delivery_id)
    assert found is not None
    return found


async def test_the_database_url_chooses_the_implementation(
    outbox: Outbox, database_url: str
) -> None:
    expected = SqliteOutbox if database_url.startswith("sqlite") else PostgresOutbox
    assert type(outbox) is expected


async def test_accept_stores_new_events_once(outbox: Outbox) -> None:
    new, created = await outbox.accept(
        [event(1), event(2)],
        [delivery(1, "wh_a"), delivery(2, "wh_a"), delivery(3, "wh_b", of_event=2)],
        NOW,
    )
    assert (new, created) == ({"evt_1", "evt_2"}, 3)
    # evt_2 again (with a new delivery planned for it) creates nothing.
    again = [delivery(4, "wh_c", of_event=2), delivery(5, "wh_c", of_event=3)]
    assert await outbox.accept([event(2), event(3)], again, NOW) == ({"evt_3"}, 1)
    assert (await outbox.counts())[PENDING] == 4


async def test_claims_lease_the_oldest_due_deliveries_with_their_events(outbox: Outbox) -> None:
    # Stored newest due first: a claim taking rows in the order they were
    # stored would lease dlv_1 and dlv_2.
    await store(
        outbox,
        delivery(1, "wh_a", due=NOW - 1),
        delivery(2, "wh_b", due=NOW - 2),
        delivery(3, "wh_a", due=NOW - 3),
        delivery(4, "wh_a", due=NOW + 60),  # not due yet
        delivery(5, "wh_c", due=NOW - 9),  # excluded below
    )
    claimed = await outbox.claim("me", NOW, LEASE, 2, exclude=["wh_c"])
    assert {c.delivery_id: c.event for c in claimed} == {
        "dlv_2": b"payload 2",
        "dlv_3": b"payload 3",
    }
    rest = await outbox.claim("other", NOW, LEASE, 10, exclude=["wh_c"])
    assert [c.delivery_id for c in rest] == ["dlv_1"]
    assert await outbox.claim("other", NOW, LEASE, 10, exclude=["wh_c"]) == []  # all leased
    assert [c.delivery_id for c in await outbox.claim_for("me", NOW, LEASE, {"wh_c": 5})] == [
        "dlv_5"
    ]
    # Once a lease has expired, its delivery is due again for anyone.
    later = NOW + LEASE + 1
    again = await outbox.claim("other", later, LEASE, 10)
    assert {c.delivery_id for c in again} == {"dlv_1", "dlv_2", "dlv_3", "dlv_5"}  # dlv_4 not due


async def test_claim_for_leases_each_webhooks_oldest_due(outbox: Outbox) -> None:
    await store(
        outbox,
        delivery(1, "wh_a", due=NOW - 1),
        delivery(2, "wh_a", due=NOW - 2),
        delivery(3, "wh_b", due=NOW - 1),
        delivery(4, "wh_b", due=NOW - 3),
        delivery(5, "wh_c", due=NOW - 9),  # not asked for
    )
    claimed = await outbox.claim_for("me", NOW, LEASE, {"wh_a": 1, "wh_b": 1})
    assert {c.delivery_id for c in claimed} == {"dlv_2", "dlv_4"}


async def test_claim_excludes_more_webhooks_than_a_statement_has_parameters(
    outbox: Outbox,
) -> None:
    await store(outbox, delivery(1, "wh_a"), delivery(2, "wh_b"), delivery(3, "wh_c"))
    excluded = [f"wh_x{n}" for n in range(MANY)] + ["wh_a", "wh_c"]
    claimed = await outbox.claim("me", NOW, LEASE, 10, exclude=excluded)
    assert [c.delivery_id for c in claimed] == ["dlv_2"]


async def test_an_outcome_is_written_once_and_only_by_the_lease_holder(outbox: Outbox) -> None:
    await store(outbox, delivery(1, "wh_a"), delivery(2, "wh_a"), delivery(3, "wh_a"))
    await outbox.claim("me", NOW, LEASE, 10)
    await outbox.record("other", [outcome("dlv_1", SUCCEEDED)], NOW)  # not its lease
    # Written twice (a batch sent again after a commit whose answer was lost):
    # the second finds the leases gone, and neither logs nor changes anything.
    # dlv_3 was not sent (no attempt): its new state only.
    batch = [outcome("dlv_2", SUCCEEDED), outcome("dlv_3", PENDING, attempt=0)]
    await outbox.record("me", batch, NOW)
    await outbox.record("me", batch, NOW)
    counts = await outbox.counts()
    assert (counts[PENDING], counts[SUCCEEDED]) == (2, 1)
    row, logs = await read(outbox, "dlv_1")
    assert (row.status, row.attempt_count, row.lease_owner) == (PENDING, 0, "me")
    assert logs == []
    row, logs = await read(outbox, "dlv_2")
    assert (row.status, row.attempt_count, row.lease_owner) == (SUCCEEDED, 1, None)
    assert [(log.attempt, log.status_code) for log in logs] == [(1, 200)]
    row, logs = await read(outbox, "dlv_3")
    assert (row.attempt_count, row.lease_owner, row.next_attempt_at) == (0, None, NOW + 60)
    assert logs == []


async def test_an_outcome_after_the_lease_was_taken_over_writes_nothing(outbox: Outbox) -> None:
    await store(outbox, delivery(1, "wh_a"))
    await outbox.claim("me", NOW, LEASE, 10)
    later = NOW + LEASE + 1  # me's lease has expired: another process claims the delivery
    assert [c.delivery_id for c in await outbox.claim("other", later, LEASE, 10)] == ["dlv_1"]
    await outbox.record("me", [outcome("dlv_1", FAILED)], later)
    row, logs = await read(outbox, "dlv_1")
    assert (row.status, row.attempt_count, row.lease_owner) == (PENDING, 0, "other")
    assert logs == []
    await outbox.record("other", [outcome("dlv_1", SUCCEEDED)], later)
    row, logs = await read(outbox, "dlv_1")
    assert (row.status, row.attempt_count, row.lease_owner) == (SUCCEEDED, 1, None)
    assert len(logs) == 1


async def test_an_answer_with_nul_is_recorded(outbox: Outbox) -> None:
    """A receiver's answer (and an error quoting it) with NUL bytes, which a
    PostgreSQL text column refuses: the retry policy's outcome replaces them,
    and the outbox records it on both databases."""
    await store(outbox, delivery(1, "wh_a"))
    [claimed] = await outbox.claim("me", NOW, LEASE, 10)
    answer = AttemptResult(
        datetime.fromtimestamp(NOW, UTC), 5, 500, "read \x00 failed", "bad\x00body"
    )
    await outbox.record("me", [after_attempt(RetryPolicy(), claimed, answer, NOW, True)], NOW)
    found = await outbox.one("p", "dlv_1")
    assert found is not None
    row, logs = found
    assert (row.status, row.status_reason) == (PENDING, "attempt 1 failed: read \ufffd failed")
    assert [(log.error, log.response_body) for log in logs] == [
        ("read \ufffd failed", "bad\ufffdbody")
    ]


async def test_defer_moves_unleased_due_deliveries_of_one_webhook(outbox: Outbox) -> None:
    await store(
        outbox,
        delivery(1, "wh_a"),
        delivery(2, "wh_a"),
        delivery(3, "wh_a", due=NOW + 500),  # already due after the pause
        delivery(4, "wh_b"),
    )
    await outbox.claim_for("me", NOW, LEASE, {"wh_a": 1})  # dlv_1 leased
    assert await outbox.defer("wh_a", NOW + 100, "paused", NOW) == 1
    due = {}
    for number in (1, 2, 3, 4):
        found = await outbox.one("p", f"dlv_{number}")
        assert found is not None
        due[number] = found[0].next_attempt_at
    assert due == {1: NOW, 2: NOW + 100, 3: NOW + 500, 4: NOW}


async def test_released_leases_are_claimable_again(outbox: Outbox) -> None:
    await store(outbox, delivery(1, "wh_a"), delivery(2, "wh_a"))
    await outbox.claim("me", NOW, LEASE, 10)
    await outbox.release_leases("other", ["dlv_1", "dlv_2"])  # not its leases
    assert await outbox.claim("other", NOW, LEASE, 10) == []
    await outbox.release_leases("me", ["dlv_1"])
    assert [c.delivery_id for c in await outbox.claim("other", NOW, LEASE, 10)] == ["dlv_1"]


async def test_leases_are_released_by_more_ids_than_a_statement_has_parameters(
    outbox: Outbox,
) -> None:
    await store(outbox, delivery(1, "wh_a"), delivery(2, "wh_a"), delivery(3, "wh_a"))
    await outbox.claim("me", NOW, LEASE, 10)
    await outbox.release_leases("me", [f"dlv_x{n}" for n in range(MANY)] + ["dlv_1", "dlv_3"])
    released = await outbox.claim("other", NOW, LEASE, 10)
    assert [c.delivery_id for c in released] == ["dlv_1", "dlv_3"]


async def test_webhook_states_hold_release_and_fail_their_deliveries(outbox: Outbox) -> None:
    ids = [f"wh_{n}" for n in range(MANY)]
    await store(outbox, *(delivery(n, ids[n % 3]) for n in range(6)), delivery(6, "wh_x"))
    assert await outbox.hold(ids, "webhook disabled", NOW) == 6
    assert await outbox.hold(ids, "webhook disabled", NOW) == 0
    assert (await outbox.counts())[HELD] == 6
    assert await outbox.release_held(["wh_0"], NOW + 5) == 2
    row = await outbox.one("p", "dlv_0")
    assert row is not None
    assert (row[0].status, row[0].next_attempt_at, row[0].cycle_attempts) == (PENDING, NOW + 5, 0)
    # Deleted webhooks: their pending and held deliveries alike fail.
    assert await outbox.fail_all(["wh_0", "wh_1"], "webhook deleted", NOW) == 4
    counts = await outbox.counts()
    assert (counts[PENDING], counts[HELD], counts[FAILED]) == (1, 2, 4)


async def test_held_deliveries_expire_by_age(outbox: Outbox) -> None:
    await store(outbox, delivery(1, "wh_a"), delivery(2, "wh_b"))
    await outbox.hold(["wh_a"], "webhook disabled", NOW)
    assert await outbox.expire_held(NOW, "expired", NOW) == 0  # not older than NOW
    assert await outbox.expire_held(NOW + 1, "expired", NOW) == 1
    row = await outbox.one("p", "dlv_1")
    assert row is not None
    assert (row[0].status, row[0].status_reason) == (FAILED, "expired")


async def test_held_deliveries_expire_counted_from_when_they_became_held(
    outbox: Outbox,
) -> None:
    """A delivery created long ago and held only now is not expired for its age."""
    await store(outbox, new_delivery(1, "wh_a", due=NOW - 9_000, created=NOW - 9_000))
    await outbox.hold(["wh_a"], "webhook disabled", NOW)
    assert await outbox.expire_held(NOW, "expired", NOW) == 0  # held at NOW, not before
    assert await outbox.expire_held(NOW + 1, "expired", NOW + 1) == 1


async def test_requeue_and_listing(outbox: Outbox) -> None:
    await store(outbox, delivery(1, "wh_a"), delivery(2, "wh_a"), delivery(3, "wh_b"))
    await outbox.claim("me", NOW, LEASE, 10)
    await outbox.record("me", [outcome("dlv_1", FAILED)], NOW)
    assert await outbox.requeue("p", "dlv_1", PENDING, None, NOW + 9)
    assert not await outbox.requeue("other-project", "dlv_1", PENDING, None, NOW)
    assert not await outbox.requeue("p", "dlv_none", PENDING, None, NOW)
    row = await outbox.one("p", "dlv_1")
    assert row is not None
    assert (row[0].status, row[0].cycle_attempts, row[0].next_attempt_at) == (PENDING, 0, NOW + 9)
    rows, logs = await outbox.page("p", "wh_a", "", 10, None)
    assert [r.delivery_id for r in rows] == ["dlv_2", "dlv_1"]
    assert list(logs) == ["dlv_1"]
    older, _ = await outbox.page("p", "wh_a", PENDING, 10, rows[0].seq)
    assert [r.delivery_id for r in older] == ["dlv_1"]
    assert await outbox.one("other-project", "dlv_1") is None


def attempt_outcome(
    delivery_id: str,
    number: int,
    started: float,
    duration_ms: int,
    status_code: int,
    status: str,
) -> Outcome:
    """Attempt `number` of a delivery, started at `started`, answered `status_code`."""
    return Outcome(
        delivery_id,
        number,
        started,
        duration_ms,
        status_code,
        None,
        None,
        status,
        None,
        number,
        started + 60,
    )


async def fail_at(outbox: Outbox, failures: dict[str, float]) -> None:
    """The deliveries named fail for good (one attempt, HTTP 500), each at its time."""
    await outbox.claim("me", NOW + 10_000, LEASE, 100)
    for delivery_id, when in failures.items():
        await outbox.record("me", [attempt_outcome(delivery_id, 1, when, 5, 500, FAILED)], when)


async def test_recover_makes_failed_deliveries_of_the_window_due_again(outbox: Outbox) -> None:
    await store(outbox, *(delivery(n, "wh_a") for n in range(1, 6)), delivery(6, "wh_b"))
    # dlv_3 failed first (before the window); dlv_5 is still pending.
    await fail_at(
        outbox, {"dlv_3": NOW + 10, "dlv_2": NOW + 20, "dlv_1": NOW + 30, "dlv_6": NOW + 20}
    )
    await outbox.record("me", [attempt_outcome("dlv_4", 1, NOW, 5, 200, SUCCEEDED)], NOW)
    await outbox.release_leases("me", ["dlv_5"])

    other = await outbox.recover("other-project", "wh_a", NOW, NOW + 40, PENDING, None, NOW)
    assert other == (0, None)

    recovered = await outbox.recover("p", "wh_a", NOW + 15, NOW + 40, PENDING, None, NOW + 50)
    assert recovered == (2, None)
    states = {}
    for number in range(1, 7):
        found = await outbox.one("p", f"dlv_{number}")
        assert found is not None
        row = found[0]
        states[number] = (row.status, row.cycle_attempts, row.next_attempt_at)
    assert states[1] == states[2] == (PENDING, 0, NOW + 50)  # fresh attempts, due now
    assert states[3][0] == FAILED  # failed before the window
    assert (states[4][0], states[5][0], states[6][0]) == (SUCCEEDED, PENDING, FAILED)
    # Claimed oldest first, with the one that was pending all along.
    claimed = await outbox.claim("me", NOW + 50, LEASE, 10)
    assert [c.delivery_id for c in claimed] == ["dlv_1", "dlv_2", "dlv_5"]
    # Pending again: a second call finds nothing to recover.
    again = await outbox.recover("p", "wh_a", NOW + 15, NOW + 40, PENDING, None, NOW + 51)
    assert again == (0, None)


async def test_recover_takes_the_first_failures_up_to_the_limit_in_chunks(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reads, "RECOVER_CHUNK", 2)
    await store(outbox, *(delivery(n, "wh_a") for n in range(1, 7)))
    # Failure times not in creation order: recover goes by failure time.
    times = {"dlv_4": 1.0, "dlv_2": 2.0, "dlv_6": 3.0, "dlv_1": 4.0, "dlv_5": 5.0, "dlv_3": 6.0}
    await fail_at(outbox, {d: NOW + t for d, t in times.items()})

    first = await outbox.recover(
        "p", "wh_a", NOW, NOW + 60, HELD, "webhook disabled", NOW + 70, limit=5
    )
    assert first == (5, NOW + 6.0)  # dlv_3 left: its failure time is where to go on
    counts = await outbox.counts()
    assert (counts[HELD], counts[FAILED]) == (5, 1)
    found = await outbox.one("p", "dlv_3")
    assert found is not None
    assert found[0].status == FAILED
    held = await outbox.one("p", "dlv_4")
    assert held is not None
    assert (held[0].status, held[0].status_reason) == (HELD, "webhook disabled")

    rest = await outbox.recover("p", "wh_a", NOW + 6.0, NOW + 60, PENDING, None, NOW + 71, limit=5)
    assert rest == (1, None)
    assert (await outbox.counts())[FAILED] == 0


async def stats_fixture(outbox: Outbox) -> None:
    """In the hour from NOW: dlv_1 failed once then succeeded, dlv_2 failed
    twice (for good), dlv_3 pending; dlv_4 (created before), dlv_5 (another
    webhook) and dlv_6 (created at the window's end) are outside it."""
    rows = [
        new_delivery(1, "wh_a", due=NOW + 10),
        new_delivery(2, "wh_a", due=NOW + 20),
        new_delivery(3, "wh_a", due=NOW + 30),
        new_delivery(4, "wh_a", due=NOW - 10),
        new_delivery(5, "wh_b", due=NOW + 10),
        new_delivery(6, "wh_a", due=NOW + 3600),
    ]
    await store(outbox, *rows)
    await outbox.claim("me", NOW + 10_000, LEASE, 100)
    first = [
        attempt_outcome("dlv_1", 1, NOW + 15, 10, 500, PENDING),
        attempt_outcome("dlv_2", 1, NOW + 20, 40, 503, PENDING),
        attempt_outcome("dlv_4", 1, NOW + 15, 1, 200, SUCCEEDED),
        attempt_outcome("dlv_5", 1, NOW + 15, 1, 200, SUCCEEDED),
        attempt_outcome("dlv_6", 1, NOW + 3600, 1, 200, SUCCEEDED),
    ]
    await outbox.record("me", first, NOW + 40)
    await outbox.release_leases("me", ["dlv_3"])
    await outbox.claim("me", NOW + 10_000, LEASE, 100)
    second = [
        attempt_outcome("dlv_1", 2, NOW + 75, 30, 200, SUCCEEDED),
        attempt_outcome("dlv_2", 2, NOW + 80, 20, 500, FAILED),
    ]
    await outbox.record("me", second, NOW + 90)
    await outbox.release_leases("me", ["dlv_3"])


async def test_stats_count_the_window_in_the_database(outbox: Outbox) -> None:
    await stats_fixture(outbox)
    stats = await outbox.stats("p", ["wh_a"], NOW, NOW + 3600, 60, (50, 95, 99), (50, 99))
    assert stats.counts == {PENDING: 1, SUCCEEDED: 1, FAILED: 1, HELD: 0}
    assert (stats.attempts, stats.attempts_succeeded) == (4, 1)
    # Bucket 0: both first attempts failed and were retried (10 and 40 ms);
    # bucket 1: dlv_1's second succeeded (30 ms), dlv_2's second was its
    # last (20 ms, failed for good).
    assert stats.buckets == [(0, 0, 2, 0, {50: 10, 99: 40}), (1, 1, 0, 1, {50: 20, 99: 30})]
    # Durations 10, 20, 30, 40: nearest ranks 2, 4 and 4.
    assert stats.durations == {50: 20, 95: 40, 99: 40}

    other = await outbox.stats("other-project", ["wh_a"], NOW, NOW + 3600, 60, (50,))
    assert other.counts == dict.fromkeys((PENDING, SUCCEEDED, FAILED, HELD), 0)
    assert (other.buckets, other.durations, other.attempts) == ([], {}, 0)
    # 5-minute buckets: all four attempts fall in the first.
    wide = await outbox.stats("p", ["wh_a"], NOW, NOW + 3600, 300, (50,), (50,))
    assert wide.buckets == [(0, 1, 2, 1, {50: 20})]


async def test_stats_of_several_webhooks_count_them_all(outbox: Outbox) -> None:
    await stats_fixture(outbox)
    both = await outbox.stats("p", ["wh_a", "wh_b"], NOW, NOW + 3600, 60, (50, 95, 99))
    # wh_a's figures and dlv_5 (wh_b: one attempt of 1 ms that succeeded, in bucket 0).
    assert both.counts == {PENDING: 1, SUCCEEDED: 2, FAILED: 1, HELD: 0}
    assert (both.attempts, both.attempts_succeeded) == (5, 2)
    assert both.buckets == [(0, 1, 2, 0, {}), (1, 1, 0, 1, {})]
    # Durations 1, 10, 20, 30, 40: nearest ranks 3, 5 and 5.
    assert both.durations == {50: 20, 95: 40, 99: 40}
    assert await outbox.stats("p", ["wh_b"], NOW, NOW + 3600, 60, (50,)) == (
        {PENDING: 0, SUCCEEDED: 1, FAILED: 0, HELD: 0},
        [(0, 1, 0, 0, {})],
        {50: 1},
        1,
        1,
    )
    nothing = await outbox.stats("p", [], NOW, NOW + 3600, 60, (50,))
    assert (nothing.attempts, nothing.buckets, nothing.durations) == (0, [], {})


async def test_held_deliveries_active_alerts_and_events_are_read_per_project(
    outbox: Outbox,
) -> None:
    await store(outbox, delivery(1, "wh_a"), delivery(2, "wh_a"), delivery(3, "wh_b"))
    await store(outbox, delivery(4, "wh_c"))
    await outbox.hold(["wh_a", "wh_c"], "webhook disabled", NOW)
    assert await outbox.held_count("p", ["wh_a", "wh_b"]) == 2
    assert await outbox.held_count("p", ["wh_b"]) == 0
    assert await outbox.held_count("p", []) == 0
    assert await outbox.held_count("other", ["wh_a"]) == 0
    assert await outbox.active_alert_count("p") == 0
    assert await outbox.event("p", "evt_1") == b"payload 1"
    assert await outbox.event("other", "evt_1") is None
    assert await outbox.event("p", "evt_9") is None


async def test_each_buckets_percentiles_are_the_nearest_ranks_of_its_attempts(
    outbox: Outbox,
) -> None:
    """Attempts in buckets 0, 1, 3 and 4 of 1-minute buckets (2 empty), with
    durations repeating (as whole milliseconds do): each bucket's p50 and p99
    and the window's are those of a sort the test does, by nearest rank."""
    chance = random.Random(16)
    placed = {0: 7, 1: 40, 3: 1, 4: 120}  # bucket -> attempts
    started: list[tuple[int, float, int]] = []  # bucket, start, duration
    for bucket, count in placed.items():
        for i in range(count):
            duration = chance.choice((3, 8, 8, 21, 55, 55, 400, 1200, chance.randint(1, 5000)))
            started.append((bucket, NOW + bucket * 60 + i * 59 / count, duration))
    await store(outbox, *(delivery(n, "wh_a") for n in range(1, len(started) + 1)))
    await outbox.claim("me", NOW + 10_000, LEASE, len(started))
    outcomes = [
        attempt_outcome(f"dlv_{n}", 1, at, ms, 200, SUCCEEDED)
        for n, (_, at, ms) in enumerate(started, 1)
    ]
    await outbox.record("me", outcomes, NOW + 400)

    stats = await outbox.stats("p", ["wh_a"], NOW, NOW + 3600, 60, (50, 95, 99), (50, 99))

    def ranks(values: list[int], percentiles: tuple[int, ...]) -> dict[int, int]:
        ordered = sorted(values)
        return {p: ordered[nearest_rank(p, len(ordered)) - 1] for p in percentiles}

    expected = [
        (b, n, 0, 0, ranks([ms for at, _, ms in started if at == b], (50, 99)))
        for b, n in placed.items()
    ]
    assert stats.buckets == expected  # bucket 2 and those after 4: absent
    assert stats.durations == ranks([ms for _, _, ms in started], (50, 95, 99))
    assert stats.attempts == len(started)


@pytest.mark.parametrize("seed", range(20))
def test_ranked_durations_are_the_nearest_ranks_of_the_sorted_values(seed: int) -> None:
    chance = random.Random(seed)
    values = [chance.choice((1, 5, 5, 17, 250, 3000)) for _ in range(chance.randint(1, 60))]
    histogram = sorted(Counter(values).items())
    percentiles = (50, 95, 99, 1, 100)
    got = ranked_durations(histogram, len(values), percentiles)
    ordered = sorted(values)
    assert got == {p: ordered[nearest_rank(p, len(values)) - 1] for p in percentiles}
    assert ranked_durations([], 0, percentiles) == {}


async def test_the_recover_and_stats_indexes_exist(outbox: Outbox, database_url: str) -> None:
    """Migration 0003 on SQLite, built concurrently on PostgreSQL (online_indexes);
    building them again finds them valid and does nothing. SQLite keeps the
    full due indexes that PostgreSQL's waiting ones replace."""
    names = set(ONLINE_INDEXES)
    if database_url.startswith("sqlite"):
        names = names - set(REPLACED.values()) | set(REPLACED)
        query = "SELECT name FROM sqlite_master WHERE type = 'index'"
    else:
        await ensure_online_indexes(outbox_postgres_engine(outbox))
        query = (
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indisvalid"
        )
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            found = {name for (name,) in await conn.execute(text(query))}
    finally:
        await dispose_engine(engine)
    assert names <= found


def outbox_postgres_engine(outbox: Outbox) -> AsyncEngine:
    assert isinstance(outbox, PostgresOutbox)
    return outbox.engine


# Retention (Outbox.delete_ended).

OLD = NOW - 10_000_000.0  # far older than any cutoff below


async def table_ids(database_url: str, query: str) -> set[str]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return {row[0] for row in await conn.execute(text(query))}
    finally:
        await dispose_engine(engine)


async def end(outbox: Outbox, when: float, outcomes: list[Outcome]) -> None:
    """Claim the outcomes' deliveries and record them at `when`."""
    await outbox.claim("me", when, LEASE, 100)
    await outbox.record("me", outcomes, when)


async def test_retention_deletes_only_what_ended_before_the_cutoff(
    outbox: Outbox, database_url: str
) -> None:
    await store(
        outbox,
        new_delivery(1, "wh_a", due=OLD),  # succeeds at NOW after a retry
        new_delivery(2, "wh_a", due=OLD),  # fails for good at NOW
        new_delivery(3, "wh_a", due=NOW + 10**8, created=OLD),  # pending, never due
        new_delivery(4, "wh_b", due=OLD),  # held
        new_delivery(5, "wh_a", due=OLD),  # succeeds at NOW + 100: after the cutoff
        new_delivery(6, "wh_c", due=NOW + 10**8, created=OLD, of_event=1),  # pending, of evt_1
    )
    await outbox.hold(["wh_b"], "webhook disabled", OLD)
    await outbox.accept([event(7)], [], NOW)  # matched no webhook
    await end(outbox, NOW - 60, [attempt_outcome("dlv_1", 1, NOW - 60, 5, 500, PENDING)])
    await end(
        outbox,
        NOW,
        [
            attempt_outcome("dlv_1", 2, NOW, 5, 200, SUCCEEDED),
            attempt_outcome("dlv_2", 1, NOW, 5, 500, FAILED),
        ],
    )
    await end(outbox, NOW + 100, [attempt_outcome("dlv_5", 1, NOW + 100, 5, 200, SUCCEEDED)])

    assert await outbox.delete_ended(NOW) == Deleted(0, 0, 0)  # ended at NOW: not before it
    # dlv_1 (two attempts) and dlv_2 go with evt_2 and evt_7; evt_1 stays for dlv_6.
    assert await outbox.delete_ended(NOW + 1) == Deleted(2, 3, 2)
    deliveries = "SELECT delivery_id FROM deliveries"
    assert await table_ids(database_url, deliveries) == {"dlv_3", "dlv_4", "dlv_5", "dlv_6"}
    events = "SELECT event_id FROM events"
    assert await table_ids(database_url, events) == {"evt_1", "evt_3", "evt_4", "evt_5"}
    assert await table_ids(database_url, "SELECT delivery_id FROM attempts") == {"dlv_5"}

    # Much later: dlv_5 and evt_5 go; pending and held rows of any age stay,
    # and so do the events they refer to.
    assert await outbox.delete_ended(NOW + 10**9) == Deleted(1, 1, 1)
    assert await outbox.delete_ended(NOW + 10**9) == Deleted(0, 0, 0)
    assert await table_ids(database_url, deliveries) == {"dlv_3", "dlv_4", "dlv_6"}
    assert await table_ids(database_url, events) == {"evt_1", "evt_3", "evt_4"}
    [claimed] = await outbox.claim("me", NOW + 10**8, LEASE, 10, exclude=["wh_a"])
    assert (claimed.delivery_id, claimed.event) == ("dlv_6", b"payload 1")
    assert (await outbox.counts())[HELD] == 1


async def test_retention_batches_are_bounded_and_take_the_first_to_end_first(
    outbox: Outbox, database_url: str
) -> None:
    await store(outbox, *(new_delivery(n, "wh_a", due=OLD) for n in range(5)))
    await outbox.accept([event(8), event(9)], [], OLD)  # matched no webhook
    for n in range(5):  # dlv_0 ends first
        await end(outbox, NOW + n, [attempt_outcome(f"dlv_{n}", 1, NOW + n, 5, 200, SUCCEEDED)])
    first = await outbox.delete_ended(NOW + 100, limit=2)
    assert first == Deleted(2, 2, 2)
    deliveries = "SELECT delivery_id FROM deliveries"
    assert await table_ids(database_url, deliveries) == {"dlv_2", "dlv_3", "dlv_4"}
    second = await outbox.delete_ended(NOW + 100, limit=2)
    assert second == Deleted(2, 2, 2)
    third = await outbox.delete_ended(NOW + 100, limit=2)
    assert third == Deleted(1, 1, 2)  # the last delivery; the events left: 7 - 2 - 2 = 3
    assert await outbox.delete_ended(NOW + 100, limit=2) == Deleted(0, 0, 1)
    assert await table_ids(database_url, "SELECT event_id FROM events") == set()


async def test_retention_reads_through_its_indexes(outbox: Outbox, database_url: str) -> None:
    """No scan of a whole table: on PostgreSQL the plans of a batch use the
    retention indexes (sequential scans turned off, so that the plan of an
    almost empty table shows which index is usable); on SQLite the
    statements name them (INDEXED BY), so they fail if one is missing."""
    if database_url.startswith("sqlite"):
        assert "INDEXED BY ix_deliveries_ended" in outbox_sqlite.SELECT_ENDED
        assert "INDEXED BY ix_events_created" in outbox_sqlite.DELETE_EVENTS
        assert "INDEXED BY ix_deliveries_event" in outbox_sqlite.DELETE_EVENTS
        return
    await ensure_online_indexes(outbox_postgres_engine(outbox))
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("SET LOCAL enable_seqscan = off"))
            plans = {}
            for name, statement in (
                ("deliveries", outbox_postgres.DELETE_ENDED),
                ("events", outbox_postgres.DELETE_EVENTS),
            ):
                rows = await conn.execute(
                    text(f"EXPLAIN {statement.text}"), {"before": NOW, "size": 10}
                )
                plans[name] = "\n".join(row[0] for row in rows)
            await conn.rollback()
    finally:
        await dispose_engine(engine)
    assert "ix_deliveries_ended" in plans["deliveries"], plans["deliveries"]
    assert "ix_events_created" in plans["events"], plans["events"]
    assert "ix_deliveries_event" in plans["events"], plans["events"]


# PostgreSQL's hot path (accept, claims, outcomes) runs on a plain asyncpg
# pool beside the engine (storage.engine.driver_pool): its failures must say
# Unavailable like the engine's, and a connection the server ended must not
# stay in the pool.


@pytest.fixture
async def postgres_outbox() -> AsyncIterator[PostgresOutbox]:
    url, admin = await create_postgres_database()
    try:
        outbox = await open_outbox(url)
        assert isinstance(outbox, PostgresOutbox)
        yield outbox
        await outbox.close()
    finally:
        await drop_postgres_database(url, admin)


@pytest.mark.postgres
async def test_postgres_a_connection_ended_mid_write_is_unavailable_and_not_reused(
    postgres_outbox: PostgresOutbox,
) -> None:
    outbox = postgres_outbox
    await store(outbox, delivery(1, "wh_a"))  # the pool has a connection, and the statement
    admin = await outbox.pool.acquire()  # a second connection of the pool: its own session
    try:
        # The write waits behind a lock, so it is in flight when its server
        # process is ended (as a PostgreSQL restart or a failover would).
        lock = admin.transaction()
        await lock.start()
        await admin.execute("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
        writing = asyncio.create_task(store(outbox, delivery(2, "wh_a")))

        async def waiting_pids() -> list[int]:
            # Activity is read once per transaction unless the snapshot is cleared.
            await admin.execute("SELECT pg_stat_clear_snapshot()")
            rows = await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            return [row[0] for row in rows]

        async def write_waits() -> bool:
            return bool(await waiting_pids())

        await eventually(write_waits, what="the write waiting for the lock")
        ended = await waiting_pids()
        for pid in ended:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(Unavailable, match="database unavailable while storing events"):
            await writing
        await lock.rollback()
    finally:
        await outbox.pool.release(admin)
    # Both connections the pool hands out now work, and neither is the ended one.
    held = [await outbox.pool.acquire() for _ in range(2)]
    try:
        pids = [await connection.fetchval("SELECT pg_backend_pid()") for connection in held]
    finally:
        for connection in held:
            await outbox.pool.release(connection)
    assert not set(pids) & set(ended), (pids, ended)
    await store(outbox, delivery(2, "wh_a"))
    await store(outbox, delivery(3, "wh_a"))
    counts = await outbox.counts()
    assert counts[PENDING] == 3, counts


@pytest.mark.postgres
@pytest.mark.timeout(60)
async def test_postgres_closing_does_not_wait_for_a_connection_in_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A connection never given back (a write stuck at shutdown) is ended after
    POOL_CLOSE_SECONDS instead of holding close() up."""
    monkeypatch.setattr(outbox_postgres, "POOL_CLOSE_SECONDS", 0.2)
    url, admin = await create_postgres_database()
    try:
        outbox = await open_outbox(url)
        assert isinstance(outbox, PostgresOutbox)
        stuck = await outbox.pool.acquire()
        pid = await stuck.fetchval("SELECT pg_backend_pid()")
        await outbox.close()
        watcher = await asyncpg.connect(admin_dsn(url))
        try:

            async def ended() -> bool:
                live = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
                )
                return bool(live == 0)

            await eventually(ended, what="the stuck connection's server process to end")
        finally:
            await watcher.close()
    finally:
        await drop_postgres_database(url, admin)


async def test_waiting_counts_are_the_pending_and_held_ones(
    outbox: Outbox, database_url: str
) -> None:
    """The maintenance loop's counts: pending and held, the same numbers as
    counting every status; on PostgreSQL read from a waiting index, which
    holds only those, so that the deliveries ended (all of the history kept)
    are not read every 2 s."""
    await store(outbox, *(new_delivery(n, "wh_a", due=NOW) for n in range(1, 6)))
    await store(outbox, new_delivery(6, "wh_b", due=NOW), new_delivery(7, "wh_b", due=NOW))
    await outbox.hold(["wh_b"], "webhook disabled", NOW)
    await end(outbox, NOW, [attempt_outcome("dlv_1", 1, NOW, 5, 200, SUCCEEDED)])
    await end(outbox, NOW, [attempt_outcome("dlv_2", 1, NOW, 5, 500, FAILED)])
    everything = await outbox.counts()
    assert everything == {PENDING: 3, SUCCEEDED: 1, FAILED: 1, HELD: 2}
    assert await outbox.waiting_counts() == {PENDING: 3, HELD: 2}
    if isinstance(outbox, PostgresOutbox):
        async with outbox.engine.begin() as conn:
            await conn.execute(text("SET LOCAL enable_seqscan = off"))  # a tiny table otherwise
            sql = reads.WAITING_COUNTS.compile(
                dialect=conn.dialect, compile_kwargs={"literal_binds": True}
            )
            plan = "\n".join(row[0] for row in await conn.execute(text(f"EXPLAIN {sql}")))
        # One of the waiting-only indexes (both hold exactly these rows).
        assert "_waiting" in plan, plan
        assert "Seq Scan" not in plan, plan
