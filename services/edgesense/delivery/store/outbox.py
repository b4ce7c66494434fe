"""The durable outbox: every database read and write of the delivery service.

Throughput comes from doing each step for a batch in one statement: a publish
batch is one transaction (events, then their deliveries); a claim is one
UPDATE … RETURNING over due rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so
several processes share the work without waiting on each other); outcomes are
written back in batches with executemany. A claim is a lease: rows leased by a
process that died become due again when the lease expires, and an outcome is
only written by the lease holder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from edgesense.delivery.store import outbox_sqlite
from edgesense.delivery.store.rows import (
    FAILED,
    HELD,
    INSERT_ATTEMPT,
    INSERT_DELIVERY,
    PENDING,
    STATUSES,
    SUCCEEDED,
    UPDATE_OUTCOME,
    Claimed,
    NewDelivery,
    Outcome,
    StoredEvent,
    attempt_rows,
    delivery_rows,
    outcome_rows,
)
from edgesense.delivery.store.tables import attempts, deliveries, events
from edgesense.storage.engine import reading, transaction
from edgesense.storage.sqlite_writer import SqliteWriter

__all__ = [
    "FAILED",
    "HELD",
    "PENDING",
    "STATUSES",
    "SUCCEEDED",
    "Claimed",
    "NewDelivery",
    "Outbox",
    "Outcome",
    "StoredEvent",
]


def driver_sql(statement: str, paramstyle: str) -> str:
    """Our `?` placeholders in the driver's own style."""
    if paramstyle == "qmark":
        return statement
    if paramstyle != "numeric_dollar":
        raise ValueError(f"unsupported paramstyle {paramstyle}")
    parts = statement.split("?")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], 1)) + parts[-1]


