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

A list of ids of any length is one parameter: a JSON array, read by
`json_each` (`IN (SELECT value FROM json_each(?))`). An `IN (?, ?, …)` list
is limited by SQLite's host parameters per statement (32,766 by default,
999 before 3.32), and a claim's NOT IN list cannot be split into several
statements (their LIMIT and due order apply to the whole), nor within one
(an AND of NOT IN lists has as many parameters); one JSON
parameter has no such limit, and each statement keeps one text, so
`sqlite3`'s statement cache reuses it whatever the length (measured on
claims' payload reads of 1 to 500 events: 5-10% faster than `IN (?, …)`
lists, prepared anew for each length).

The functions do what the `Outbox` methods of the same name document; each
runs inside the writer's BEGIN IMMEDIATE … COMMIT.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from edgesense.delivery.rules.alerts import (
    ALERT_COLUMNS,
    CLOSE_ALERT,
    DELETE_RESOLVED,
    INSERT_ALERT,
    RESET_STATE,
    STATE_COLUMNS,
    UPSERT_STATE,
    AlertPlan,
    AlertRow,
    Ending,
    RuleWork,
    Targets,
    pairs_of,
    plan_alerts,
    plan_endings,
    reset_rows,
    state_of,
)
from edgesense.delivery.rules.index import Observation
from edgesense.delivery.store.devices import DeviceStore
from edgesense.delivery.store.reads import OutboxReads
from edgesense.delivery.store.rows import (
    FAILED,
    HELD,
    INSERT_DELIVERY,
    LOG_ATTEMPT_IF_LEASED,
    ORDERED_HEAD,
    PARK_NEW,
    PARK_WEBHOOKS,
    PARKED_AT,
    PENDING,
    RETENTION_BATCH,
    UNPARK_NEXT,
    UNPARK_ORPHANS,
    UPDATE_OUTCOME,
    Claimed,
    Deleted,
    NewDelivery,
    Outcome,
    RecoverWindow,
    StoredEvent,
    delivery_rows,
    keyed_ids,
    log_attempt_rows,
    outcome_rows,
)
from edgesense.storage.sqlite_writer import SqliteWriter

