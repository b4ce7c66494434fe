"""The outbox's reads, the same on both databases: SQLAlchemy on the engine.

They are not on the hot path (the maintenance loop counts every 2 s; the
listings serve the API), so one SQLAlchemy version serves SQLite and
PostgreSQL. On SQLite they use the engine's aiosqlite connections beside the
writer thread's own connection (see `outbox_sqlite`): the database is in WAL
mode and `reading` does not take the write lock, so a reader sees a snapshot
and neither waits for the writer nor makes it wait.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from edgesense.delivery.store.rows import STATUSES
from edgesense.delivery.store.tables import attempts, deliveries
from edgesense.storage.engine import dispose_engine, reading


class OutboxReads:
    """Counts and listings of the outbox, and the engine they read through (owned:
    `close` disposes it)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def close(self) -> None:
        await dispose_engine(self.engine)

    async def counts(self) -> dict[str, int]:
        """Deliveries by status, every status present."""
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
            logs = await _attempts(conn, [r.delivery_id for r in rows])
        return rows, logs

    async def one(self, project_id: str, delivery_id: str) -> tuple[Any, list[Any]] | None:
        """A delivery of the project and its attempt log; None if there is none."""
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
            logs = await _attempts(conn, [delivery_id])
        return row, logs.get(delivery_id, [])


async def _attempts(conn: Any, delivery_ids: list[str]) -> dict[str, list[Any]]:
    """The attempt logs of `delivery_ids`, one page's deliveries: an `IN (…)`
    list of at most a few hundred ids (the API's page size), far below either
    driver's limit on parameters."""
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