class Outbox:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        style = engine.dialect.paramstyle
        self._insert_delivery = driver_sql(INSERT_DELIVERY, style)
        self._insert_attempt = driver_sql(INSERT_ATTEMPT, style)
        self._update_outcome = driver_sql(UPDATE_OUTCOME, style)
        # SQLite (a file): the hot transactions run whole in one writer thread.
        # (Not for an in-memory or URI-form database: this writer opens the file by path.)
        path = engine.url.database if engine.dialect.name == "sqlite" else None
        usable = path and path != ":memory:" and "uri" not in engine.url.query
        self._sqlite = SqliteWriter(engine, path) if usable and path else None

    async def close(self) -> None:
        if self._sqlite is not None:
            await self._sqlite.close()

    async def accept(
        self, stored: Sequence[StoredEvent], planned: Sequence[NewDelivery], now: float
    ) -> tuple[set[str], int]:
        """Store events and their deliveries in one transaction.

        Returns the ids of the events that were new, and how many deliveries
        were created; an event id already stored creates nothing.
        """
        if not stored:
            return set(), 0
        if self._sqlite is not None:
            return await self._sqlite.run(
                "storing events", lambda c: outbox_sqlite.accept(c, stored, planned, now)
            )
        async with transaction(self.engine, "storing events") as conn:
            result = await conn.execute(
                self._insert(events).on_conflict_do_nothing().returning(events.c.event_id),
                [
                    {
                        "event_id": e.event_id,
                        "project_id": e.project_id,
                        "event": e.payload,
                        "created_at": now,
                    }
                    for e in stored
                ],
            )
            new_ids = {row[0] for row in result}
            rows = delivery_rows(planned, new_ids)
            if rows:
                await conn.exec_driver_sql(self._insert_delivery, rows)
        return new_ids, len(rows)

    async def claim(
        self, owner: str, now: float, lease_seconds: float, limit: int, exclude: Iterable[str] = ()
    ) -> list[Claimed]:
        """Lease up to `limit` due deliveries, oldest due first, none of `exclude`'s webhooks."""
        excluded = list(exclude)
        if self._sqlite is not None:
            return await self._sqlite.run(
                "claiming deliveries",
                lambda c: outbox_sqlite.claim(c, owner, now, lease_seconds, limit, excluded),
            )
        where = [deliveries.c.webhook_id.not_in(excluded)] if excluded else []
        async with transaction(self.engine, "claiming deliveries") as conn:
            rows = await _lease(conn, owner, now, lease_seconds, limit, where)
            return await _with_payloads(conn, rows)

    async def claim_for(
        self, owner: str, now: float, lease_seconds: float, limits: Mapping[str, int]
    ) -> list[Claimed]:
        """Lease, for each webhook, up to its limit of its due deliveries, oldest due first.

        Reads only those webhooks' rows (ix_deliveries_webhook_due): a lane
        that drained is refilled without passing over other webhooks' backlogs.
        """
        if not limits:
            return []
        if self._sqlite is not None:
            return await self._sqlite.run(
                "claiming deliveries",
                lambda c: outbox_sqlite.claim_for(c, owner, now, lease_seconds, limits),
            )
        async with transaction(self.engine, "claiming deliveries") as conn:
            rows = []
            for webhook_id, limit in limits.items():
                where = [deliveries.c.webhook_id == webhook_id]
                rows += await _lease(conn, owner, now, lease_seconds, limit, where)
            return await _with_payloads(conn, rows)

    async def record(self, owner: str, outcomes: Sequence[Outcome], now: float) -> None:
        """Write attempt logs and new states; only rows still leased by `owner`."""
        if not outcomes:
            return
        if self._sqlite is not None:
            await self._sqlite.run(
                "recording delivery attempts",
                lambda c: outbox_sqlite.record(c, owner, outcomes, now),
            )
            return
        logged = attempt_rows(outcomes)
        updates = outcome_rows(owner, outcomes, now)
        async with transaction(self.engine, "recording delivery attempts") as conn:
            if logged:
                await conn.exec_driver_sql(self._insert_attempt, logged)
            await conn.exec_driver_sql(self._update_outcome, updates)

    async def defer(self, webhook_id: str, until: float, reason: str, now: float) -> int:
        """A webhook's pending deliveries that are due before `until` and not
        leased become due at `until` (its sends are paused until then)."""
        async with transaction(self.engine, "deferring deliveries") as conn:
            result = await conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.webhook_id == webhook_id,
                    deliveries.c.status == PENDING,
                    deliveries.c.next_attempt_at < until,
                    or_(
                        deliveries.c.lease_expires_at.is_(None),
                        deliveries.c.lease_expires_at < now,
                    ),
                )
                .values(next_attempt_at=until, status_reason=reason, updated_at=now)
            )
            return result.rowcount

    async def release_leases(self, owner: str, delivery_ids: Sequence[str]) -> None:
        """Hand claimed but unsent deliveries back (graceful shutdown)."""
        if not delivery_ids:
            return
        async with transaction(self.engine, "releasing leases") as conn:
            await conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.delivery_id.in_(delivery_ids), deliveries.c.lease_owner == owner
                )
                .values(lease_owner=None, lease_expires_at=None)
            )

    async def hold(self, webhook_ids: Sequence[str], reason: str, now: float) -> int:
        """Pending deliveries of disabled webhooks become held."""
        return await self._transition(webhook_ids, PENDING, HELD, reason, now)

    async def release_held(self, webhook_ids: Sequence[str], now: float) -> int:
        """Held deliveries of re-enabled webhooks are due again, with fresh attempts."""
        return await self._transition(webhook_ids, HELD, PENDING, None, now)

    async def fail_all(self, webhook_ids: Sequence[str], reason: str, now: float) -> int:
        """Pending and held deliveries of deleted webhooks are failed."""
        total = 0
        for status in (PENDING, HELD):
            total += await self._transition(webhook_ids, status, FAILED, reason, now)
        return total

    async def _transition(
        self, webhook_ids: Sequence[str], old: str, new: str, reason: str | None, now: float
    ) -> int:
        if not webhook_ids:
            return 0
        values: dict[str, Any] = {"status": new, "status_reason": reason, "updated_at": now}
        if new == PENDING:
            values |= {"cycle_attempts": 0, "next_attempt_at": now}
        count = 0
        async with transaction(self.engine, f"marking deliveries {new}") as conn:
            for start in range(0, len(webhook_ids), 500):
                chunk = list(webhook_ids[start : start + 500])
                result = await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.webhook_id.in_(chunk), deliveries.c.status == old)
                    .values(**values)
                )
                count += result.rowcount
        return count

    async def expire_held(self, created_before: float, reason: str, now: float) -> int:
        async with transaction(self.engine, "expiring held deliveries") as conn:
            result = await conn.execute(
                update(deliveries)
                .where(deliveries.c.status == HELD, deliveries.c.created_at < created_before)
                .values(status=FAILED, status_reason=reason, updated_at=now)
            )
            return result.rowcount

    async def requeue(
        self, project_id: str, delivery_id: str, status: str, reason: str | None, now: float
    ) -> bool:
        """Redeliver: due now with fresh attempts (or held); False if not found."""
        async with transaction(self.engine, "requeueing a delivery") as conn:
            result = await conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.delivery_id == delivery_id, deliveries.c.project_id == project_id
                )
                .values(
                    status=status,
                    status_reason=reason,
                    cycle_attempts=0,
                    next_attempt_at=now,
                    updated_at=now,
                )
            )
            return result.rowcount > 0

    async def counts(self) -> dict[str, int]:
        async with reading(self.engine, "counting deliveries") as conn:
            rows = await conn.execute(
                select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
            )
            found = {status: int(n) for status, n in rows}
        return {status: found.get(status, 0) for status in STATUSES}

    async def page(
        self, project_id: str, webhook_id: str, status: str, limit: int, before_seq: int | None
    ) -> tuple[list[Any], dict[str, list[Any]]]:
        """Deliveries of a webhook, newest first, with their attempt logs."""
        query = select(deliveries).where(
            deliveries.c.project_id == project_id, deliveries.c.webhook_id == webhook_id
        )
        if status:
            query = query.where(deliveries.c.status == status)
        if before_seq is not None:
            query = query.where(deliveries.c.seq < before_seq)
        query = query.order_by(deliveries.c.seq.desc()).limit(limit)
        async with reading(self.engine, "listing deliveries") as conn:
            rows = list((await conn.execute(query)).all())
            logs = await self._attempts(conn, [r.delivery_id for r in rows])
        return rows, logs

    async def one(self, project_id: str, delivery_id: str) -> tuple[Any, list[Any]] | None:
        async with reading(self.engine, "reading a delivery") as conn:
            row = (
                await conn.execute(
                    select(deliveries).where(
                        and_(
                            deliveries.c.delivery_id == delivery_id,
                            deliveries.c.project_id == project_id,
                        )
                    )
                )
            ).first()
            if row is None:
                return None
            logs = await self._attempts(conn, [delivery_id])
        return row, logs.get(delivery_id, [])

    @staticmethod
    async def _attempts(conn: Any, delivery_ids: list[str]) -> dict[str, list[Any]]:
        if not delivery_ids:
            return {}
        rows = await conn.execute(
            select(attempts)
            .where(attempts.c.delivery_id.in_(delivery_ids))
            .order_by(attempts.c.delivery_id, attempts.c.attempt)
        )
        logs: dict[str, list[Any]] = {}
        for row in rows:
            logs.setdefault(row.delivery_id, []).append(row)
        return logs


