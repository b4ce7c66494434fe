"""Both outbox implementations, on a real database each (SQLite file,
PostgreSQL), do the same thing for every method of the `Outbox` interface."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from edgesense.delivery.record.policy import RetryPolicy, after_attempt
from edgesense.delivery.send.attempt import AttemptResult
from edgesense.delivery.store.outbox import Outbox, open_outbox
from edgesense.delivery.store.outbox_postgres import PostgresOutbox
from edgesense.delivery.store.outbox_sqlite import SqliteOutbox
from edgesense.delivery.store.rows import (
    FAILED,
    HELD,
    PENDING,
    SUCCEEDED,
    NewDelivery,
    Outcome,
    StoredEvent,
)
from tests.delivery.conftest import new_delivery

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
