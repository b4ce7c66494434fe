"""The outbox's reads, the same on both databases: SQLAlchemy on the engine.

They are not on the hot path (the maintenance loop counts every 2 s; the
listings serve the API), so one SQLAlchemy version serves SQLite and
PostgreSQL. On SQLite they use the engine's aiosqlite connections beside the
writer thread's own connection (see `outbox_sqlite`): the database is in WAL
mode and `reading` does not take the write lock, so a reader sees a snapshot
and neither waits for the writer nor makes it wait.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    case,
    cast,
    func,
    literal_column,
    null,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from edgesense.delivery.rules.alerts import ActiveAlert
from edgesense.delivery.store.online_indexes import ensure_online_indexes
from edgesense.delivery.store.rows import (
    FAILED,
    HELD,
    RECOVER_CHUNK,
    RECOVER_LIMIT,
    STATUSES,
    WAITING,
    DeliveryStats,
    Recovered,
    RecoverWindow,
    StatsBucket,
    ranked_durations,
)
from edgesense.delivery.store.tables import alerts, attempts, deliveries, events, rule_states
from edgesense.storage.engine import dispose_engine, reading

# An active alert, written as the partial index ix_alerts_active's own
# condition: SQLite uses a partial index only for a literal, not a parameter.
_ACTIVE = alerts.c.state == literal_column("'active'")
MAX_RULES_READ = 500


def status_in(statuses: Sequence[str]) -> ColumnElement[bool]:
    """`deliveries.status IN (...)` with the statuses as literals, as the
    partial indexes' conditions are written: PostgreSQL uses a partial index
    for a parameter only in a plan made for its value (online_indexes.py).
    Only our own status names are written into the SQL."""
    unknown = set(statuses) - set(STATUSES)
    if unknown:
        raise ValueError(f"not delivery statuses: {sorted(unknown)}")
    return deliveries.c.status.in_([literal_column(f"'{status}'") for status in statuses])


def counts_query(statuses: Sequence[str] | None = None) -> Select[Any]:
    """Deliveries counted by status: every status, or only `statuses`."""
    query = select(deliveries.c.status, func.count())
    if statuses is not None:
        query = query.where(status_in(statuses))
    return query.group_by(deliveries.c.status)


# Deliveries waiting to be sent, counted by status (OutboxReads.waiting_counts).
WAITING_COUNTS = counts_query(WAITING)


class OutboxReads:
    """Counts and listings of the outbox, and the engine they read through (owned:
    `close` disposes it; `build_indexes` builds PostgreSQL's online indexes
    with it); and recover's chunks, the same loop on both engines
    around each engine's `_recover_chunk`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def close(self) -> None:
        await dispose_engine(self.engine)

    async def build_indexes(self) -> bool:
        return await ensure_online_indexes(self.engine)

    async def counts(self) -> dict[str, int]:
        """Deliveries by status, every status present."""
        return await self._counts(counts_query(), STATUSES, "counting deliveries")

    async def waiting_counts(self) -> dict[str, int]:
        """Pending and held deliveries: what the maintenance loop reports every
        2 s. Only those statuses are read (a range of ix_deliveries_due, which
        leads with the status; on PostgreSQL ix_deliveries_waiting, which
        holds only them), so the cost follows the backlog, not the history:
        counting every status read every delivery kept (at 1,000
        deliveries/s for 7 days of retention, 600 million) at every round."""
        return await self._counts(WAITING_COUNTS, WAITING, "counting waiting deliveries")

    async def _counts(
        self, query: Select[Any], statuses: Sequence[str], doing: str
    ) -> dict[str, int]:
        async with reading(self.engine, doing) as conn:
            found = {status: int(n) for status, n in await conn.execute(query)}
        return {status: found.get(status, 0) for status in statuses}

    async def page(
        self, project_id: str, webhook_id: str, status: str, limit: int, before_seq: int | None
    ) -> tuple[list[Any], dict[str, list[Any]]]:
        """Deliveries of a webhook, newest first, with their attempt logs."""
        query = select(deliveries).where(
            deliveries.c.project_id == project_id, deliveries.c.webhook_id == webhook_id
        )
        if status:
            query = query.where(status_in([status]))
        if before_seq is not None:
            query = query.where(deliveries.c.seq < before_seq)
        query = query.order_by(deliveries.c.seq.desc()).limit(limit)
        async with reading(self.engine, "listing deliveries") as conn:
            rows = list((await conn.execute(query)).all())
            logs = await _attempts(conn, [r.delivery_id for r in rows])
        return rows, logs

    async def alert_page(
        self,
        project_id: str,
        state: str,
        rule_id: str,
        device_id: str,
        limit: int,
        before_seq: int | None,
    ) -> list[Any]:
        """Alerts of the project, newest first, filtered (an empty filter: any)."""
        query = select(alerts).where(alerts.c.project_id == project_id)
        for column, wanted in (
            (alerts.c.state, state),
            (alerts.c.rule_id, rule_id),
            (alerts.c.device_id, device_id),
        ):
            if wanted:
                query = query.where(column == wanted)
        if before_seq is not None:
            query = query.where(alerts.c.seq < before_seq)
        query = query.order_by(alerts.c.seq.desc()).limit(limit)
        async with reading(self.engine, "listing alerts") as conn:
            return list((await conn.execute(query)).all())

    async def alerting(self) -> set[str]:
        """The rules with active alerts (ix_alerts_active)."""
        query = select(alerts.c.rule_id).where(_ACTIVE).distinct()
        async with reading(self.engine, "reading active alerts") as conn:
            return {rule_id for (rule_id,) in await conn.execute(query)}

    async def judged_rules(self) -> set[str]:
        """The rules with (rule, device) states (their primary key's prefix)."""
        query = select(rule_states.c.rule_id).distinct()
        async with reading(self.engine, "reading rule states") as conn:
            return {rule_id for (rule_id,) in await conn.execute(query)}

    async def active_alerts(
        self, rule_ids: Sequence[str], after_seq: int, limit: int
    ) -> list[ActiveAlert]:
        """Up to `limit` active alerts of these rules (at most 500 of them)
        after `after_seq`, by seq (ix_alerts_active)."""
        assert len(rule_ids) <= MAX_RULES_READ, "read active alerts of 500 rules at most"
        query = (
            select(*(alerts.c[name] for name in ActiveAlert._fields))
            .where(_ACTIVE, alerts.c.rule_id.in_(rule_ids), alerts.c.seq > after_seq)
            .order_by(alerts.c.seq)
            .limit(limit)
        )
        async with reading(self.engine, "reading active alerts") as conn:
            return [ActiveAlert(*row) for row in await conn.execute(query)]

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
        """See Outbox.recover: chunks of RECOVER_CHUNK, each its own transaction."""
        window = RecoverWindow(project_id, webhook_id, since, until, status, reason, now)
        count = 0
        while count < limit:
            size = min(RECOVER_CHUNK, limit - count)
            changed = await self._recover_chunk(window, size)
            count += changed
            if changed < size:
                return Recovered(count, None)
        return Recovered(count, await self.oldest_failed(project_id, webhook_id, since, until))

    async def _recover_chunk(self, window: RecoverWindow, size: int) -> int:
        """Up to `size` of the window's failed deliveries, those that failed
        first, made due again in one transaction; how many."""
        raise NotImplementedError

    async def oldest_failed(
        self, project_id: str, webhook_id: str, since: float, until: float
    ) -> float | None:
        """When the webhook's delivery that failed first in [since, until)
        failed; None if none is failed there."""
        query = (
            select(deliveries.c.updated_at)
            .where(*_failed_in(project_id, webhook_id, since, until))
            .order_by(deliveries.c.updated_at, deliveries.c.seq)
            .limit(1)
        )
        async with reading(self.engine, "reading failed deliveries") as conn:
            found = (await conn.execute(query)).scalar()
        return None if found is None else float(found)

    async def stats(
        self,
        project_id: str,
        webhook_ids: Sequence[str],
        since: float,
        until: float,
        bucket_seconds: float,
        percentiles: Sequence[int],
        bucket_percentiles: Sequence[int] = (),
    ) -> DeliveryStats:
        """See Outbox.stats: two grouped reads of the window's rows.

        The deliveries by status; and their attempts, joined once and
        grouped by bucket, each bucket's durations and the window's ranked
        in the database (nearest rank, exactly): one row per bucket and one
        for the window (PostgreSQL) or per duration (SQLite), never one per
        attempt. See _postgres_grouped and _sqlite_grouped. On PostgreSQL
        without JIT compilation (it cost more than it saved on these reads,
        about 70 ms each).
        """
        if not webhook_ids:
            return DeliveryStats(dict.fromkeys(STATUSES, 0), [], {}, 0, 0)
        d, a = deliveries, attempts
        cohort = (
            d.c.project_id == project_id,
            _one_of(d.c.webhook_id, webhook_ids),
            d.c.created_at >= since,
            d.c.created_at < until,
        )
        joined = a.join(d, a.c.delivery_id == d.c.delivery_id)
        started = (*cohort, a.c.started_at >= since, a.c.started_at < until)
        ok = and_(a.c.error.is_(None), func.coalesce(a.c.status_code, 0).between(200, 299))
        last = and_(a.c.attempt == d.c.attempt_count, d.c.status == FAILED)
        window = select().select_from(joined).where(*started)
        offset = (a.c.started_at - since) / float(bucket_seconds)
        postgres = self.engine.dialect.name == "postgresql"
        # Percentiles asked for, of the window and of each bucket.
        ranked = sorted({*percentiles, *bucket_percentiles})
        grouped = (_postgres_grouped if postgres else _sqlite_grouped)(
            window, _sums(ok, last), offset, ranked
        )
        async with reading(self.engine, "counting deliveries for stats") as conn:
            if postgres:
                await conn.execute(text("SET LOCAL jit = off"))
            counted = await conn.execute(
                select(d.c.status, func.count()).where(*cohort).group_by(d.c.status)
            )
            by_status: dict[str, int] = {status: int(n) for status, n in counted}
            buckets: list[StatsBucket] = []
            whole: dict[int, int] = {}
            histogram: list[tuple[int, int]] = []
            for at, ms, ok_n, retried, failed, n, *ranks in await conn.execute(grouped):
                if not n:  # PostgreSQL: the window's row, without attempts
                    continue
                if postgres and ranks:  # one array of them
                    ranks = ranks[0]
                found = {p: int(v) for p, v in zip(ranked, ranks, strict=True) if v is not None}
                if at is not None:
                    kept = {p: found[p] for p in bucket_percentiles}
                    buckets.append(StatsBucket(int(at), int(ok_n), int(retried), int(failed), kept))
                elif ms is not None:  # SQLite: the window's histogram
                    histogram.append((int(ms), int(n)))
                else:  # PostgreSQL: the window's row
                    whole = {p: found[p] for p in percentiles}
        buckets.sort(key=lambda b: b.bucket)
        total = sum(b.succeeded + b.retried + b.failed for b in buckets)
        if not postgres:
            whole = ranked_durations(sorted(histogram), total, percentiles)
        return DeliveryStats(
            counts={status: int(by_status.get(status, 0)) for status in STATUSES},
            buckets=buckets,
            durations=whole,
            attempts=total,
            attempts_succeeded=sum(b.succeeded for b in buckets),
        )

    async def held_count(self, project_id: str, webhook_ids: Sequence[str]) -> int:
        """See Outbox.held_count."""
        if not webhook_ids:
            return 0
        query = select(func.count()).where(
            _one_of(deliveries.c.webhook_id, webhook_ids),
            status_in([HELD]),
            deliveries.c.project_id == project_id,
        )
        async with reading(self.engine, "counting held deliveries") as conn:
            return int((await conn.execute(query)).scalar() or 0)

    async def active_alert_count(self, project_id: str) -> int:
        """See Outbox.active_alert_count."""
        query = select(func.count()).where(_ACTIVE, alerts.c.project_id == project_id)
        async with reading(self.engine, "counting active alerts") as conn:
            return int((await conn.execute(query)).scalar() or 0)

    async def event(self, project_id: str, event_id: str) -> bytes | None:
        """See Outbox.event."""
        query = select(events.c.event).where(
            events.c.event_id == event_id, events.c.project_id == project_id
        )
        async with reading(self.engine, "reading an event") as conn:
            found = (await conn.execute(query)).scalar()
        return None if found is None else bytes(found)


