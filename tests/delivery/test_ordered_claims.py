"""Ordered webhooks in the outbox, on a real database each (SQLite file,
PostgreSQL): claims take a device's deliveries one at a time, in event order
(store/rows.py ORDERED_HEAD), and leave unordered rows as they were."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from edgesense.delivery.store import outbox_postgres, outbox_sqlite
from edgesense.delivery.store.online_indexes import ensure_online_indexes
from edgesense.delivery.store.outbox import Outbox, open_outbox
from edgesense.delivery.store.outbox_postgres import PostgresOutbox
from edgesense.delivery.store.outbox_sqlite import SqliteOutbox
from edgesense.delivery.store.rows import (
    FAILED,
    PARKED_AT,
    PENDING,
    SUCCEEDED,
    Claimed,
    NewDelivery,
)
from edgesense.delivery.store.tables import deliveries
from edgesense.storage.engine import create_engine, dispose_engine
from tests.delivery.test_outbox import LEASE, NOW, attempt_outcome, delivery, store


@pytest.fixture
async def outbox(database_url: str) -> AsyncIterator[Outbox]:
    outbox = await open_outbox(database_url)
    yield outbox
    await outbox.close()


HOUR = 3600.0  # a lease that outlives the retries below


def keyed(number: int, webhook_id: str, device: str, due: float = NOW) -> NewDelivery:
    """`dlv_{number}` to `webhook_id` with `device` as its order key (an ordered webhook's)."""
    return delivery(number, webhook_id, due=due)._replace(device_id=device, order_key=device)


def ids(claimed: list[Claimed]) -> set[str]:
    return {c.delivery_id for c in claimed}


async def end(outbox: Outbox, owner: str, delivery_id: str, status: str, when: float) -> None:
    """Record attempt 1 of a leased delivery: `status` (PENDING: a retry at when
    + 60); an end releases the device's next delivery, as the writer asks."""
    code = 200 if status == SUCCEEDED else 500
    released = [] if status == PENDING else [delivery_id]
    outcome = attempt_outcome(delivery_id, 1, when, 5, code, status)
    await outbox.record(owner, [outcome], when, released)


async def test_a_device_is_claimed_one_delivery_at_a_time_in_event_order(outbox: Outbox) -> None:
    await store(
        outbox,
        keyed(1, "wh_a", "A"),
        keyed(2, "wh_a", "A"),
        keyed(3, "wh_a", "B"),
        keyed(4, "wh_a", "A"),
        keyed(5, "wh_a", "B"),
        delivery(6, "wh_a"),  # unordered (no key): claimed as ever
        delivery(7, "wh_a"),
        keyed(8, "wh_b", "A"),  # the same device, another webhook: its own order
    )
    first = await outbox.claim("me", NOW, HOUR, 100)
    assert ids(first) == {"dlv_1", "dlv_3", "dlv_6", "dlv_7", "dlv_8"}
    # The heads are leased (pending): the rest of their devices wait, for
    # every kind of claim.
    assert await outbox.claim("me", NOW, HOUR, 100) == []
    assert await outbox.claim("me", NOW, HOUR, 100, exclude=["wh_x"]) == []
    assert await outbox.claim_for("me", NOW, HOUR, {"wh_a": 100, "wh_b": 100}) == []

    # A's head gets a retry (pending, due at NOW + 60): A waits until it has
    # ended; B goes on once its head succeeded.
    await end(outbox, "me", "dlv_1", PENDING, NOW)
    await end(outbox, "me", "dlv_3", SUCCEEDED, NOW)
    assert ids(await outbox.claim_for("me", NOW + 1, HOUR, {"wh_a": 100})) == {"dlv_5"}
    assert await outbox.claim("me", NOW + 1, HOUR, 100) == []
    # The retry comes due: the head again, alone.
    assert ids(await outbox.claim("me", NOW + 61, HOUR, 100)) == {"dlv_1"}
    await end(outbox, "me", "dlv_1", SUCCEEDED, NOW + 61)
    assert ids(await outbox.claim("me", NOW + 62, HOUR, 100, exclude=["wh_x"])) == {"dlv_2"}
    # A head that fails for good lets the next one go.
    await end(outbox, "me", "dlv_2", FAILED, NOW + 62)
    assert ids(await outbox.claim_for("me", NOW + 63, HOUR, {"wh_a": 100})) == {"dlv_4"}


async def test_an_expired_lease_hands_the_head_over_and_only_the_head(outbox: Outbox) -> None:
    await store(outbox, keyed(1, "wh_a", "A"), keyed(2, "wh_a", "A"))
    assert ids(await outbox.claim("me", NOW, LEASE, 10)) == {"dlv_1"}
    later = NOW + LEASE + 1  # me died: its lease expired
    assert ids(await outbox.claim("other", later, LEASE, 10)) == {"dlv_1"}
    assert await outbox.claim("other", later, LEASE, 10) == []
    await end(outbox, "other", "dlv_1", SUCCEEDED, later)
    assert ids(await outbox.claim("other", later, LEASE, 10)) == {"dlv_2"}


async def test_held_deliveries_keep_their_order_when_released(outbox: Outbox) -> None:
    await store(outbox, *(keyed(n, "wh_a", "A") for n in range(1, 4)), keyed(4, "wh_a", "B"))
    await outbox.hold(["wh_a"], "webhook disabled", NOW)
    assert await outbox.claim("me", NOW, LEASE, 10) == []
    await outbox.release_held(["wh_a"], NOW + 1)
    assert ids(await outbox.claim("me", NOW + 1, LEASE, 10)) == {"dlv_1", "dlv_4"}
    assert await outbox.claim("me", NOW + 1, LEASE, 10) == []


async def test_an_unkeyed_row_stored_before_the_webhook_became_ordered_is_not_held_back(
    outbox: Outbox,
) -> None:
    """Rows stored before (no key) are not ordered, and keyed rows do not wait for them."""
    await store(outbox, delivery(1, "wh_a"), keyed(2, "wh_a", "A"), keyed(3, "wh_a", "A"))
    assert ids(await outbox.claim("me", NOW, LEASE, 10)) == {"dlv_1", "dlv_2"}


async def test_a_redelivered_old_delivery_goes_before_the_devices_later_ones(
    outbox: Outbox,
) -> None:
    await store(outbox, *(keyed(n, "wh_a", "A") for n in range(1, 4)))
    await outbox.claim("me", NOW, LEASE, 10)
    await end(outbox, "me", "dlv_1", SUCCEEDED, NOW)
    assert ids(await outbox.claim("me", NOW, LEASE, 10)) == {"dlv_2"}
    await end(outbox, "me", "dlv_2", SUCCEEDED, NOW)
    # dlv_1 sent again: back to pending with its old place, before dlv_3.
    assert await outbox.requeue("p", "dlv_1", PENDING, None, NOW + 1)
    assert ids(await outbox.claim("me", NOW + 1, LEASE, 10)) == {"dlv_1"}
    await end(outbox, "me", "dlv_1", SUCCEEDED, NOW + 1)
    assert ids(await outbox.claim("me", NOW + 1, LEASE, 10)) == {"dlv_3"}


async def test_processes_claiming_at_once_never_lease_two_of_one_device(outbox: Outbox) -> None:
    """Four owners claim at once (on PostgreSQL, concurrent transactions with
    SKIP LOCKED), each ending what it leased: at every moment at most one
    delivery per device is leased, and each device's deliveries end in event order."""
    devices, per_device = 12, 5
    planned = [keyed(n, "wh_a", f"dev-{n % devices}") for n in range(1, devices * per_device + 1)]
    random.Random(7).shuffle(planned)  # the order they are stored in is their event order
    order = {d.delivery_id: position for position, d in enumerate(planned)}
    await store(outbox, *planned)
    device_of = {d.delivery_id: d.device_id for d in planned}
    leased: dict[str, str] = {}  # device -> delivery
    ended: dict[str, list[str]] = defaultdict(list)
    owners = ["a", "b", "c", "d"]

    async def claim(owner: str) -> list[Claimed]:
        if owner in ("a", "c"):
            return await outbox.claim(owner, NOW, LEASE, 7)
        return await outbox.claim_for(owner, NOW, LEASE, {"wh_a": 7})

    for _ in range(200):
        rounds = await asyncio.gather(*(claim(owner) for owner in owners))
        # Every owner's leases of this round first: two owners leasing two
        # deliveries of one device at once must show here.
        for claimed in rounds:
            for c in claimed:
                device = device_of[c.delivery_id]
                assert device not in leased, f"{device}: {leased[device]} and {c.delivery_id}"
                leased[device] = c.delivery_id
        for owner, claimed in zip(owners, rounds, strict=True):
            for c in claimed:
                ended[device_of[c.delivery_id]].append(c.delivery_id)
                del leased[device_of[c.delivery_id]]
            await asyncio.gather(
                *(end(outbox, owner, c.delivery_id, SUCCEEDED, NOW) for c in claimed)
            )
        if sum(map(len, ended.values())) == len(planned):
            break
    assert sum(map(len, ended.values())) == len(planned)
    for device, sent in ended.items():
        assert sent == sorted(sent, key=order.__getitem__), device


async def test_claims_read_the_order_index_and_unordered_claims_keep_their_plan(
    outbox: Outbox, database_url: str
) -> None:
    """The lookup of an earlier waiting delivery reads ix_deliveries_order,
    and the due rows are read through the same index as without ordering
    (ix_deliveries_due, ix_deliveries_webhook_due; on PostgreSQL their
    waiting-only replacements)."""
    plans = await claim_plans(outbox, database_url)
    suffix = "due" if database_url.startswith("sqlite") else "waiting"
    assert "ix_deliveries_order" in plans["any"], plans["any"]
    assert f"ix_deliveries_{suffix}" in plans["any"], plans["any"]
    assert "ix_deliveries_order" in plans["one webhook"], plans["one webhook"]
    assert f"ix_deliveries_webhook_{suffix}" in plans["one webhook"], plans["one webhook"]


async def claim_plans(outbox: Outbox, database_url: str) -> dict[str, str]:
    """The plans of a claim of due deliveries and of one webhook's."""
    if database_url.startswith("sqlite"):
        statements: dict[str, tuple[str, tuple[Any, ...]]] = {
            "any": (outbox_sqlite.CLAIM_ANY, ("me", NOW, PENDING, NOW, NOW, 10)),
            "one webhook": (
                outbox_sqlite.CLAIM_ONE_WEBHOOK,
                ("me", NOW, "wh_a", PENDING, NOW, NOW, 10),
            ),
        }
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                raw = await conn.get_raw_connection()
                plans = {}
                for name, (statement, parameters) in statements.items():
                    rows = await raw.driver_connection.execute_fetchall(  # type: ignore[union-attr]
                        f"EXPLAIN QUERY PLAN {statement}", parameters
                    )
                    plans[name] = "\n".join(str(row[-1]) for row in rows)
                return plans
        finally:
            await dispose_engine(engine)
    assert isinstance(outbox, PostgresOutbox)
    await ensure_online_indexes(outbox.engine)
    lease = ("me", NOW + LEASE, NOW, NOW)
    statements = {
        "any": (outbox_postgres.CLAIM_DUE, (*lease, [], 10)),
        "one webhook": (outbox_postgres.CLAIM_WEBHOOK, (*lease, "wh_a", 10)),
    }
    async with outbox.pool.acquire() as conn, conn.transaction():
        # An almost empty table: without this the planner reads it whole,
        # and the plan would not show which index is usable. LOCAL: the
        # pool's connections are not reset when released.
        await conn.execute("SET LOCAL enable_seqscan = off")
        plans = {}
        for name, (statement, parameters) in statements.items():
            sql = outbox_postgres.driver_sql(statement, "numeric_dollar")
            rows = await conn.fetch(f"EXPLAIN {sql}", *parameters)
            plans[name] = "\n".join(row[0] for row in rows)
        return plans


# Parking (rows.PARKED_AT): what waits behind an earlier delivery of its device
# is out of every due range, so no claim reads it; the end of the one before
# it makes it due.


async def next_attempts(outbox: Outbox) -> dict[str, float]:
    assert isinstance(outbox, SqliteOutbox | PostgresOutbox)
    async with outbox.engine.connect() as conn:
        rows = await conn.execute(select(deliveries.c.delivery_id, deliveries.c.next_attempt_at))
        return {delivery_id: float(at) for delivery_id, at in rows}


async def parked(outbox: Outbox) -> set[str]:
    return {d for d, at in (await next_attempts(outbox)).items() if at == PARKED_AT}


async def test_waiting_deliveries_are_parked_until_the_one_before_them_ends(
    outbox: Outbox,
) -> None:
    await store(
        outbox,
        keyed(1, "wh_a", "A"),
        keyed(2, "wh_a", "A"),
        keyed(3, "wh_a", "A"),
        keyed(4, "wh_a", "B"),
        delivery(5, "wh_a"),
    )
    assert await parked(outbox) == {"dlv_2", "dlv_3"}
    assert ids(await outbox.claim("me", NOW, HOUR, 10)) == {"dlv_1", "dlv_4", "dlv_5"}
    # A retry holds the device: nothing unparked.
    await end(outbox, "me", "dlv_1", PENDING, NOW + 1)
    assert await parked(outbox) == {"dlv_2", "dlv_3"}
    [again] = await outbox.claim("me", NOW + 61, HOUR, 10)
    assert again.delivery_id == "dlv_1"
    # Its end makes the next one due at once, and only that one.
    await end(outbox, "me", "dlv_1", SUCCEEDED, NOW + 62)
    assert await parked(outbox) == {"dlv_3"}
    assert (await next_attempts(outbox))["dlv_2"] == NOW + 62
    assert ids(await outbox.claim("me", NOW + 62, HOUR, 10)) == {"dlv_2"}
    await end(outbox, "me", "dlv_2", FAILED, NOW + 63)  # failed for good releases too
    assert ids(await outbox.claim("me", NOW + 63, HOUR, 10)) == {"dlv_3"}


async def test_release_and_recover_park_a_devices_backlog_again(outbox: Outbox) -> None:
    await store(outbox, keyed(1, "wh_a", "A"), keyed(2, "wh_a", "A"), keyed(3, "wh_a", "B"))
    await outbox.hold(["wh_a"], "webhook disabled", NOW)
    assert await outbox.release_held(["wh_a"], NOW + 1) == 3
    assert await parked(outbox) == {"dlv_2"}
    # dlv_1 and dlv_3 fail for good; recovering them makes A's first due,
    # and A's later one waits parked behind it.
    claimed = await outbox.claim("me", NOW + 1, HOUR, 10)
    assert ids(claimed) == {"dlv_1", "dlv_3"}
    for delivery_id in ("dlv_1", "dlv_3"):
        await outbox.record(
            "me", [attempt_outcome(delivery_id, 1, NOW + 2, 5, 500, FAILED)], NOW + 2
        )
    assert await parked(outbox) == {"dlv_2"}  # released without `released`: still parked
    recovered = await outbox.recover("p", "wh_a", NOW, NOW + 10, PENDING, None, NOW + 3)
    assert recovered.recovered == 2
    assert await parked(outbox) == {"dlv_2"}
    assert ids(await outbox.claim("me", NOW + 3, HOUR, 10)) == {"dlv_1", "dlv_3"}


async def test_the_safety_net_unparks_what_has_nothing_before_it(outbox: Outbox) -> None:
    """An end recorded without releasing its device (the webhook no longer
    ordered; on PostgreSQL, a store and an end that committed at the same
    moment): the maintenance loop's unpark_orphans makes the next one due."""
    await store(outbox, keyed(1, "wh_a", "A"), keyed(2, "wh_a", "A"), keyed(3, "wh_a", "A"))
    assert ids(await outbox.claim("me", NOW, HOUR, 10)) == {"dlv_1"}
    await outbox.record("me", [attempt_outcome("dlv_1", 1, NOW, 5, 200, SUCCEEDED)], NOW)
    assert await outbox.claim("me", NOW + 1, HOUR, 10) == []
    assert await outbox.unpark_orphans(NOW + 2) == 1  # dlv_2; dlv_3 still waits behind it
    assert await parked(outbox) == {"dlv_3"}
    assert ids(await outbox.claim("me", NOW + 2, HOUR, 10)) == {"dlv_2"}


async def test_parking_reads_only_the_order_index_on_sqlite(tmp_path: Path) -> None:
    """The statements that park and unpark read ix_deliveries_order (which
    holds waiting keyed rows only), never every pending row: the sweep runs
    every 2 s on SQLite's one writer, and reading the pending rows there cost
    fan-out 10 % before it was pinned to the index."""
    database_url = (
        f"sqlite+aiosqlite:///{tmp_path / 'plans.db'}"  # PostgreSQL's plans follow its statistics
    )
    statements: dict[str, tuple[str, tuple[Any, ...]]] = {
        "sweep": (outbox_sqlite._UNPARK_ORPHANS, (NOW, PARKED_AT)),
        "park again": (outbox_sqlite._PARK_WEBHOOKS, (PARKED_AT, '["wh_a"]', PARKED_AT, NOW)),
        "park new": (outbox_sqlite._PARK_NEW, (PARKED_AT, '["dlv_1"]')),
        "unpark next": (outbox_sqlite._UNPARK_NEXT, (NOW, PARKED_AT, '["dlv_1"]')),
    }
    outbox = await open_outbox(database_url)
    await outbox.close()
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            for name, (statement, parameters) in statements.items():
                rows = await raw.driver_connection.execute_fetchall(  # type: ignore[union-attr]
                    f"EXPLAIN QUERY PLAN {statement}", parameters
                )
                plan = "\n".join(str(row[-1]) for row in rows)
                assert "ix_deliveries_order" in plan, (name, plan)
                assert "ix_deliveries_due (status=?)" not in plan, (name, plan)
                assert "SCAN deliveries\n" not in plan + "\n", (name, plan)
    finally:
        await dispose_engine(engine)
