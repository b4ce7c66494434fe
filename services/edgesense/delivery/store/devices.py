"""The devices table: the devices view's reads and writes, on both databases.

A write (`DeviceStore.write`, the flusher's, every 2 seconds) reads the
stored rows of the devices it has news of, merges each with its news
(devices/view.py `merge`: every part keeps the newest of the two) and upserts
the result, in one transaction. Writers never interleave on a device:

- on SQLite the rows are read and merged in the event loop (5 devices
  between turns), and the outbox's writer thread, which the hot path
  shares, only checks they are still the rows merged from (else merges
  again there) and upserts;
- on PostgreSQL (on the outbox's asyncpg pool), where several delivery
  processes flush, each write first
  takes a transaction-level advisory lock (DEVICES_LOCK): flushes of all
  processes run one after the other, a few a second in all, so a read-merge-
  upsert never overwrites another process's newer news with older.

It is never part of the accept transaction: the hot path's statements are
unchanged. Retention deletes devices not seen since its cutoff.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from edgesense.delivery.devices.view import UNKNOWN, DeviceState, Recent, merge
from edgesense.delivery.store.tables import devices, events
from edgesense.storage.engine import reading, transaction, translate
from edgesense.storage.sqlite_writer import SqliteWriter

SQLITE_CHUNK = 20
# Devices merged between two turns of the event loop (about 90 us each).
MERGE_SLICE = 5
POSTGRES_CHUNK = 500
# Any fixed number, the same in every process: pg_advisory_xact_lock's key.
DEVICES_LOCK = 0x6465_7669_6365_73  # "devices"
# The statements are built from the table's own column names, never from input.
COLUMNS = tuple(column.name for column in devices.columns)
_SELECT_COLUMNS = ", ".join(COLUMNS)
_CONFLICT = "ON CONFLICT (project_id, device_id) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in COLUMNS if c not in ("project_id", "device_id")
)
# SQLite's (sqlite3, named parameters) and PostgreSQL's (asyncpg, positional).
UPSERT_SQLITE = (
    f"INSERT INTO devices ({_SELECT_COLUMNS}) "  # noqa: S608
    f"VALUES ({', '.join(':' + c for c in COLUMNS)}) {_CONFLICT}"
)
UPSERT_POSTGRES = (
    f"INSERT INTO devices ({_SELECT_COLUMNS}) "  # noqa: S608
    f"VALUES ({', '.join(f'${n}' for n in range(1, len(COLUMNS) + 1))}) {_CONFLICT}"
)
_SELECT_SQLITE = (
    f"SELECT {_SELECT_COLUMNS} FROM devices WHERE project_id = ? "  # noqa: S608
    "AND device_id IN (SELECT value FROM json_each(?))"
)
_SELECT_POSTGRES = (
    f"SELECT {_SELECT_COLUMNS} FROM devices WHERE project_id = $1 "  # noqa: S608
    "AND device_id = ANY($2::text[])"
)
_LOCK_POSTGRES = "SELECT pg_advisory_xact_lock($1)"
_DELETE_SQLITE = (
    "DELETE FROM devices WHERE rowid IN (SELECT rowid FROM devices WHERE last_seen_at < ? LIMIT ?)"
)
_DELETE_POSTGRES = text(
    "DELETE FROM devices WHERE (project_id, device_id) IN (SELECT project_id, device_id "
    "FROM devices WHERE last_seen_at < :before LIMIT :limit FOR UPDATE SKIP LOCKED)"
)


def to_row(state: DeviceState) -> dict[str, Any]:
    """A state as the devices table's columns, in COLUMNS order."""
    return {
        "project_id": state.project_id,
        "device_id": state.device_id,
        "gateway_id": state.gateway_id,
        "last_event": state.last_event,
        "last_event_id": state.last_event_id,
        "last_event_at": state.last_event_at,
        "status": state.status,
        "status_at": state.status_at,
        "status_changed_at": state.status_changed_at,
        "first_seen_at": state.first_seen_at,
        "last_seen_at": state.last_seen_at,
        "readings": state.readings,
        "readings_omitted": state.readings_omitted,
        "readings_at": state.readings_at,
        "readings_event_id": state.readings_event_id,
        "recent": json.dumps([list(r) for r in state.recent], separators=(",", ":")),
    }


