"""Record: write attempts' outcomes back to the outbox, in batches.

Outcomes are not on the latency path (the POST already happened), so they
gather for a moment into fewer, larger writes. After a batch is written, its
deliveries are counted in the metrics, a delivery that used up its attempts
is reported (the reconciler then disables its webhook), and the dispatcher is
woken when the earliest retry of the batch is due. A write the database
refuses (Unavailable) is tried again a second later; an outcome is written
by its lease holder only (see outbox), so it is never applied twice.

Once a batch is written, what follows cannot undo it: metrics and the retry
wake come first, and each exhausted delivery is reported on its own, so one
report that fails (the database refusing the hold) neither skips the others
nor queues the written batch again. Nothing but cancellation ends run(): an
unexpected error is logged (throttled) and the writer carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from edgesense.common.errors import Unavailable
from edgesense.common.log_throttle import ThrottledLog
from edgesense.delivery import metrics
from edgesense.delivery.store.outbox import Outbox
from edgesense.delivery.store.rows import FAILED, PENDING, Outcome
from edgesense.delivery.webhooks.index import Target

log = logging.getLogger(__name__)
_problems = ThrottledLog(log)

LINGER_SECONDS = 0.02
ExhaustedHandler = Callable[[Target, Outcome], Awaitable[None]]


class OutcomeWriter:
    def __init__(
        self,
        outbox: Outbox,
        owner: str,
        *,
        on_exhausted: ExhaustedHandler,
        on_retry_due: Callable[[], None],
    ) -> None:
        self.outbox = outbox
        self.owner = owner
        self._on_exhausted = on_exhausted
        self._on_retry_due = on_retry_due
        self._batch: list[tuple[Outcome, Target | None]] = []
        # Set while run() waits for a first outcome: add() wakes it (a bare
        # future rather than an Event, so add() costs no further call).
        self._waiter: asyncio.Future[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()

    def add(self, outcome: Outcome, target: Target | None) -> None:
        """An attempt's outcome (`target`: its webhook, if still known), to write soon."""
        self._batch.append((outcome, target))
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def run(self) -> None:
        """Write outcomes as they come, until cancelled (then see `close`)."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._batch:
                self._waiter = loop.create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            await asyncio.sleep(LINGER_SECONDS)  # let a batch gather
            try:
                await self.flush()
            except Unavailable as exc:
                _problems.warning(
                    "unavailable",
                    "cannot record delivery outcomes: %s; retrying in 1 s",
                    exc.message,
                )
                await asyncio.sleep(1)
            except Exception as exc:  # a bug: keep recording, never stop silently
                _problems.exception(
                    ("flush", type(exc)), "recording delivery outcomes failed; retrying in 1 s"
                )
                await asyncio.sleep(1)

    async def close(self, running: asyncio.Task[None], grace: float) -> None:
        """Stop `running` (this writer's run()), give the writes under way up to
        `grace` seconds to end, and write what is left (Unavailable if the
        database refuses it)."""
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        if self._writes:
            await asyncio.wait(self._writes, timeout=grace)
        await self.flush()

    async def flush(self) -> None:
        """Write every outcome added so far (Unavailable: they stay, for the next)."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        # Shielded: once handed to the database the write goes on even if this
        # task is cancelled (at shutdown), and is not queued again, which
        # would log its attempts twice.
        record = self.outbox.record(self.owner, [o for o, _ in batch], time.time())
        self._writes.add(writing := asyncio.create_task(record))
        writing.add_done_callback(self._writes.discard)
        try:
            await asyncio.shield(writing)
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._batch[:0] = batch
            raise
        earliest: float | None = None
        exhausted: list[tuple[Target, Outcome]] = []
        for outcome, target in batch:
            metrics.DELIVERIES.labels(_label(outcome)).inc()
            if outcome.status == PENDING:
                earliest = (
                    outcome.next_attempt_at
                    if earliest is None
                    else min(earliest, outcome.next_attempt_at)
                )
            elif outcome.status == FAILED and outcome.attempt > 0 and target is not None:
                exhausted.append((target, outcome))
        if earliest is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(max(0.0, earliest - time.time()), self._on_retry_due)
        for target, outcome in exhausted:
            try:
                await self._on_exhausted(target, outcome)
            except Unavailable as exc:
                # Written as failed all the same; the webhook's other
                # deliveries are held when the registry's disable comes back.
                _problems.warning(
                    ("exhausted", "unavailable"),
                    "delivery %s failed, but holding webhook %s's deliveries did not: %s",
                    outcome.delivery_id,
                    target.webhook_id,
                    exc.message,
                )
            except Exception as exc:
                _problems.exception(
                    ("exhausted", type(exc)),
                    "reporting failed delivery %s of webhook %s went wrong",
                    outcome.delivery_id,
                    target.webhook_id,
                )


def _label(outcome: Outcome) -> str:
    if outcome.status == PENDING:
        return "retried" if outcome.attempt else "deferred"
    return outcome.status
