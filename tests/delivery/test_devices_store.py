"""The devices table on a real database each (SQLite file, PostgreSQL): two
delivery processes' flushes, in any order or at once, keep the newest of each
part; listings page in device order with filters and totals; retention; the
tracker folds only what a commit stored and writes it on its flush."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from edgesense.delivery import metrics
from edgesense.delivery.devices.tracker import UNWRITTEN_STATE_BYTES, DeviceTracker
from edgesense.delivery.devices.view import (
    MAX_READINGS_BYTES,
    OFFLINE,
    ONLINE,
    UNKNOWN,
    DeviceState,
    merge,
    observe,
)
from edgesense.delivery.record.maintenance import apply_retention
from edgesense.delivery.store import tables
from edgesense.delivery.store.devices import COLUMNS, POSTGRES_CHUNK, SQLITE_CHUNK, to_row
from edgesense.delivery.store.outbox import Outbox, open_outbox
from edgesense.delivery.store.rows import StoredEvent
from edgesense.v1 import events_pb2
from tests.conftest import ENGINES, LANGUAGE_COLLATION, engine_url
from tests.delivery.test_devices_view import OFFLINE_STATE, ONLINE_STATE, event, readings_of
from tests.support.waiting import eventually


@pytest.fixture(params=ENGINES)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Both engines; PostgreSQL's database in a language's collation, so that
    SQL which orders ids must say COLLATE "C" to agree with Python's order."""
    async with engine_url(request.param, tmp_path, LANGUAGE_COLLATION) as url:
        yield url


@pytest.fixture
async def outboxes(database_url: str) -> AsyncIterator[tuple[Outbox, Outbox]]:
    """Two outboxes on one database, as two delivery processes have."""
    first = await open_outbox(database_url)
    second = await open_outbox(database_url)
    yield first, second
    await second.close()
    await first.close()


def note(tracker: DeviceTracker, *noted: events_pb2.Event) -> None:
    """What the acceptor does after a commit that stored `noted` (all new)."""
    stored = [StoredEvent(e.event_id, e.project_id, e.SerializeToString()) for e in noted]
    tracker.fold_stored(noted, stored, {e.event_id for e in noted})


def state(*events: events_pb2.Event) -> DeviceState:
    return observe(events[0].project_id, events[0].device_id, [(e, e.ByteSize()) for e in events])


async def test_flushes_in_either_order_keep_the_newest_of_each_part(
    outboxes: tuple[Outbox, Outbox],
) -> None:
    one, two = outboxes
    early = state(
        event(1, 10.0, status=ONLINE_STATE, received=100.0),
        event(2, 40.0, readings={"t": 40}, gateway="gw-a", received=101.0),
    )
    late = state(
        event(3, 30.0, status=OFFLINE_STATE, gateway="gw-b", received=99.0),
        event(4, 20.0, readings={"t": 20}, gateway="gw-b", received=150.0),
    )
    await one.devices.write([late])
    await two.devices.write([early])
    found = await one.devices.one("p", "d1")
    assert found is not None
    assert found.gateway_id == "gw-a"
    assert readings_of(found) == {"t": 40.0}
    assert (found.status, found.status_at, found.status_changed_at) == (OFFLINE, 30.0, 30.0)
    assert (found.first_seen_at, found.last_seen_at) == (99.0, 150.0)
    assert [r.event_id for r in found.recent] == ["evt_0002", "evt_0003", "evt_0004", "evt_0001"]
    # The other order, on a fresh device: the same row.
    await one.devices.write([_renamed(early, "d2")])
    await two.devices.write([_renamed(late, "d2")])
    other = await two.devices.one("p", "d2")
    assert other is not None
    assert _renamed(other, "d1") == found


def _renamed(found: DeviceState, device_id: str) -> DeviceState:
    values = {name: getattr(found, name) for name in DeviceState.__slots__}
    values["device_id"] = device_id
    return DeviceState(**values)


