"""The outbox on SQLite: every write a plain `sqlite3` function on one writer thread.

SQLite has one writer at a time. Through SQLAlchemy and aiosqlite each
statement of a transaction is a round trip to the event loop, and the write
lock is held across them all; on the writer thread (`storage.sqlite_writer`)
a whole transaction is one hop and holds the lock for the database work
only, which was measured much faster. Every write of the outbox, the hot
ones (accept, claim, record) and the rare ones (defer, hold, requeue, …),
goes through that one thread, so this process's writes queue there and
never meet each other on SQLite's lock (another process's writer, such as
the registry's, waits for it up to the busy timeout). Reads are shared with
PostgreSQL (`reads.OutboxReads`, on the engine's aiosqlite connections): in
WAL mode they neither wait for the writer nor make it wait.

The functions do what the `Outbox` methods of the same name document; each
runs inside the writer's BEGIN IMMEDIATE … COMMIT.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from edgesense.delivery.store.reads import OutboxReads
from edgesense.delivery.store.rows import (
    FAILED,
    HELD,
    INSERT_ATTEMPT,
    INSERT_DELIVERY,
    PENDING,
    RECOVER_CHUNK,
    RECOVER_LIMIT,
    RETENTION_BATCH,
    UPDATE_OUTCOME,
    Claimed,
    Deleted,
    NewDelivery,
    Outcome,
    Recovered,
    StoredEvent,
    attempt_rows,
    delivery_rows,
    id_chunks,
    outcome_rows,
)
from edgesense.storage.sqlite_writer import SqliteWriter

INSERT_EVENT = (
    "INSERT OR IGNORE INTO events (event_id, project_id, event, created_at) VALUES (?, ?, ?, ?)"
)
SELECT_KNOWN = "SELECT event_id FROM events WHERE event_id IN ({})"
SELECT_PAYLOADS = "SELECT event_id, event FROM events WHERE event_id IN ({})"
CLAIM = (
    "UPDATE deliveries SET lease_owner = ?, lease_expires_at = ? WHERE seq IN ("
    " SELECT seq FROM deliveries WHERE {webhooks}status = ? AND next_attempt_at <= ?"
    " AND (lease_expires_at IS NULL OR lease_expires_at < ?){excluded}"
    " ORDER BY next_attempt_at, seq LIMIT ?)"
    " RETURNING seq, delivery_id, webhook_id, event_id, attempt_count, cycle_attempts, created_at,"
    " project_id"
)
CLAIM_ONE_WEBHOOK = CLAIM.format(webhooks="webhook_id = ? AND ", excluded="")
DEFER = (
    "UPDATE deliveries SET next_attempt_at = ?, status_reason = ?, updated_at = ?"
    " WHERE webhook_id = ? AND status = ? AND next_attempt_at < ?"
    " AND (lease_expires_at IS NULL OR lease_expires_at < ?)"
)
RELEASE_LEASES = (
    "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL"
    " WHERE lease_owner = ? AND delivery_id IN ({})"
)
# A status change of a webhook's deliveries; back to pending means due now,
# with fresh attempts.
TRANSITION = (
    "UPDATE deliveries SET status = ?, status_reason = ?, updated_at = ?"
    " WHERE status = ? AND webhook_id IN ({})"
)
TRANSITION_TO_PENDING = (
    "UPDATE deliveries SET status = ?, status_reason = ?, updated_at = ?,"
    " cycle_attempts = 0, next_attempt_at = ?"
    " WHERE status = ? AND webhook_id IN ({})"
)
# A held row's updated_at is when it became held.
EXPIRE_HELD = (
    "UPDATE deliveries SET status = ?, status_reason = ?, updated_at = ?"
    " WHERE status = ? AND updated_at < ?"
)
REQUEUE = (
    "UPDATE deliveries SET status = ?, status_reason = ?, cycle_attempts = 0,"
    " next_attempt_at = ?, updated_at = ? WHERE delivery_id = ? AND project_id = ?"
)


class SqliteOutbox(OutboxReads):
    """The `Outbox` on SQLite; owns `writer` and `engine` (closing the outbox closes both)."""

    def __init__(self, engine: AsyncEngine, writer: SqliteWriter) -> None:
        super().__init__(engine)
        self._writer = writer

    async def close(self) -> None:
        await self._writer.close()
        await super().close()

    async def accept(
        self, stored: Sequence[StoredEvent], planned: Sequence[NewDelivery], now: float
    ) -> tuple[set[str], int]:
        if not stored:
            return set(), 0
        return await self._writer.run("storing events", lambda c: accept(c, stored, planned, now))

    async def claim(
        self, owner: str, now: float, lease_seconds: float, limit: int, exclude: Iterable[str] = ()
    ) -> list[Claimed]:
        excluded = list(exclude)
        return await self._writer.run(
            "claiming deliveries",
            lambda c: claim(c, owner, now, lease_seconds, limit, excluded),
        )

    async def claim_for(
        self, owner: str, now: float, lease_seconds: float, limits: Mapping[str, int]
    ) -> list[Claimed]:
        if not limits:
            return []
        return await self._writer.run(
            "claiming deliveries",
            lambda c: claim_for(c, owner, now, lease_seconds, limits),
        )

    async def record(self, owner: str, outcomes: Sequence[Outcome], now: float) -> None:
        if not outcomes:
            return
        await self._writer.run(
            "recording delivery attempts", lambda c: record(c, owner, outcomes, now)
        )

    async def defer(self, webhook_id: str, until: float, reason: str, now: float) -> int:
        return await self._writer.run(
            "deferring deliveries",
            lambda c: (
                c.execute(DEFER, (until, reason, now, webhook_id, PENDING, until, now)).rowcount
            ),
        )

    async def release_leases(self, owner: str, delivery_ids: Sequence[str]) -> None:
        if not delivery_ids:
            return
        ids = list(delivery_ids)
        await self._writer.run(
            "releasing leases", lambda c: _update_in_chunks(c, RELEASE_LEASES, (owner,), ids)
        )

    async def hold(self, webhook_ids: Sequence[str], reason: str, now: float) -> int:
        return await self._transition(webhook_ids, (PENDING,), HELD, reason, now)

    async def release_held(self, webhook_ids: Sequence[str], now: float) -> int:
        return await self._transition(webhook_ids, (HELD,), PENDING, None, now)

    async def fail_all(self, webhook_ids: Sequence[str], reason: str, now: float) -> int:
        return await self._transition(webhook_ids, (PENDING, HELD), FAILED, reason, now)

    async def _transition(
        self,
        webhook_ids: Sequence[str],
        olds: Sequence[str],
        new: str,
        reason: str | None,
        now: float,
    ) -> int:
        if not webhook_ids:
            return 0
        ids = list(webhook_ids)

        def work(conn: sqlite3.Connection) -> int:
            count = 0
            for old in olds:
                if new == PENDING:
                    head: tuple[Any, ...] = (new, reason, now, now, old)
                    count += _update_in_chunks(conn, TRANSITION_TO_PENDING, head, ids)
                else:
                    count += _update_in_chunks(conn, TRANSITION, (new, reason, now, old), ids)
            return count

        return await self._writer.run(f"marking deliveries {new}", work)

    async def expire_held(self, held_before: float, reason: str, now: float) -> int:
        return await self._writer.run(
            "expiring held deliveries",
            lambda c: c.execute(EXPIRE_HELD, (FAILED, reason, now, HELD, held_before)).rowcount,
        )

    async def delete_ended(self, ended_before: float, limit: int = RETENTION_BATCH) -> Deleted:
        return await self._writer.run(
            "deleting ended deliveries", lambda c: delete_ended(c, ended_before, limit)
        )

    async def requeue(
        self, project_id: str, delivery_id: str, status: str, reason: str | None, now: float
    ) -> bool:
        updated = await self._writer.run(
            "requeueing a delivery",
            lambda c: (
                c.execute(REQUEUE, (status, reason, now, now, delivery_id, project_id)).rowcount
            ),
        )
        return updated > 0

    async def recover(
        self,
        project_id: str,
        webhook_id: str,
        since: float,
        until: float,
        status: str,
        reason: str | None,
        now: float,
        limit: int = RECOVER_LIMIT,
    ) -> Recovered:
        count = 0
        while count < limit:
            size = min(RECOVER_CHUNK, limit - count)
            chunk = functools.partial(
                recover_chunk,
                project_id=project_id,
                webhook_id=webhook_id,
                since=since,
                until=until,
                status=status,
                reason=reason,
                now=now,
                size=size,
            )
            changed = await self._writer.run("recovering failed deliveries", chunk)
            count += changed
            if changed < size:
                return Recovered(count, None)
        return Recovered(count, await self.oldest_failed(project_id, webhook_id, since, until))


def _placeholders(count: int) -> str:
    """`?, ?, ?`: statements are built from placeholders only, never from values."""
    return ", ".join("?" * count)


def _in_chunks(conn: sqlite3.Connection, query: str, ids: Sequence[str]) -> list[tuple[Any, ...]]:
    """Rows of `query` (its `{}` an IN list) for every id, IN_LIST_CHUNK ids per statement."""
    found: list[tuple[Any, ...]] = []
    for chunk in id_chunks(ids):
        found += conn.execute(query.format(_placeholders(len(chunk))), chunk).fetchall()
    return found


def _update_in_chunks(
    conn: sqlite3.Connection, statement: str, head: tuple[Any, ...], ids: Sequence[str]
) -> int:
    """Run `statement` (its `{}` an IN list, after the `head` parameters) for
    every id, IN_LIST_CHUNK ids per statement; how many rows it changed."""
    changed = 0
    for chunk in id_chunks(ids):
        changed += conn.execute(
            statement.format(_placeholders(len(chunk))), (*head, *chunk)
        ).rowcount
    return changed


def accept(
    conn: sqlite3.Connection,
    stored: Sequence[StoredEvent],
    planned: Sequence[NewDelivery],
    now: float,
) -> tuple[set[str], int]:
    known = {row[0] for row in _in_chunks(conn, SELECT_KNOWN, [e.event_id for e in stored])}
    fresh = [e for e in stored if e.event_id not in known]
    conn.executemany(INSERT_EVENT, [(e.event_id, e.project_id, e.payload, now) for e in fresh])
    new_ids = {e.event_id for e in fresh}
    rows = delivery_rows(planned, new_ids)
    if rows:
        conn.executemany(INSERT_DELIVERY, rows)
    return new_ids, len(rows)


def claim(
    conn: sqlite3.Connection,
    owner: str,
    now: float,
    lease_seconds: float,
    limit: int,
    exclude: Sequence[str],
) -> list[Claimed]:
    excluded = f" AND webhook_id NOT IN ({_placeholders(len(exclude))})" if exclude else ""
    leased = conn.execute(
        CLAIM.format(webhooks="", excluded=excluded),
        (owner, now + lease_seconds, PENDING, now, now, *exclude, limit),
    ).fetchall()
    return _with_payloads(conn, leased)


def claim_for(
    conn: sqlite3.Connection,
    owner: str,
    now: float,
    lease_seconds: float,
    limits: Mapping[str, int],
) -> list[Claimed]:
    leased: list[tuple[Any, ...]] = []
    for webhook_id, limit in limits.items():
        leased += conn.execute(
            CLAIM_ONE_WEBHOOK,
            (owner, now + lease_seconds, webhook_id, PENDING, now, now, limit),
        ).fetchall()
    return _with_payloads(conn, leased)


def _with_payloads(conn: sqlite3.Connection, leased: list[tuple[Any, ...]]) -> list[Claimed]:
    if not leased:
        return []
    payloads = dict(_in_chunks(conn, SELECT_PAYLOADS, list({row[3] for row in leased})))
    leased.sort()
    return [
        Claimed(
            seq,
            delivery_id,
            webhook_id,
            event_id,
            count,
            cycle,
            payloads[event_id],
            created,
            project,
        )
        for seq, delivery_id, webhook_id, event_id, count, cycle, created, project in leased
    ]


def record(conn: sqlite3.Connection, owner: str, outcomes: Sequence[Outcome], now: float) -> None:
    logged = attempt_rows(outcomes)
    if logged:
        conn.executemany(INSERT_ATTEMPT, logged)
    conn.executemany(UPDATE_OUTCOME, outcome_rows(owner, outcomes, now))


# `status = 'failed'` as a literal, not a parameter: only then can SQLite
# use the partial index ix_deliveries_webhook_failed.
SELECT_FAILED = (
    "SELECT seq FROM deliveries INDEXED BY ix_deliveries_webhook_failed"
    " WHERE webhook_id = ? AND status = 'failed' AND updated_at >= ? AND updated_at < ?"
    " AND project_id = ? ORDER BY updated_at, seq LIMIT ?"
)
RECOVER = (
    "UPDATE deliveries SET status = ?, status_reason = ?, cycle_attempts = 0,"
    " next_attempt_at = ?, updated_at = ? WHERE status = 'failed' AND seq IN ({})"
)


def recover_chunk(
    conn: sqlite3.Connection,
    *,
    project_id: str,
    webhook_id: str,
    since: float,
    until: float,
    status: str,
    reason: str | None,
    now: float,
    size: int,
) -> int:
    """Up to `size` of the webhook's deliveries that failed first in the
    window are due again (see Outbox.recover); how many."""
    seqs = [
        row[0] for row in conn.execute(SELECT_FAILED, (webhook_id, since, until, project_id, size))
    ]
    if not seqs:
        return 0
    statement = RECOVER.format(_placeholders(len(seqs)))
    return conn.execute(statement, (status, reason, now, now, *seqs)).rowcount


# Retention. The status terms are literals, not parameters: only then can
# SQLite use the partial index ix_deliveries_ended.
SELECT_ENDED = (
    "SELECT delivery_id FROM deliveries INDEXED BY ix_deliveries_ended"
    " WHERE status IN ('succeeded', 'failed') AND updated_at < ? ORDER BY updated_at LIMIT ?"
)
DELETE_DELIVERIES = "DELETE FROM deliveries WHERE delivery_id IN ({})"
DELETE_ATTEMPTS = "DELETE FROM attempts WHERE delivery_id IN ({})"
DELETE_EVENTS = (
    "DELETE FROM events WHERE event_id IN ("
    " SELECT event_id FROM events INDEXED BY ix_events_created WHERE created_at < ?"
    " AND NOT EXISTS (SELECT 1 FROM deliveries INDEXED BY ix_deliveries_event"
    " WHERE deliveries.event_id = events.event_id)"
    " ORDER BY created_at LIMIT ?)"
)


def delete_ended(conn: sqlite3.Connection, ended_before: float, limit: int) -> Deleted:
    """One retention batch (see Outbox.delete_ended)."""
    ended = [row[0] for row in conn.execute(SELECT_ENDED, (ended_before, limit))]
    deleted = _update_in_chunks(conn, DELETE_DELIVERIES, (), ended)
    attempts = _update_in_chunks(conn, DELETE_ATTEMPTS, (), ended)
    events = conn.execute(DELETE_EVENTS, (ended_before, limit)).rowcount
    return Deleted(deleted, attempts, events)