def _sums(ok: Any, last: Any) -> tuple[Any, ...]:
    """A group of attempts' succeeded, retried and failed counts."""
    return (
        func.sum(case((ok, 1), else_=0)),
        func.sum(case((ok, 0), (last, 0), else_=1)),
        func.sum(case((ok, 0), (last, 1), else_=0)),
    )


def _postgres_grouped(
    window: Select[Any], sums: Sequence[Any], offset: Any, ranked: Sequence[int]
) -> Select[Any]:
    """The window's attempts grouped by bucket, and all of them (ROLLUP: one
    sort by bucket makes both): (bucket, None, succeeded, retried, failed,
    count, [durations at `ranked`]), and the same with bucket None for the
    whole window; no array without `ranked`.

    The percentiles are percentile_disc's, which is nearest rank: the value
    at rank ceil(p/100 * count). The float product is exact enough: for p
    50, 95 and 99 it equals the integer ceil(p * count / 100) for every
    count to 5,000,000 (checked), and the tests compare with a sort. What it
    costs beside the grouping it replaced (GROUPING SETS by bucket and by
    duration, the window's histogram ranked in Python): README, "Project
    stats".
    """
    bucket = func.floor(offset)  # offset >= 0 (started_at >= since)
    duration = attempts.c.duration_ms
    fractions = postgresql.array([p / 100 for p in ranked])
    ranks = [func.percentile_disc(fractions).within_group(duration)] if ranked else []
    return window.add_columns(bucket, null(), *sums, func.count(), *ranks).group_by(
        func.rollup(bucket)
    )