# Event ids whose order by code point differs from a language's collation
# (case, punctuation, accents, prefixes of each other).
IDS = ["evt_a", "evt_B", "evt-a", "evt_\u00e9", "evt_ab", "evt_a0", "e", "evt_Z9", "\u00ff", "evt_"]


# The kinds of event the merge tests draw from.
KINDS: list[dict[str, Any]] = [
    {"status": ONLINE_STATE},
    {"status": OFFLINE_STATE},
    {"readings": {"t": 1}},
    {"readings": {"t": 2, "h": 0.25}},
    {"readings": {}},
    {"readings": {"big": "x" * (MAX_READINGS_BYTES + 1)}},
]


def random_state(rng: random.Random, pool: list[events_pb2.Event]) -> DeviceState:
    return state(*rng.sample(pool, rng.randint(1, len(pool))))


async def test_the_database_merges_as_view_merge_does(outboxes: tuple[Outbox, Outbox]) -> None:
    """The upsert's ON CONFLICT clause is view.merge in SQL: over 200 random
    devices, each written three times (ties of time, ids and status at one
    instant, shared events, parts missing on either side, readings left out
    or empty; the third merged into a row the database merged), the stored
    row is what merge answers."""
    rng = random.Random(16)
    instants = [0.0, 0.5, 10.0, 10.0, 20.000001, 1_700_000_000.123456]
    writes: list[list[DeviceState]] = [[], [], []]
    for case in range(200):
        device = f"dev-{case:03d}"
        pool = []
        ids = rng.sample(IDS + [f"evt_{n:04d}" for n in range(20)], rng.randint(1, 30))
        for n, event_id in enumerate(ids):
            made = event(
                n,
                rng.choice(instants),
                device=device,
                gateway=rng.choice(["gw-a", "gw-b"]),
                received=rng.choice(instants),
                **rng.choice(KINDS),
            )
            made.event_id = event_id
            pool.append(made)
        for states in writes:
            states.append(random_state(rng, pool))
    one, two = outboxes
    await one.devices.write(writes[0])
    await two.devices.write(writes[1])
    await one.devices.write(writes[2])
    found = {d.device_id: d for d in await two.devices.page("p", "", "", None, 500)}
    assert len(found) == 200
    for first, second, third in zip(*writes, strict=True):
        assert found[first.device_id] == merge(merge(first, second), third), first.device_id


async def test_flushes_of_newer_events_append_as_view_merge_does(
    outboxes: tuple[Outbox, Outbox],
) -> None:
    """The upsert's short way for recent events (a flush whose events are all
    newer than the stored ones: the new list, then the stored one, cut to
    20) answers what merge answers, and so does the full merge it falls back
    to: 150 devices, each with a timeline of events (ties of time, ids in
    any order at one instant) written as four consecutive flushes, some
    sharing the event at their border, some in another order. Both ways are
    due many times (the next test shows the database takes the one due)."""
    rng = random.Random(14)
    short = full = 0
    writes: list[list[DeviceState]] = [[], [], [], []]
    for case in range(150):
        device = f"dev-{case:03d}"
        timeline = []
        # Whole seconds, or microseconds of an instant of today.
        start, step = rng.choice([(0.0, 1.0), (1_700_000_000.5, 1e-6)])
        for n in range(rng.randint(8, 70)):
            at = start + step * rng.randint(0, 40)
            made = event(n, at, device=device, **rng.choice(KINDS))
            made.event_id = f"{rng.choice(IDS)}{n:03d}"
            timeline.append(made)
        timeline.sort(key=lambda e: (e.timestamp.ToMicroseconds(), e.event_id))
        cuts = sorted(rng.sample(range(1, len(timeline)), 3))
        # A part may start with the event the one before ended with (held by both).
        starts = [0, *(cut - (rng.random() < 0.2) for cut in cuts)]
        parts = [timeline[a:b] for a, b in zip(starts, [*cuts, len(timeline)], strict=True)]
        if rng.random() < 0.2:
            rng.shuffle(parts)
        states = [state(*part) for part in parts]
        stored = states[0]
        for later in states[1:]:
            oldest = later.recent[-1]
            if (oldest.at, oldest.event_id) > (stored.last_event_at, stored.last_event_id):
                short += 1
            else:
                full += 1
            stored = merge(stored, later)
        for written, flushed in zip(writes, states, strict=True):
            written.append(flushed)
    one, two = outboxes
    for n, states in enumerate(writes):
        await (one, two)[n % 2].devices.write(states)
    found = {d.device_id: d for d in await one.devices.page("p", "", "", None, 500)}
    assert len(found) == 150
    for first, *rest in zip(*writes, strict=True):
        expected = first
        for later in rest:
            expected = merge(expected, later)
        assert found[first.device_id] == expected, first.device_id
    assert short > 300
    assert full > 30


