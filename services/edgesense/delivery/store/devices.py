"""The devices table: the devices view's reads and writes, on both databases.

A write (`DeviceStore.write`, the flusher's, every 2 seconds) upserts each
device's news, and the database merges it with the stored row in the same
statement: the ON CONFLICT clause is devices/view.py `merge` in SQL (every
part keeps the newest of the two; `_merged_columns`), and a test holds the
two to the same answers on both databases. Nothing is read first, so
writers need no lock between them: flushes of any number of processes, in
any order or at once, end the same (each statement merges under the row's
lock; every process writes its devices in the same order).

- On SQLite it runs on the outbox's writer thread, which the hot path shares,
  in transactions of SQLITE_CHUNK devices, without the fsync the hot path's
  commits wait for (`durable=False`: the view is derived data, and a power
  cut loses a flush of it at most, as a kill -9 loses the fold).
- On PostgreSQL it runs on the outbox's asyncpg pool (one pipelined
  executemany), in transactions of POSTGRES_CHUNK devices committed with
  synchronous_commit off (the same reasoning: a server crash may undo the
  last of these writes, never corrupt anything).

What it costs, measured on 100 devices each bringing 10 new events to 20
stored (the latency benchmark's shape): on SQLite a transaction of 5
devices holds the writer thread 0.10 to 0.17 ms, all an accept waits
behind one (0.26 to 0.45 ms when every device takes the full merge of its
recent events; see `_recent`); on PostgreSQL the server spends about 0.14
ms of CPU a device (0.19 with the full merge), 1.4 ms for a transaction of
10, on the machine the hot path shares.

The tracker paces the transactions over part of its interval, so neither
database takes a flush as one burst.

The event loop's whole share is turning each device's state into its row.
It is never part of the accept transaction: the hot path's statements are
unchanged. Retention deletes devices not seen since its cutoff.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from edgesense.delivery.devices.view import OFFLINE, RECENT_EVENTS, STATUSES, DeviceState, Recent
from edgesense.delivery.store.tables import devices, events
from edgesense.storage.engine import reading, transaction, translate
from edgesense.storage.sqlite_writer import SqliteWriter

SQLITE_CHUNK = 5
POSTGRES_CHUNK = 10
# The statements are built from the table's own column names, never from input.
COLUMNS = tuple(column.name for column in devices.columns)
# An upsert that merges in the database (the same rules as view.merge, see
# _merged_columns): SQLite's (sqlite3, named parameters) and PostgreSQL's
# (asyncpg, positional). Its parameters are the row's columns, then the
# (time, event id) of the new recent list's oldest entry (see _recent).
PARAMETERS = (*COLUMNS, "oldest_at", "oldest_id")
_O, _N = "devices", "excluded"


def _placeholder(name: str, postgres: bool) -> str:
    """Parameter `name`: positional for asyncpg, named for sqlite3."""
    return f"${PARAMETERS.index(name) + 1}" if postgres else f":{name}"


def _by_code_point(postgres: bool) -> str:
    """What makes a text comparison go by code point, as Python's does:
    nothing on SQLite (BINARY), COLLATE "C" on PostgreSQL (whatever the
    database's collation)."""
    return ' COLLATE "C"' if postgres else ""


def _merged_columns(postgres: bool) -> str:
    """The ON CONFLICT ... DO UPDATE SET list: view.merge(stored row, new
    row) in SQL, part by part, on either database (`devices` is the stored
    row, `excluded` the new one). Strings compare by code point, as Python's
    do (_by_code_point); a tie keeps the stored row's part, as merge keeps
    `old`'s."""
    least, greatest = ("LEAST", "GREATEST") if postgres else ("min", "max")
    text_order = _by_code_point(postgres)

    def newer(*rank: str) -> str:
        """The new row ranks above the stored one by `rank`, terms of {t}."""
        new, old = (", ".join(term.format(t=t, c=text_order) for term in rank) for t in (_N, _O))
        return f"({new}) > ({old})"

    def newer_known(column: str, *rank: str) -> str:
        """The new row's part wins: the stored row has no `column`, or both
        have it and the new one ranks above by `rank`."""
        return f"({_O}.{column} IS NULL OR ({_N}.{column} IS NOT NULL AND {newer(*rank)}))"

    def pick(condition: str, *columns: str) -> list[str]:
        return [f"{n} = CASE WHEN {condition} THEN {_N}.{n} ELSE {_O}.{n} END" for n in columns]

    later = newer("{t}.last_event_at", "{t}.last_event_id{c}")
    # The latest status event; at the same instant offline, then the later run.
    new_status = newer_known(
        "status_at",
        "{t}.status_at",
        f"{{t}}.status = '{OFFLINE}'",
        "COALESCE({t}.status_changed_at, 0)",
    )
    changed = (
        f"status_changed_at = CASE WHEN {_O}.status_at IS NULL THEN {_N}.status_changed_at "
        f"WHEN {_N}.status_at IS NULL THEN {_O}.status_changed_at "
        # The same status on both: since the earlier of the two runs' starts.
        f"WHEN {_O}.status = {_N}.status THEN {least}("
        f"COALESCE({_N}.status_changed_at, {_O}.status_changed_at), "
        f"COALESCE({_O}.status_changed_at, {_N}.status_changed_at)) "
        f"WHEN {new_status} THEN {_N}.status_changed_at ELSE {_O}.status_changed_at END"
    )
    new_readings = newer_known(
        "readings_at", "{t}.readings_at", "COALESCE({t}.readings_event_id, ''){c}"
    )
    return ", ".join(
        [
            *pick(later, "gateway_id", "last_event", "last_event_id", "last_event_at"),
            *pick(new_status, "status", "status_at"),
            changed,
            f"first_seen_at = {least}({_O}.first_seen_at, {_N}.first_seen_at)",
            f"last_seen_at = {greatest}({_O}.last_seen_at, {_N}.last_seen_at)",
            *pick(new_readings, "readings", "readings_omitted", "readings_at", "readings_event_id"),
            f"recent = {_recent(postgres)}",
        ]
    )


def _recent(postgres: bool) -> str:
    """The SET of `recent`: view.newest_recent of both lists, in SQL.

    Mostly a flush brings only events newer than any stored: the new list's
    oldest entry (parameters oldest_at, oldest_id, so the CASE parses no
    JSON) is newer by (time, event id) than the stored row's last event,
    which is the first of its recent list (observe, merge and both ways
    here keep it so). Then the two lists share no event and the answer is
    the new list followed by the stored one, cut to RECENT_EVENTS, which
    each database builds with a function or two (a concatenation, then a
    cut) where the full merge needs a union and a sort in a subquery; see
    the module docstring for what it saves. Anything else (older events,
    from another process or a failed write kept for later; an event both
    lists hold; no new entry, whose parameters are NULL) takes the full
    merge.

    On SQLite the concatenation is of the texts: "[a,b" + "," + "c,d]".
    Both are arrays written by to_row or by SQLite's JSON functions, so
    they begin with "[" and end with "]" with no space around; an empty
    stored list would make "[a,]", hence its test. json_remove then cuts
    from the end, the highest index first. PostgreSQL joins the parsed
    lists (jsonb ||) and cuts with a path."""
    order = _by_code_point(postgres)
    oldest_at, oldest_id = (_placeholder(name, postgres) for name in ("oldest_at", "oldest_id"))
    newer = f"({oldest_at}, {oldest_id}{order}) > ({_O}.last_event_at, {_O}.last_event_id{order})"
    if postgres:
        cut = (
            f"jsonb_path_query_array({_N}.recent::jsonb || {_O}.recent::jsonb, "
            f"'$[0 to {RECENT_EVENTS - 1}]')::text"
        )
        return f"CASE WHEN {newer} THEN {cut} ELSE {_RECENT_POSTGRES} END"
    beyond = ", ".join(f"'$[{n}]'" for n in range(2 * RECENT_EVENTS - 1, RECENT_EVENTS - 1, -1))
    joined = f"substr({_N}.recent, 1, length({_N}.recent) - 1) || ',' || substr({_O}.recent, 2)"
    return (
        f"CASE WHEN {newer} AND {_O}.recent <> '[]' "
        f"THEN json_remove({joined}, {beyond}) ELSE {_RECENT_SQLITE} END"
    )


# The full merge of the recent events, as view.newest_recent: the union of
# both lists, the RECENT_EVENTS newest by (at, id, name). The union drops an
# entry both lists hold; newest_recent keeps one entry per event id: the
# same, since an event id is stored once (the accept path drops a duplicate
# id, and only newly stored events are noted), so every entry of one id is
# equal. (Not NOT IN over the new list: a subquery on excluded.recent runs
# again for every entry of the stored list, 2.7 times the cost.)
# json_extract, not ->>, which needs SQLite 3.38. SQLite does not promise
# that json_group_array takes rows in the subquery's order; it does, since
# LIMIT keeps the subquery from being flattened into the aggregate, and the
# merge test checks it. From SQLite 3.44 the order can be given to the
# aggregate.
_RECENT_ORDER_SQLITE = ", ".join(f"json_extract(value, '$[{n}]') DESC" for n in range(3))
_RECENT_SQLITE = (
    "(SELECT json_group_array(json(value)) FROM (SELECT value FROM ("  # noqa: S608
    f"SELECT value FROM json_each({_O}.recent) UNION SELECT value FROM json_each({_N}.recent)) "
    f"ORDER BY {_RECENT_ORDER_SQLITE} LIMIT {RECENT_EVENTS}))"
)
_RECENT_ORDER_POSTGRES = (
    '(v ->> 0)::float8 DESC, (v ->> 1) COLLATE "C" DESC, (v ->> 2) COLLATE "C" DESC'
)
_RECENT_POSTGRES = (
    f"(SELECT COALESCE(json_agg(v ORDER BY {_RECENT_ORDER_POSTGRES}), '[]')::text FROM ("  # noqa: S608
    f"SELECT v FROM (SELECT jsonb_array_elements({_O}.recent::jsonb) AS v "
    f"UNION SELECT jsonb_array_elements({_N}.recent::jsonb)) AS u "
    f"ORDER BY {_RECENT_ORDER_POSTGRES} LIMIT {RECENT_EVENTS}) AS t)"
)


def _upsert(postgres: bool) -> str:
    """The merging upsert of one row: named parameters for SQLite's sqlite3,
    positional ones for asyncpg."""
    values = [_placeholder(column, postgres) for column in COLUMNS]
    return (
        f"INSERT INTO devices ({', '.join(COLUMNS)}) VALUES ({', '.join(values)}) "  # noqa: S608
        f"ON CONFLICT (project_id, device_id) DO UPDATE SET {_merged_columns(postgres)}"
    )


UPSERT_SQLITE = _upsert(postgres=False)
UPSERT_POSTGRES = _upsert(postgres=True)
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


def parameters(state: DeviceState) -> dict[str, Any]:
    """The upsert's parameters for `state`, by name (PARAMETERS)."""
    oldest = state.recent[-1] if state.recent else None
    return {
        **to_row(state),
        "oldest_at": None if oldest is None else oldest.at,
        "oldest_id": None if oldest is None else oldest.event_id,
    }


def from_row(row: Sequence[Any]) -> DeviceState:
    """A devices row (its columns in COLUMNS order) as a state."""
    values = dict(zip(COLUMNS, row, strict=True))
    values["readings_omitted"] = bool(values["readings_omitted"])
    if values["readings"] is not None:
        values["readings"] = bytes(values["readings"])
    values["recent"] = tuple(Recent(*r) for r in json.loads(values["recent"]))
    return DeviceState(**values)


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
        # Devices per write transaction, small enough for the hot path to
        # be held up by one at most a fraction of a millisecond (the module
        # docstring has the figures).
        self.chunk = SQLITE_CHUNK if writer is not None else POSTGRES_CHUNK
        self.engine = engine
        self._writer = writer
        self._pool = pool

    async def write(self, states: Sequence[DeviceState]) -> None:
        """Merge `states` (one per device) into their rows, in one transaction."""
        if not states:
            return
        ordered = sorted(states, key=lambda s: s.key)  # one lock order in every process
        rows = [parameters(state) for state in ordered]
        if self._writer is not None:
            await self._writer.run(
                "writing devices", lambda c: c.executemany(UPSERT_SQLITE, rows), durable=False
            )
            return
        assert self._pool is not None
        with translate("writing devices"):
            # Read committed, whatever the server's default: an upsert that
            # meets a row another process is writing waits for it and merges
            # into its result (under repeatable read it would fail instead).
            async with (
                self._pool.acquire() as conn,
                conn.transaction(isolation="read_committed"),
            ):
                # Derived data, as on SQLite: its commit need not wait for the
                # disk. LOCAL: this transaction only; a session-wide SET would
                # stay on the pooled connection the hot path uses next.
                await conn.execute("SET LOCAL synchronous_commit TO OFF")
                await conn.executemany(
                    UPSERT_POSTGRES, [tuple(row[name] for name in PARAMETERS) for row in rows]
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
        return {status: counted.get(status, 0) for status in STATUSES}

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