# A list of any length is `IN (SELECT value FROM json_each(?))`, its one
# parameter a JSON array (`list_param`).
INSERT_EVENT = (
    "INSERT OR IGNORE INTO events (event_id, project_id, event, created_at) VALUES (?, ?, ?, ?)"
)
SELECT_KNOWN = "SELECT event_id FROM events WHERE event_id IN (SELECT value FROM json_each(?))"
SELECT_PAYLOADS = (
    "SELECT event_id, event FROM events WHERE event_id IN (SELECT value FROM json_each(?))"
)
# Every claim takes only the first waiting delivery of an ordered webhook's
# device (rows.ORDERED_HEAD); a row without an order key passes its first term.
CLAIM = (
    "UPDATE deliveries SET lease_owner = ?, lease_expires_at = ? WHERE seq IN ("
    " SELECT seq FROM deliveries AS due WHERE {webhooks}status = ? AND next_attempt_at <= ?"
    " AND (lease_expires_at IS NULL OR lease_expires_at < ?){excluded}"
    " AND {ordered}"
    " ORDER BY next_attempt_at, seq LIMIT ?)"
    " RETURNING seq, delivery_id, webhook_id, event_id, attempt_count, cycle_attempts, created_at,"
    " project_id, order_key IS NOT NULL"
)
CLAIM_ANY = CLAIM.format(webhooks="", excluded="", ordered=ORDERED_HEAD)
CLAIM_EXCLUDING = CLAIM.format(
    webhooks="",
    excluded=" AND webhook_id NOT IN (SELECT value FROM json_each(?))",
    ordered=ORDERED_HEAD,
)
CLAIM_ONE_WEBHOOK = CLAIM.format(webhooks="webhook_id = ? AND ", excluded="", ordered=ORDERED_HEAD)
DEFER = (
    "UPDATE deliveries SET next_attempt_at = ?, status_reason = ?, updated_at = ?"
    " WHERE webhook_id = ? AND status = ? AND next_attempt_at < ?"
    " AND (lease_expires_at IS NULL OR lease_expires_at < ?)"
)
RELEASE_LEASES = (
    "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL"
    " WHERE lease_owner = ? AND delivery_id IN (SELECT value FROM json_each(?))"
)
# A status change of a webhook's deliveries; back to pending means due now,
# with fresh attempts.
TRANSITION = (
    "UPDATE deliveries SET status = ?, status_reason = ?, updated_at = ?"
    " WHERE webhook_id IN (SELECT value FROM json_each(?))"
    " AND status IN (SELECT value FROM json_each(?))"
)
TRANSITION_TO_PENDING = (
    "UPDATE deliveries SET status = ?, status_reason = ?, updated_at = ?,"
    " cycle_attempts = 0, next_attempt_at = ?"
    " WHERE webhook_id IN (SELECT value FROM json_each(?))"
    " AND status IN (SELECT value FROM json_each(?))"
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


# The states of (rule, device) pairs: a JSON array of [rule id, device id] arrays.
_STATES_OF_PAIRS = (
    "SELECT {columns} FROM rule_states WHERE (rule_id, device_id) IN"
    " (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))"
)
_SELECT_STATES = _STATES_OF_PAIRS.format(columns=STATE_COLUMNS)
_ACTIVE_ALERTS = (
    "SELECT {columns} FROM alerts WHERE state = 'active'"
    " AND alert_id IN (SELECT value FROM json_each(?))"
)
_SELECT_ALERTS = _ACTIVE_ALERTS.format(columns=ALERT_COLUMNS)
_RESET_STATE = RESET_STATE.format(greatest="max")
_DELETE_STATES = "DELETE FROM rule_states WHERE rule_id IN (SELECT value FROM json_each(?))"


def list_param(values: Iterable[str]) -> str:
    """The `json_each(?)` parameter: `values` as a JSON array."""
    return json.dumps(list(values))


class SqliteOutbox(OutboxReads):
    """The `Outbox` on SQLite; owns `writer` and `engine` (closing the outbox closes both)."""

    def __init__(self, engine: AsyncEngine, writer: SqliteWriter) -> None:
        super().__init__(engine)
        self._writer = writer
        self.devices = DeviceStore(engine, writer=writer)

    async def close(self) -> None:
        await self._writer.close()
        await super().close()

    async def accept(
        self,
        stored: Sequence[StoredEvent],
        planned: Sequence[NewDelivery],
        now: float,
        rules: RuleWork | None = None,
    ) -> tuple[set[str], int]:
        if not stored:
            return set(), 0
        return await self._writer.run(
            "storing events", lambda c: accept(c, stored, planned, now, rules)
        )

    async def delete_resolved_alerts(self, resolved_before: float, limit: int) -> int:
        return await self._writer.run(
            "deleting resolved alerts",
            lambda c: c.execute(DELETE_RESOLVED, (resolved_before, limit)).rowcount,
        )

    async def end_alerts(
        self, reasons: Mapping[str, Ending], targets: Targets, now: float
    ) -> AlertPlan:
        if not reasons:
            return AlertPlan()
        return await self._writer.run(
            "resolving alerts", lambda c: end_alerts(c, reasons, targets, now)
        )

    async def forget_states(self, rule_ids: Sequence[str]) -> int:
        return await self._writer.run(
            "forgetting rule states",
            lambda c: c.execute(_DELETE_STATES, (list_param(rule_ids),)).rowcount,
        )

    async def claim(
        self, owner: str, now: float, lease_seconds: float, limit: int, exclude: Iterable[str] = ()
    ) -> list[Claimed]:
        webhooks = list(exclude)
        excluded = list_param(webhooks) if webhooks else None
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

    async def record(
        self,
        owner: str,
        outcomes: Sequence[Outcome],
        now: float,
        released: Sequence[str] = (),
    ) -> None:
        if not outcomes:
            return
        await self._writer.run(
            "recording delivery attempts", lambda c: record(c, owner, outcomes, now, released)
        )

    async def unpark_orphans(self, now: float) -> int:
        return await self._writer.run(
            "unparking ordered deliveries",
            lambda c: c.execute(_UNPARK_ORPHANS, (now, PARKED_AT)).rowcount,
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
        ids = list_param(delivery_ids)
        await self._writer.run(
            "releasing leases", lambda c: c.execute(RELEASE_LEASES, (owner, ids)).rowcount
        )

    async def hold(self, webhook_ids: Sequence[str], reason: str, now: float) -> int:
        return await self._transition(webhook_ids, (PENDING,), HELD, reason, now)

    async def release_held(self, webhook_ids: Sequence[str], now: float) -> int:
        # The devices' backlogs of ordered webhooks parked again, in the same transaction.
        return await self._transition(webhook_ids, (HELD,), PENDING, None, now, park=True)

    async def fail_all(self, webhook_ids: Sequence[str], reason: str, now: float) -> int:
        return await self._transition(webhook_ids, (PENDING, HELD), FAILED, reason, now)

    async def _transition(
        self,
        webhook_ids: Sequence[str],
        olds: Sequence[str],
        new: str,
        reason: str | None,
        now: float,
        park: bool = False,
    ) -> int:
        if not webhook_ids:
            return 0
        head: tuple[object, ...]
        if new == PENDING:
            statement, head = TRANSITION_TO_PENDING, (new, reason, now, now)
        else:
            statement, head = TRANSITION, (new, reason, now)
        webhooks = list_param(webhook_ids)
        parameters = (*head, webhooks, list_param(olds))

        def transition(conn: sqlite3.Connection) -> int:
            changed = conn.execute(statement, parameters).rowcount
            if park and changed:
                park_webhooks(conn, webhooks, now)
            return int(changed)

        return await self._writer.run(f"marking deliveries {new}", transition)

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

    async def _recover_chunk(self, window: RecoverWindow, size: int) -> int:
        return await self._writer.run(
            "recovering failed deliveries", lambda c: recover_chunk(c, window, size)
        )


def accept(
    conn: sqlite3.Connection,
    stored: Sequence[StoredEvent],
    planned: Sequence[NewDelivery],
    now: float,
    rules: RuleWork | None = None,
) -> tuple[set[str], int]:
    known = {
        row[0] for row in conn.execute(SELECT_KNOWN, (list_param(e.event_id for e in stored),))
    }
    fresh = [e for e in stored if e.event_id not in known]
    new_ids = {e.event_id for e in fresh}
    rows = delivery_rows(planned, new_ids)
    if rules is not None:
        seen = rules.fresh(new_ids)
        if seen:
            rules.plan = plan = _judge(conn, seen, rules.targets, now)
            fresh += plan.events
            rows += plan.deliveries
    conn.executemany(INSERT_EVENT, [(e.event_id, e.project_id, e.payload, now) for e in fresh])
    _insert_deliveries(conn, rows)
    return new_ids, len(rows)


def _insert_deliveries(conn: sqlite3.Connection, rows: list[NewDelivery]) -> None:
    if rows:
        conn.executemany(INSERT_DELIVERY, rows)
        keyed = keyed_ids(rows)
        if keyed:  # behind an earlier one of their device: parked (rows.PARKED_AT)
            conn.execute(_PARK_NEW, (PARKED_AT, list_param(keyed)))


def _judge(
    conn: sqlite3.Connection, seen: list[Observation], targets: Targets, now: float
) -> AlertPlan:
    """The rules' verdict on new readings, and its rows written (but the
    events and deliveries, which go with the batch's own)."""
    pairs = [[rule_id, device_id] for rule_id, device_id, _ in pairs_of(seen)]
    states = {
        (row[0], row[1]): state_of(row)
        for row in conn.execute(_SELECT_STATES, (json.dumps(pairs),))
    }
    alert_ids = [state.alert_id for state in states.values() if state.alert_id]
    open_alerts = {
        row[0]: AlertRow(*row)
        for row in (conn.execute(_SELECT_ALERTS, (list_param(alert_ids),)) if alert_ids else ())
    }
    plan = plan_alerts(seen, states, open_alerts, targets, now)
    conn.executemany(UPSERT_STATE, plan.states)
    conn.executemany(INSERT_ALERT, plan.opened)
    conn.executemany(CLOSE_ALERT, plan.closed)
    return plan


def end_alerts(
    conn: sqlite3.Connection, reasons: Mapping[str, Ending], targets: Targets, now: float
) -> AlertPlan:
    active = [AlertRow(*row) for row in conn.execute(_SELECT_ALERTS, (list_param(reasons),))]
    plan = plan_endings(active, reasons, targets, now)
    conn.executemany(CLOSE_ALERT, plan.closed)
    conn.executemany(
        INSERT_EVENT, [(e.event_id, e.project_id, e.payload, now) for e in plan.events]
    )
    _insert_deliveries(conn, plan.deliveries)
    conn.executemany(_RESET_STATE, reset_rows(active, reasons, plan))
    return plan


def claim(
    conn: sqlite3.Connection,
    owner: str,
    now: float,
    lease_seconds: float,
    limit: int,
    excluded: str | None,
) -> list[Claimed]:
    """`excluded`: the webhooks not to claim for (an `json_each(?)` parameter), or None."""
    head = (owner, now + lease_seconds, PENDING, now, now)
    if excluded is None:
        leased = conn.execute(CLAIM_ANY, (*head, limit)).fetchall()
    else:
        leased = conn.execute(CLAIM_EXCLUDING, (*head, excluded, limit)).fetchall()
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
    payloads = dict(conn.execute(SELECT_PAYLOADS, (list_param({row[3] for row in leased}),)))
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
            bool(keyed),
        )
        for seq, delivery_id, webhook_id, event_id, count, cycle, created, project, keyed in leased
    ]