async def test_the_upsert_takes_the_short_way_only_for_newer_events(
    outboxes: tuple[Outbox, Outbox],
) -> None:
    """Which way the upsert took shows in a stored list put out of order
    behind the store's back: the short way keeps the stored entries as
    they are, the full merge sorts them. Newer events take the short way;
    older ones, and one at the same instant whose id is lower by code point
    though higher in the database's language collation, the full merge."""
    one, _ = outboxes
    stored = state(event(1, 1.0), event(2, 2.0), event(3, 3.0))
    await one.devices.write([stored])
    first, second, third = (list(r) for r in stored.recent)  # evt_0003, evt_0002, evt_0001
    async with one.devices.engine.begin() as conn:
        await conn.execute(
            text("UPDATE devices SET recent = :recent"),
            {"recent": json.dumps([first, third, second])},
        )

    async def recent_ids() -> list[str]:
        found = await one.devices.one("p", "d1")
        assert found is not None
        return [r.event_id for r in found.recent]

    await one.devices.write([state(event(4, 4.0))])
    assert await recent_ids() == ["evt_0004", "evt_0003", "evt_0001", "evt_0002"]
    await one.devices.write([state(event(5, 0.5))])
    assert await recent_ids() == ["evt_0004", "evt_0003", "evt_0002", "evt_0001", "evt_0005"]
    # At one instant: "evt_B" < "evt_a" by code point (Python's order, the
    # view's), so it is not newer than evt_a and the full merge places it.
    late_a, late_b = event(6, 9.0), event(7, 9.0)
    late_a.event_id, late_b.event_id = "evt_a", "evt_B"
    await one.devices.write([state(late_a)])
    await one.devices.write([state(late_b)])
    assert (await recent_ids())[:3] == ["evt_a", "evt_B", "evt_0004"]


async def test_flushes_at_once_lose_nothing(outboxes: tuple[Outbox, Outbox]) -> None:
    """Two processes flush the same 50 devices at the same moment, 10 rounds:
    every device ends with the newest event of either."""
    one, two = outboxes

    def batch(first: int, devices: range) -> list[DeviceState]:
        return [state(event(first + d, float(first + d), device=f"dev-{d:02d}")) for d in devices]

    for round_ in range(10):
        base = 1000 * (round_ + 1)
        await asyncio.gather(
            one.devices.write(batch(base, range(50))),
            two.devices.write(batch(base + 100, range(50))),
        )
    rows = await one.devices.page("p", "", "", None, 100)
    assert len(rows) == 50
    for row in rows:
        number = int(row.device_id.removeprefix("dev-"))
        assert row.last_event_at == float(10_100 + number)
        assert len(row.recent) == 20


