"""The outbox's hot transactions on SQLite, as plain `sqlite3` functions.

Each runs whole inside a `SqliteWriter` transaction (one hop to the writer
thread, see storage.sqlite_writer); the PostgreSQL versions are in `outbox`
(through SQLAlchemy and asyncpg, where several processes share the work).
They do what `Outbox.accept`, `claim` and `record` document.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from edgesense.delivery.store.rows import (
    INSERT_ATTEMPT,
    INSERT_DELIVERY,
    PENDING,
    UPDATE_OUTCOME,
    Claimed,
    NewDelivery,
    Outcome,
    StoredEvent,
    attempt_rows,
    delivery_rows,
    outcome_rows,
)

# Well under SQLite's limit of host parameters in one statement.
CHUNK = 500

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


def _placeholders(count: int) -> str:
    """`?, ?, ?`: statements are built from placeholders only, never from values."""
    return ", ".join("?" * count)


def _in_chunks(conn: sqlite3.Connection, query: str, ids: Sequence[str]) -> list[tuple[Any, ...]]:
    """Rows of `query` (its `{}` an IN list) for every id, CHUNK ids per statement."""
    found: list[tuple[Any, ...]] = []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        found += conn.execute(query.format(_placeholders(len(chunk))), chunk).fetchall()
    return found


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