def record(
    conn: sqlite3.Connection,
    owner: str,
    outcomes: Sequence[Outcome],
    now: float,
    released: Sequence[str] = (),
) -> None:
    # Attempts first: they are logged only while `owner` still holds the lease,
    # which the updates then clear (see rows.LOG_ATTEMPT_IF_LEASED).
    logged = log_attempt_rows(owner, outcomes)
    if logged:
        conn.executemany(LOG_ATTEMPT_IF_LEASED, logged)
    conn.executemany(UPDATE_OUTCOME, outcome_rows(owner, outcomes, now))
    if released:  # ended deliveries of ordered webhooks: their devices' next ones go
        conn.execute(_UNPARK_NEXT, (now, PARKED_AT, list_param(released)))


_IDS = "IN (SELECT value FROM json_each(?))"
_PARK_NEW = PARK_NEW.format(ids=_IDS)
_ORDER_INDEX = "INDEXED BY ix_deliveries_order"
_PARK_WEBHOOKS = PARK_WEBHOOKS.format(ids=_IDS, order_index=_ORDER_INDEX)
_UNPARK_NEXT = UNPARK_NEXT.format(ids=_IDS)
_UNPARK_ORPHANS = UNPARK_ORPHANS.format(order_index=_ORDER_INDEX)