async def test_listing_pages_in_device_order_with_filters_and_totals(
    outboxes: tuple[Outbox, Outbox],
) -> None:
    store = outboxes[0].devices
    states = [
        state(event(1, 1.0, device="a-1", gateway="gw-x", status=ONLINE_STATE)),
        state(event(2, 2.0, device="a-2", gateway="gw-y", status=OFFLINE_STATE)),
        state(event(3, 3.0, device="a-3", gateway="gw-x")),
        state(event(4, 4.0, device="a-4", gateway="gw-x", status=ONLINE_STATE)),
    ]
    other = events_pb2.Event()
    other.CopyFrom(event(5, 5.0, device="a-0", status=ONLINE_STATE))
    other.project_id = "q"
    await store.write([*states, state(other)])
    page = await store.page("p", "", "", None, 3)
    assert [d.device_id for d in page] == ["a-1", "a-2", "a-3"]
    rest = await store.page("p", "", "", "a-3", 3)
    assert [d.device_id for d in rest] == ["a-4"]
    assert [d.device_id for d in await store.page("p", ONLINE, "", None, 10)] == ["a-1", "a-4"]
    assert [d.device_id for d in await store.page("p", UNKNOWN, "", None, 10)] == ["a-3"]
    assert [d.device_id for d in await store.page("p", "", "gw-x", "a-1", 10)] == ["a-3", "a-4"]
    assert [d.device_id for d in await store.page("p", ONLINE, "gw-y", None, 10)] == []
    assert await store.totals("p") == {ONLINE: 2, OFFLINE: 1, UNKNOWN: 1}
    assert await store.totals("q") == {ONLINE: 1, OFFLINE: 0, UNKNOWN: 0}
    assert await store.one("q", "a-1") is None


async def test_retention_deletes_devices_not_seen_since_its_cutoff(
    outboxes: tuple[Outbox, Outbox],
) -> None:
    outbox = outboxes[0]
    await outbox.devices.write(
        [
            state(event(1, 1.0, device="old", received=100.0)),
            state(event(2, 2.0, device="new", received=300.0)),
        ]
    )
    before = metrics.RETENTION_DELETED.labels("devices")._value.get()
    await apply_retention(outbox, 200.0)
    assert await outbox.devices.one("p", "old") is None
    assert await outbox.devices.one("p", "new") is not None
    assert metrics.RETENTION_DELETED.labels("devices")._value.get() == before + 1


async def test_the_tracker_writes_what_a_commit_stored_once(
    outboxes: tuple[Outbox, Outbox],
) -> None:
    outbox = outboxes[0]
    tracker = DeviceTracker(outbox.devices)
    events = [event(1, 10.0, status=ONLINE_STATE), event(2, 11.0, readings={"t": 2})]
    test_send = event(3, 12.0)
    test_send.test = True
    events.append(test_send)
    stored = [StoredEvent(e.event_id, "p", e.SerializeToString()) for e in events]
    new_ids, _ = await outbox.accept(stored, [], 20.0)
    tracker.fold_stored(events, stored, new_ids)
    assert await tracker.flush() == 1
    found = await outbox.devices.one("p", "d1")
    assert found is not None
    assert found.status == ONLINE
    assert [r.event_id for r in found.recent] == ["evt_0002", "evt_0001"]  # no test send
    # Stored again: nothing new is folded, the row stays.
    again, _ = await outbox.accept(stored, [], 21.0)
    assert again == set()
    tracker.fold_stored(events, stored, again)
    assert await tracker.flush() == 0
    assert await outbox.devices.events("p", ["evt_0001", "evt_0002", "evt_9999"]) == {
        "evt_0001": stored[0].payload,
        "evt_0002": stored[1].payload,
    }
    assert await outbox.devices.events("q", ["evt_0001"]) == {}


