"""Outbox upkeep every few seconds: count deliveries by status (Publish's
backpressure and the queue metrics) and expire deliveries held too long."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from edgesense.common.config import Settings
from edgesense.common.errors import Unavailable
from edgesense.common.log_throttle import ThrottledLog
from edgesense.delivery import metrics
from edgesense.delivery.store.outbox import Outbox

log = logging.getLogger(__name__)
_problems = ThrottledLog(log)
COUNT_EVERY_SECONDS = 2.0
EXPIRE_EVERY_SECONDS = 60.0


def expiry_period(held_retention_seconds: float) -> float:
    """How often held deliveries are checked for expiry: every minute, or every
    half retention when that is shorter, so a delivery is not held much past its
    retention (checks run with the maintenance loop: at most every 2 s)."""
    return min(EXPIRE_EVERY_SECONDS, held_retention_seconds / 2)


async def maintain(
    outbox: Outbox, begin_pending_count: Callable[[], Callable[[int], None]], settings: Settings
) -> None:
    """Run until cancelled. `begin_pending_count` (`Acceptor.begin_pending_count`)
    is called before each count and returns what takes the pending count:
    Publish's backpressure. A round that fails (the database refusing it, or
    anything else: logged, throttled) is followed by the next one as usual."""
    last_expiry = 0.0
    expire_every = expiry_period(settings.held_retention_seconds)
    while True:
        try:
            pending_counted = begin_pending_count()
            counts = await outbox.counts()
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
        except Unavailable as exc:
            log.warning("outbox maintenance skipped: %s", exc.message)
        except Exception as exc:  # a bug: logged, and the next round is tried all the same
            _problems.exception(type(exc).__name__, "outbox maintenance failed unexpectedly")
        await asyncio.sleep(COUNT_EVERY_SECONDS)
