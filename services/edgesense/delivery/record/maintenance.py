"""Outbox upkeep every few seconds: count deliveries by status (Publish's
backpressure and the queue metrics), expire deliveries held too long,
delete what ended longer ago than the retention, and unpark the parked
deliveries of ordered webhooks left with nothing before them (rows.PARKED_AT).
Beside it, once at start, `build_indexes_until_done` builds PostgreSQL's
online indexes (store/online_indexes.py) while the service serves;
retention, whose deletes read through three of them, waits until they are
built (no wait on a new or up-to-date database, minutes after an upgrade
that adds one to a large table), for RETENTION_WAITS_AT_MOST_SECONDS at
most: a build that cannot finish (a failing database, a transaction that
never ends) must not stop the outbox from shrinking."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from edgesense.common.backoff import backoff_ceiling
from edgesense.common.config import Settings
from edgesense.common.errors import Unavailable
from edgesense.common.log_throttle import ThrottledLog
from edgesense.delivery import metrics
from edgesense.delivery.store.outbox import Outbox
from edgesense.delivery.store.rows import RETENTION_BATCH, Deleted

log = logging.getLogger(__name__)
_problems = ThrottledLog(log)
COUNT_EVERY_SECONDS = 2.0
EXPIRE_EVERY_SECONDS = 60.0
RETAIN_EVERY_SECONDS = 10.0
# The safety net for parked deliveries (a store and an end that committed at
# the same moment on PostgreSQL): such a delivery waits this long at most.
UNPARK_EVERY_SECONDS = COUNT_EVERY_SECONDS
# Retention deletes at most this many batches (of RETENTION_BATCH deliveries)
# per round, each its own transaction: a large backlog of old rows (the first
# start after a long time, a retention shortened) is deleted over several
# rounds, and counting and expiry still run every round meanwhile.
RETENTION_ROUND_BATCHES = 10
# How often `build_indexes_until_done` asks again while another process
# holds the build's lock; after failed builds, twice as long each time, up
# to INDEX_RETRY_MAX_SECONDS.
INDEX_RETRY_SECONDS = 30.0
INDEX_RETRY_MAX_SECONDS = 600.0
RETENTION_WAITS_AT_MOST_SECONDS = 3600.0


def expiry_period(held_retention_seconds: float) -> float:
    """How often held deliveries are checked for expiry: every minute, or every
    half retention when that is shorter, so a delivery is not held much past its
    retention (checks run with the maintenance loop: at most every 2 s)."""
    return min(EXPIRE_EVERY_SECONDS, held_retention_seconds / 2)


def retention_period(retention_seconds: float) -> float:
    """How often retention runs while it has no backlog: every 10 s, or every
    half retention when that is shorter (at most every round, 2 s)."""
    return min(RETAIN_EVERY_SECONDS, retention_seconds / 2)


async def apply_retention(
    outbox: Outbox,
    ended_before: float,
    batches: int = RETENTION_ROUND_BATCHES,
    batch: int = RETENTION_BATCH,
) -> tuple[Deleted, bool]:
    """Delete deliveries that ended before `ended_before` with their attempts,
    and the events no delivery refers to any more, in up to `batches`
    transactions of up to `batch` deliveries (and `batch` events); and, in
    transactions of their own, up to `batch` alerts resolved before then
    and up to `batch` devices last seen before then each, until none is left.

    Answers what was deleted (deliveries, attempts, events), and whether
    rows may be left (the last batch was full). Each batch is counted in
    edgesense_retention_deleted_total as soon as it is committed.
    """
    totals = [0, 0, 0]
    alerts_left = True  # alerts resolved before `ended_before` may be left
    devices_left = True  # devices last seen before `ended_before` may be left
    for _ in range(batches):
        if alerts_left:
            alerts = await outbox.delete_resolved_alerts(ended_before, batch)
            if alerts:
                metrics.RETENTION_DELETED.labels("alerts").inc(alerts)
            alerts_left = alerts >= batch
        if devices_left:
            devices = await outbox.devices.delete_stale(ended_before, batch)
            if devices:
                metrics.RETENTION_DELETED.labels("devices").inc(devices)
            devices_left = devices >= batch
        done = await outbox.delete_ended(ended_before, batch)
        for kind, count in zip(("deliveries", "attempts", "events"), done, strict=True):
            if count:
                metrics.RETENTION_DELETED.labels(kind).inc(count)
        totals = [total + count for total, count in zip(totals, done, strict=True)]
        if done.deliveries < batch and done.events < batch and not (alerts_left or devices_left):
            return Deleted(*totals), False
    return Deleted(*totals), True


async def maintain(
    outbox: Outbox,
    begin_pending_count: Callable[[], Callable[[int], None]],
    settings: Settings,
    indexes_built: asyncio.Event | None = None,
) -> None:
    """Run until cancelled. `begin_pending_count` (`Acceptor.begin_pending_count`)
    is called before each count and returns what takes the pending count:
    Publish's backpressure. Retention runs once `indexes_built` is set (if
    given). A round that fails (the database refusing it, or anything else:
    logged, throttled) is followed by the next one as usual."""
    last_expiry = last_retention = last_unpark = 0.0
    started = time.time()
    told_waiting = told_not_waiting = False  # retention and the indexes, each said once
    backlog = False  # the last retention round left rows: the next round goes on
    expire_every = expiry_period(settings.held_retention_seconds)
    retain_every = retention_period(settings.retention_seconds)
    while True:
        try:
            pending_counted = begin_pending_count()
            counts = await outbox.waiting_counts()
            pending_counted(counts["pending"])
            metrics.QUEUE_DEPTH.set(counts["pending"])
            metrics.HELD.set(counts["held"])
            now = time.time()
            if now - last_expiry >= expire_every:
                last_expiry = now
                hours = settings.held_retention_seconds / 3600
                expired = await outbox.expire_held(
                    now - settings.held_retention_seconds,
                    f"expired: held longer than {hours:g} h",
                    now,
                )
                if expired:
                    metrics.DELIVERIES.labels("expired").inc(expired)
                    log.warning("%d held deliveries expired after %g h", expired, hours)
            if now - last_unpark >= UNPARK_EVERY_SECONDS:
                last_unpark = now
                unparked = await outbox.unpark_orphans(now)
                if unparked:
                    log.info("%d parked deliveries of ordered webhooks were due", unparked)
            indexed = indexes_built is None or indexes_built.is_set()
            if not indexed and now - started < RETENTION_WAITS_AT_MOST_SECONDS:
                if not told_waiting:
                    told_waiting = True
                    log.info("retention waits until the outbox's online indexes are built")
            elif not indexed:
                indexed = True  # waited long enough
                if not told_not_waiting:
                    told_not_waiting = True
                    log.warning(
                        "retention runs without the outbox's online indexes, still not built"
                        " after %.0f s (edgesense_outbox_indexes_built)",
                        RETENTION_WAITS_AT_MOST_SECONDS,
                    )
            if indexed and (backlog or now - last_retention >= retain_every):
                last_retention = now
                deleted, backlog = await apply_retention(outbox, now - settings.retention_seconds)
                if any(deleted):
                    log.debug(
                        "retention deleted %d deliveries, %d attempts, %d events",
                        *deleted,
                    )
        except Unavailable as exc:
            log.warning("outbox maintenance skipped: %s", exc.message)
        except Exception as exc:  # a bug: logged, and the next round is tried all the same
            _problems.exception(type(exc).__name__, "outbox maintenance failed unexpectedly")
        await asyncio.sleep(COUNT_EVERY_SECONDS)


async def build_indexes_until_done(
    outbox: Outbox,
    built: asyncio.Event,
    retry_seconds: float = INDEX_RETRY_SECONDS,
    retry_max_seconds: float = INDEX_RETRY_MAX_SECONDS,
) -> None:
    """Build the outbox's online indexes (Outbox.build_indexes), set `built`
    and return once they are all there. While another process holds the
    build's lock, ask again every `retry_seconds`: the indexes get built
    even if the process that had the lock died. After a build the database
    failed (logged; what it left invalid is rebuilt), wait twice as long as
    after the previous failure, up to `retry_max_seconds` (`retry_delay`),
    and as long while other processes answer "taken". Cancelled at
    stop: a build cut short leaves an invalid index, which the next start
    rebuilds."""
    metrics.INDEXES_BUILT.set(0)
    waiting_logged = False
    failures = 0  # in a row; a "taken" answer keeps the count (another process may fail too)
    while True:
        try:
            if await outbox.build_indexes():
                if waiting_logged:
                    log.info("outbox: the online indexes are built")
                metrics.INDEXES_BUILT.set(1)
                built.set()
                return
            if not waiting_logged:
                log.info("outbox: another delivery process is building the online indexes")
                waiting_logged = True
        except Unavailable as exc:
            failures += 1
            _problems.warning(
                ("indexes", "unavailable"),
                "outbox: building the online indexes failed (%d in a row): %s",
                failures,
                exc,
            )
            waiting_logged = True
        except Exception as exc:  # a bug: logged, and tried again all the same
            failures += 1
            _problems.exception(
                ("indexes", type(exc).__name__), "outbox: building the indexes failed"
            )
        await asyncio.sleep(retry_delay(failures, retry_seconds, retry_max_seconds))


def retry_delay(failures: int, base_seconds: float, max_seconds: float) -> float:
    """`base_seconds` after no failure, then twice as long after each failure
    in a row, up to `max_seconds`; no jitter."""
    return backoff_ceiling(max(1, failures), base_seconds, max_seconds)