async def test_a_flush_writes_in_transactions_of_the_stores_chunk(
    outboxes: tuple[Outbox, Outbox], database_url: str
) -> None:
    """On SQLite a flush shares the writer thread with the hot path: it takes
    it for a few devices at a time (an accept waits behind one turn at most),
    and every device is written all the same."""
    store = outboxes[0].devices
    assert store.chunk == (SQLITE_CHUNK if database_url.startswith("sqlite") else POSTGRES_CHUNK)
    store.chunk = 20  # the same on PostgreSQL here, to see the chunks
    written: list[int] = []
    write = store.write

    async def counted(states: Sequence[DeviceState]) -> None:
        written.append(len(states))
        await write(states)

    store.write = counted  # type: ignore[method-assign]
    tracker = DeviceTracker(store, flush_seconds=3600)
    note(tracker, *(event(n, 10.0 + n, device=f"d{n:02d}") for n in range(45)))
    assert await tracker.flush() == 45
    assert written == [20, 20, 5]
    found = await store.page("p", "", "", None, 100)
    assert [d.device_id for d in found] == [f"d{n:02d}" for n in range(45)]


async def test_a_flush_is_paced_in_chunks_and_a_stop_hurries_it(
    outboxes: tuple[Outbox, Outbox],
) -> None:
    """The flusher spreads a flush's chunks over part of its interval (the
    hot path's work between them); a graceful stop drops the pauses, so
    nothing noted waits for them."""
    store = outboxes[0].devices
    store.chunk = 5
    tracker = DeviceTracker(store, flush_seconds=3600)
    note(tracker, *(event(n, 10.0 + n, device=f"d{n:02d}") for n in range(12)))
    running = asyncio.create_task(tracker.run())
    await tracker.running.wait()
    flushing = asyncio.create_task(tracker.flush(spread=3600))

    async def stored() -> int:
        return len(await store.page("p", "", "", None, 100))

    async def first_chunk() -> bool:
        return await stored() == 5

    await eventually(first_chunk, 10, "the first chunk, then a pause")
    assert not flushing.done()  # 1,200 s to the next chunk
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 10)  # not the pauses' 2,400 s
    assert flushing.done()
    assert await flushing == 12
    assert await stored() == 12


async def test_a_backlog_past_soft_bytes_hurries_a_paced_flush(
    outboxes: tuple[Outbox, Outbox],
) -> None:
    """Events past `soft_bytes` while a paced flush waits between chunks:
    it writes the rest at once (its events are held in memory until then)."""
    store = outboxes[0].devices
    store.chunk = 5
    tracker = DeviceTracker(store, flush_seconds=3600, soft_bytes=3000)
    note(tracker, *(event(n, 10.0 + n, device=f"d{n:02d}") for n in range(12)))
    flushing = asyncio.create_task(tracker.flush(spread=3600))

    async def first_chunk() -> bool:
        return len(await store.page("p", "", "", None, 100)) == 5

    await eventually(first_chunk, 10, "the first chunk, then a pause")
    note(tracker, *(event(100 + n, 50.0, device="busy") for n in range(20)))  # past 3,000 bytes
    assert await asyncio.wait_for(flushing, 10) == 12


async def test_the_tracker_is_bounded_and_wakes_early(outboxes: tuple[Outbox, Outbox]) -> None:
    tracker = DeviceTracker(
        outboxes[0].devices, flush_seconds=3600, soft_bytes=2000, hard_bytes=4000
    )
    dropped = metrics.DEVICES_VIEW_DROPPED._value.get()
    running = asyncio.create_task(tracker.run())
    try:
        for number in range(40):
            note(tracker, event(number, float(number), device=f"d{number}"))
        assert tracker.folded_bytes <= 4000 + 300
        assert metrics.DEVICES_VIEW_DROPPED._value.get() > dropped

        async def flushed() -> bool:
            return len(await outboxes[0].devices.page("p", "", "", None, 100)) > 0

        await eventually(flushed, 10, "a flush woken past soft_bytes, long before its hour")
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running