def _sqlite_grouped(
    window: Select[Any], sums: Sequence[Any], offset: Any, ranked: Sequence[int]
) -> Any:
    """As _postgres_grouped on SQLite, which has neither ROLLUP nor
    percentile_disc, each percentile its own column: the attempts grouped by
    (bucket, duration) once (a CTE), a running count over each bucket's
    durations (a window function) ranking its percentiles exactly (nearest
    rank: the shortest duration with rank ceil(p * total / 100) or less, in
    integers); and instead of the window's row, the window's histogram, the
    buckets' rows summed by duration (None, duration, _, _, _, count, _):
    durations are whole milliseconds, so there are at most a few thousand
    of them, and rows.ranked_durations ranks the window's percentiles in it.
    """
    at = cast(offset, Integer)  # offset >= 0, so truncating is flooring
    ms = attempts.c.duration_ms
    count = func.count()
    succeeded, retried, failed = sums
    h = (
        window.add_columns(
            at.label("bucket"),
            ms.label("duration"),
            succeeded.label("succeeded"),
            retried.label("retried"),
            failed.label("failed"),
            count.label("n"),
            # The bucket's attempts this long or shorter, and all of them.
            func.sum(count).over(partition_by=at, order_by=ms, rows=(None, 0)).label("up_to"),
            func.sum(count).over(partition_by=at).label("total"),
        )
        .group_by(at, ms)
        .cte("histogram")
        .c
    )
    ranks = (func.min(case((h.up_to * 100 >= h.total * p, h.duration))) for p in ranked)
    totals = (func.sum(h.succeeded), func.sum(h.retried), func.sum(h.failed), func.sum(h.n))
    nothing = (null() for _ in ranked)
    return union_all(
        select(h.bucket, null(), *totals, *ranks).group_by(h.bucket),
        select(null(), h.duration, null(), null(), null(), func.sum(h.n), *nothing).group_by(
            h.duration
        ),
    )


def _one_of(column: Any, values: Sequence[str]) -> Any:
    """`column = value` for one value (as the single-webhook reads always
    were), else `column IN (values)`."""
    return column == values[0] if len(values) == 1 else column.in_(values)


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


def _failed_in(project_id: str, webhook_id: str, since: float, until: float) -> tuple[Any, ...]:
    """The webhook's failed deliveries that failed in [since, until). The
    status is a literal, so that the planner may use the partial index
    ix_deliveries_webhook_failed."""
    return (
        deliveries.c.webhook_id == webhook_id,
        deliveries.c.status == literal_column(f"'{FAILED}'"),
        deliveries.c.updated_at >= since,
        deliveries.c.updated_at < until,
        deliveries.c.project_id == project_id,
    )