async def _lease(
    conn: AsyncConnection,
    owner: str,
    now: float,
    lease_seconds: float,
    limit: int,
    where: list[Any],
) -> list[Any]:
    """Lease up to `limit` due rows matching `where` (PostgreSQL: skipping rows
    other processes are leasing at this moment)."""
    due = (
        select(deliveries.c.seq)
        .where(
            deliveries.c.status == PENDING,
            deliveries.c.next_attempt_at <= now,
            or_(deliveries.c.lease_expires_at.is_(None), deliveries.c.lease_expires_at < now),
            *where,
        )
        .order_by(deliveries.c.next_attempt_at, deliveries.c.seq)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    leased = await conn.execute(
        update(deliveries)
        .where(deliveries.c.seq.in_(due.scalar_subquery()))
        .values(lease_owner=owner, lease_expires_at=now + lease_seconds)
        .returning(
            deliveries.c.seq,
            deliveries.c.delivery_id,
            deliveries.c.webhook_id,
            deliveries.c.event_id,
            deliveries.c.attempt_count,
            deliveries.c.cycle_attempts,
            deliveries.c.created_at,
            deliveries.c.project_id,
        )
    )
    return list(leased.all())


async def _with_payloads(conn: AsyncConnection, rows: list[Any]) -> list[Claimed]:
    """Leased rows, oldest first, with their events."""
    if not rows:
        return []
    payloads = dict(
        (
            await conn.execute(
                select(events.c.event_id, events.c.event).where(
                    events.c.event_id.in_({r.event_id for r in rows})
                )
            )
        ).all()
    )
    rows.sort(key=lambda r: r.seq)
    return [
        Claimed(
            r.seq,
            r.delivery_id,
            r.webhook_id,
            r.event_id,
            r.attempt_count,
            r.cycle_attempts,
            payloads[r.event_id],
            r.created_at,
            r.project_id,
        )
        for r in rows
    ]