async def test_past_the_bound_only_device_events_count_as_dropped(
    outboxes: tuple[Outbox, Outbox],
) -> None:
    tracker = DeviceTracker(outboxes[0].devices, flush_seconds=3600, hard_bytes=1)
    note(tracker, event(1, 1.0))  # now past hard_bytes
    dropped = metrics.DEVICES_VIEW_DROPPED._value.get()
    test_send = event(2, 2.0)
    test_send.test = True
    disabled = events_pb2.Event(event_id="evt_0003", project_id="p")
    disabled.webhook_disabled.webhook_id = "wh_1"
    note(tracker, event(4, 4.0), test_send, disabled, event(5, 5.0, status=ONLINE_STATE))
    assert metrics.DEVICES_VIEW_DROPPED._value.get() - dropped == 2


async def test_states_kept_after_a_failed_write_are_bounded_in_bytes(
    outboxes: tuple[Outbox, Outbox],
) -> None:
    outbox = outboxes[0]
    tracker = DeviceTracker(outbox.devices, hard_bytes=2 * UNWRITTEN_STATE_BYTES + 100)
    async with outbox.devices.engine.begin() as conn:
        await conn.execute(text("DROP TABLE devices"))
    note(tracker, *(event(n, 1.0, device=f"d{n}", readings={"t": n}) for n in range(5)))
    dropped = metrics.DEVICES_VIEW_DROPPED._value.get()
    assert await tracker.flush() == 0  # the database refused it: two of five kept
    assert metrics.DEVICES_VIEW_DROPPED._value.get() - dropped == 3
    async with outbox.devices.engine.begin() as conn:
        await conn.run_sync(tables.devices.create)
    assert await tracker.flush() == 2


def test_a_row_has_the_table_s_columns_in_order() -> None:
    """PostgreSQL's upsert takes a row's values positionally."""
    assert tuple(to_row(state(event(1, 1.0)))) == COLUMNS


async def test_a_graceful_stop_flushes_what_was_noted(outboxes: tuple[Outbox, Outbox]) -> None:
    tracker = DeviceTracker(outboxes[0].devices, flush_seconds=3600)
    running = asyncio.create_task(tracker.run())
    await tracker.running.wait()
    note(tracker, event(1, 1.0, device="last-words"))
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert await outboxes[0].devices.one("p", "last-words") is not None


async def test_a_graceful_stop_during_a_flush_loses_nothing(
    outboxes: tuple[Outbox, Outbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop lands while a flush is writing: that write completes and
    what was noted meanwhile is written by the last flush."""
    store = outboxes[0].devices
    tracker = DeviceTracker(store, flush_seconds=3600, soft_bytes=1)
    entered, release = asyncio.Event(), asyncio.Event()
    write = store.write

    async def held_write(states: Sequence[DeviceState]) -> None:
        entered.set()
        await release.wait()
        await write(states)

    monkeypatch.setattr(store, "write", held_write)
    running = asyncio.create_task(tracker.run())
    await tracker.running.wait()
    note(tracker, event(1, 1.0, device="in-flight"))  # past soft_bytes: a flush at once
    await asyncio.wait_for(entered.wait(), 10)
    note(tracker, event(2, 2.0, device="meanwhile"))
    running.cancel()  # cancels what the run awaits now, before the write is released
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert await store.one("p", "in-flight") is not None
    assert await store.one("p", "meanwhile") is not None


async def test_a_failed_write_is_kept_for_the_next_flush(outboxes: tuple[Outbox, Outbox]) -> None:
    outbox = outboxes[0]
    tracker = DeviceTracker(outbox.devices)
    engine = outbox.devices.engine
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE devices"))
    note(tracker, event(1, 1.0, device="kept", status=ONLINE_STATE))
    assert await tracker.flush() == 0  # the database refused it
    note(tracker, event(2, 2.0, device="kept"))
    async with engine.begin() as conn:
        await conn.run_sync(tables.devices.create)
    assert await tracker.flush() == 1
    found = await outbox.devices.one("p", "kept")
    assert found is not None
    assert found.status == ONLINE
    assert [r.event_id for r in found.recent] == ["evt_0002", "evt_0001"]