def park_webhooks(conn: sqlite3.Connection, webhooks: str, now: float) -> None:
    """Park the keyed deliveries of these webhooks (a `json_each` parameter)
    that wait behind an earlier one of their device (see rows.PARKED_AT)."""
    conn.execute(_PARK_WEBHOOKS, (PARKED_AT, webhooks, PARKED_AT, now))


# `status = 'failed'` as a literal, not a parameter: only then can SQLite
# use the partial index ix_deliveries_webhook_failed.
SELECT_FAILED = (
    "SELECT seq FROM deliveries INDEXED BY ix_deliveries_webhook_failed"
    " WHERE webhook_id = ? AND status = 'failed' AND updated_at >= ? AND updated_at < ?"
    " AND project_id = ? ORDER BY updated_at, seq LIMIT ?"
)
RECOVER = (
    "UPDATE deliveries SET status = ?, status_reason = ?, cycle_attempts = 0,"
    " next_attempt_at = ?, updated_at = ? WHERE status = 'failed'"
    " AND seq IN (SELECT value FROM json_each(?))"
)


def recover_chunk(conn: sqlite3.Connection, window: RecoverWindow, size: int) -> int:
    """Up to `size` of the webhook's deliveries that failed first in the
    window are due again (see Outbox.recover); how many."""
    w = window
    selected = conn.execute(SELECT_FAILED, (w.webhook_id, w.since, w.until, w.project_id, size))
    seqs = [row[0] for row in selected]
    if not seqs:
        return 0
    changed = conn.execute(RECOVER, (w.status, w.reason, w.now, w.now, json.dumps(seqs))).rowcount
    if changed and w.status == PENDING:  # an ordered webhook's devices: parked behind their first
        park_webhooks(conn, list_param([w.webhook_id]), w.now)
    return int(changed)


# Retention. The status terms are literals, not parameters: only then can
# SQLite use the partial index ix_deliveries_ended.
SELECT_ENDED = (
    "SELECT delivery_id FROM deliveries INDEXED BY ix_deliveries_ended"
    " WHERE status IN ('succeeded', 'failed') AND updated_at < ? ORDER BY updated_at LIMIT ?"
)
DELETE_DELIVERIES = "DELETE FROM deliveries WHERE delivery_id IN (SELECT value FROM json_each(?))"
DELETE_ATTEMPTS = "DELETE FROM attempts WHERE delivery_id IN (SELECT value FROM json_each(?))"
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
    if not ended:
        deleted = attempts = 0
    else:
        ids = list_param(ended)
        deleted = conn.execute(DELETE_DELIVERIES, (ids,)).rowcount
        attempts = conn.execute(DELETE_ATTEMPTS, (ids,)).rowcount
    events = conn.execute(DELETE_EVENTS, (ended_before, limit)).rowcount
    return Deleted(deleted, attempts, events)