def from_row(row: Sequence[Any]) -> DeviceState:
    """A devices row (its columns in COLUMNS order) as a state."""
    values = dict(zip(COLUMNS, row, strict=True))
    values["readings_omitted"] = bool(values["readings_omitted"])
    if values["readings"] is not None:
        values["readings"] = bytes(values["readings"])
    values["recent"] = tuple(Recent(*r) for r in json.loads(values["recent"]))
    return DeviceState(**values)


def merged(stored: Iterable[DeviceState], fresh: Sequence[DeviceState]) -> list[DeviceState]:
    """`fresh` merged with the stored rows of the same devices."""
    old = {state.key: state for state in stored}
    return [merge(old[s.key], s) if s.key in old else s for s in fresh]


def _by_project(states: Sequence[DeviceState]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for state in states:
        found[state.project_id].append(state.device_id)
    return found


def _stored_sqlite(
    conn: sqlite3.Connection, states: Sequence[DeviceState]
) -> list[tuple[Any, ...]]:
    """The stored rows of `states`' devices, as the database has them."""
    found: list[tuple[Any, ...]] = []
    for project, ids in _by_project(states).items():
        found += map(tuple, conn.execute(_SELECT_SQLITE, (project, json.dumps(ids))))
    return found


def _sqlite_rows(
    stored: Iterable[Sequence[Any]], states: Sequence[DeviceState]
) -> list[dict[str, Any]]:
    """The rows to upsert: `states` merged with the `stored` rows."""
    rows = [to_row(state) for state in merged(map(from_row, stored), states)]
    for row in rows:
        row["readings_omitted"] = int(row["readings_omitted"])
    return rows


def _write_sqlite(
    conn: sqlite3.Connection,
    states: Sequence[DeviceState],
    seen: list[tuple[Any, ...]],
    rows: list[dict[str, Any]],
) -> None:
    """Upsert `rows`, merged beforehand from the stored rows `seen`; if the
    stored rows are no longer `seen` (another process wrote them since), merge
    again here, inside the write transaction."""
    now = _stored_sqlite(conn, states)
    if now != seen:
        rows = _sqlite_rows(now, states)
    conn.executemany(UPSERT_SQLITE, rows)


class DeviceStore:
    """The devices table on `engine`. Writes go on SQLite through `writer`
    (the outbox's, which owns it), on PostgreSQL through `pool` (the outbox's
    asyncpg pool: one round trip per statement, no SQLAlchemy work per row);
    reads through the engine."""

    def __init__(
        self,
        engine: AsyncEngine,
        writer: SqliteWriter | None = None,
        pool: asyncpg.Pool | None = None,
    ) -> None:
        assert (writer is None) != (pool is None), "a writer (SQLite) or a pool (PostgreSQL)"
        # Devices per write transaction. On SQLite a write holds the writer
        # thread the hot path stores through, about 90 us a device: 20 keep
        # each turn near 2 ms, so an accept waits at most that long behind
        # one (100 devices in one went 7-11 ms, the p99 at 500 events/s
        # with it). On PostgreSQL a write has its own connection.
        self.chunk = SQLITE_CHUNK if writer is not None else POSTGRES_CHUNK
        self.engine = engine
        self._writer = writer
        self._pool = pool

    async def write(self, states: Sequence[DeviceState]) -> None:
        """Merge `states` (one per device) into their rows, in one transaction."""
        if not states:
            return
        ordered = sorted(states, key=lambda s: s.key)
        if self._writer is not None:
            # The merge (Python work) runs here, not on the writer thread the
            # hot path stores through: there it held the GIL against the event
            # loop in 5 ms switch intervals. The writer only checks that the
            # rows are still those merged from, and writes.
            raw: list[tuple[Any, ...]] = []
            async with reading(self.engine, "reading devices") as conn:
                for project, ids in _by_project(ordered).items():
                    found = await conn.exec_driver_sql(_SELECT_SQLITE, (project, json.dumps(ids)))
                    raw += map(tuple, found)
            by_key = {(row[0], row[1]): row for row in raw}
            rows: list[dict[str, Any]] = []
            for start in range(0, len(ordered), MERGE_SLICE):
                part = ordered[start : start + MERGE_SLICE]
                rows += _sqlite_rows([by_key[s.key] for s in part if s.key in by_key], part)
                await asyncio.sleep(0)  # a turn for the accept path between slices
            await self._writer.run(
                "writing devices", lambda c: _write_sqlite(c, ordered, raw, rows)
            )
            return
        assert self._pool is not None
        with translate("writing devices"):
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(_LOCK_POSTGRES, DEVICES_LOCK)
                stored: list[DeviceState] = []
                for project, ids in _by_project(ordered).items():
                    stored += (
                        from_row(row) for row in await conn.fetch(_SELECT_POSTGRES, project, ids)
                    )
                await conn.executemany(
                    UPSERT_POSTGRES,
                    [tuple(row.values()) for row in map(to_row, merged(stored, ordered))],
                )

    async def page(
        self, project_id: str, status: str, gateway_id: str, after: str | None, limit: int
    ) -> list[DeviceState]:
        """The project's devices after device id `after`, in device id order,
        filtered (an empty filter: any)."""
        query = select(devices).where(devices.c.project_id == project_id)
        if status:
            query = query.where(devices.c.status == status)
        if gateway_id:
            query = query.where(devices.c.gateway_id == gateway_id)
        if after is not None:
            query = query.where(devices.c.device_id > after)
        query = query.order_by(devices.c.device_id).limit(limit)
        async with reading(self.engine, "listing devices") as conn:
            return [from_row(row) for row in await conn.execute(query)]

    async def totals(self, project_id: str) -> dict[str, int]:
        """The project's devices by status (ix_devices_status), every status present."""
        query = (
            select(devices.c.status, func.count())
            .where(devices.c.project_id == project_id)
            .group_by(devices.c.status)
        )
        async with reading(self.engine, "counting devices") as conn:
            counted = {status: int(n) for status, n in await conn.execute(query)}
        return {status: counted.get(status, 0) for status in ("online", "offline", UNKNOWN)}

    async def one(self, project_id: str, device_id: str) -> DeviceState | None:
        query = select(devices).where(
            devices.c.project_id == project_id, devices.c.device_id == device_id
        )
        async with reading(self.engine, "reading a device") as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else from_row(row)

    async def events(self, project_id: str, event_ids: Sequence[str]) -> dict[str, bytes]:
        """The stored events of the project among `event_ids` (serialized)."""
        if not event_ids:
            return {}
        query = select(events.c.event_id, events.c.event).where(
            events.c.project_id == project_id, events.c.event_id.in_(event_ids)
        )
        async with reading(self.engine, "reading a device's events") as conn:
            return {event_id: bytes(event) for event_id, event in await conn.execute(query)}

    async def delete_stale(self, seen_before: float, limit: int) -> int:
        """Retention: up to `limit` devices last seen before `seen_before`; how many."""
        if self._writer is not None:
            return await self._writer.run(
                "deleting devices",
                lambda c: c.execute(_DELETE_SQLITE, (seen_before, limit)).rowcount,
            )
        async with transaction(self.engine, "deleting devices", lock=None) as conn:
            result = await conn.execute(_DELETE_POSTGRES, {"before": seen_before, "limit": limit})
            return int(result.rowcount)
