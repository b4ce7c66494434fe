"""Record: write attempts' outcomes back to the outbox, in batches.

Outcomes are not on the latency path (the POST already happened), so they
gather for a moment into fewer, larger writes. After a batch is written, its
deliveries are counted in the metrics, a delivery that used up its attempts
is reported (the reconciler then disables its webhook; a test send's
delivery is never reported), the dispatcher is woken when the earliest
retry of the batch is due, and it is told which ordered webhooks had a
delivery end (`on_order_released`): each such end lets that device's next
delivery be claimed (store/rows.py ORDERED_HEAD), which a refill of the
webhook then does at once rather than at the next idle poll. A write the
database refuses (Unavailable: the outbox raises it for every error the
database reports, see outbox) is tried again a second later, whole; an
outcome is written by its lease holder only (see outbox), so it is never
applied twice.

A batch that fails otherwise (a bug, an error of the driver's that the
outbox does not map) is written again one outcome at a time, so that one
outcome that can never be written does not block every later one: those that
fail on their own too are logged (throttled) and dropped. A dropped outcome's
delivery stays leased, its attempt unrecorded; once the lease expires it is
claimed and sent again (a duplicate, never a loss).

Once a batch is written, what follows cannot undo it: metrics and the retry
wake come first, and each exhausted delivery is reported on its own, so one
report that fails (the database refusing the hold) neither skips the others
nor queues the written batch again. Nothing but close() (or cancellation)
ends run(): an unexpected error is logged (throttled) and the writer carries
on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from edgesense.common.errors import Unavailable
from edgesense.common.log_throttle import ThrottledLog
from edgesense.delivery import metrics
from edgesense.delivery.store.outbox import Outbox
from edgesense.delivery.store.rows import (
    ENDED,
    FAILED,
    PENDING,
    Outcome,
    is_test_delivery,
)
from edgesense.delivery.webhooks.index import Target

log = logging.getLogger(__name__)
_problems = ThrottledLog(log)

LINGER_SECONDS = 0.02
RETRY_SECONDS = 1.0
ExhaustedHandler = Callable[[Target, Outcome], Awaitable[None]]
Batch = list[tuple[Outcome, Target | None]]


class OutcomeWriter:
    def __init__(
        self,
        outbox: Outbox,
        owner: str,
        *,
        on_exhausted: ExhaustedHandler,
        on_retry_due: Callable[[], None],
        on_order_released: Callable[[Iterable[tuple[str, str]]], None] = lambda _: None,
    ) -> None:
        self.outbox = outbox
        self.owner = owner
        self._on_exhausted = on_exhausted
        self._on_retry_due = on_retry_due
        self._on_order_released = on_order_released
        self._batch: Batch = []
        # Set while run() waits for a first outcome: add() wakes it (a bare
        # future rather than an Event, so add() costs no further call).
        self._waiter: asyncio.Future[None] | None = None
        self._closing = asyncio.Event()
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
        """Write outcomes as they come, until close() (see there)."""
        loop = asyncio.get_running_loop()
        closing = self._closing
        while not closing.is_set():
            if not self._batch:
                self._waiter = loop.create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
                if closing.is_set():
                    return  # close() writes what came meanwhile
            await asyncio.sleep(LINGER_SECONDS)  # let a batch gather
            try:
                await self.flush()
            except Unavailable as exc:
                _problems.warning(
                    "unavailable",
                    "cannot record delivery outcomes: %s; retrying in %g s",
                    exc.message,
                    RETRY_SECONDS,
                )
                await self._pause()
            except Exception as exc:  # a bug: keep recording, never stop silently
                _problems.exception(
                    ("flush", type(exc)),
                    "recording delivery outcomes failed; retrying in %g s",
                    RETRY_SECONDS,
                )
                await self._pause()

    async def _pause(self) -> None:
        """RETRY_SECONDS before the next write, or until close()."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), RETRY_SECONDS)

    async def close(self, running: asyncio.Task[None], grace: float) -> None:
        """Stop `running` (this writer's run()) and write what is left.

        run() is asked to stop, and given up to `grace` seconds to finish the
        flush under way (its write and what follows it: metrics, the retry
        wake, the reports); only then is it cancelled, and a write it had
        handed to the database given what is left of `grace` to end. Then
        what is left is written, and acted on, here: Unavailable if the
        database refuses it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        self._closing.set()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        await asyncio.wait([running], timeout=grace)
        if not running.done():
            running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        if self._writes:
            await asyncio.wait(self._writes, timeout=max(0.0, deadline - loop.time()))
        await self.flush()

    async def flush(self) -> None:
        """Write every outcome added so far, then act on those written.

        Unavailable: the outcomes not written stay, for the next flush (after
        those that were written are acted on). Another error writing the
        batch: one at a time, as the module docstring says.
        """
        batch, self._batch = self._batch, []
        if not batch:
            return
        refused: Unavailable | None = None
        singly = False
        try:
            await self._write(batch)
        except Unavailable:
            self._batch[:0] = batch
            raise
        except Exception as exc:
            _problems.exception(
                ("batch", type(exc)),
                "recording %d delivery outcomes failed; writing them one at a time",
                len(batch),
            )
            singly = True
        if singly:
            batch, refused = await self._write_singly(batch)
        earliest: float | None = None
        exhausted: list[tuple[Target, Outcome]] = []
        released: set[tuple[str, str]] = set()
        for outcome, target in batch:
            metrics.DELIVERIES.labels(_label(outcome)).inc()
            status = outcome.status
            if status == PENDING:
                earliest = (
                    outcome.next_attempt_at
                    if earliest is None
                    else min(earliest, outcome.next_attempt_at)
                )
                continue
            if target is None:
                continue
            if (target.ordered or outcome.keyed) and status in ENDED:
                released.add((target.project_id, target.webhook_id))
            if (
                status == FAILED
                and outcome.attempt > 0
                and not is_test_delivery(outcome.delivery_id)  # a test never disables
            ):
                exhausted.append((target, outcome))
        if earliest is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(max(0.0, earliest - time.time()), self._on_retry_due)
        if released:
            self._on_order_released(released)
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
        if refused is not None:
            raise refused

    async def _write(self, batch: Batch) -> None:
        # Shielded: once handed to the database the write goes on even if this
        # task is cancelled (close() after its grace), and is not queued
        # again, which would log its attempts twice.
        outcomes = [outcome for outcome, _ in batch]
        # Ended deliveries with an order key: the outbox unparks each
        # device's next one in the same transaction (rows.PARKED_AT).
        released = [o.delivery_id for o, _ in batch if o.keyed and o.status in ENDED]
        writing = asyncio.create_task(
            self.outbox.record(self.owner, outcomes, time.time(), released)
        )
        self._writes.add(writing)
        writing.add_done_callback(self._writes.discard)
        await asyncio.shield(writing)

    async def _write_singly(self, batch: Batch) -> tuple[Batch, Unavailable | None]:
        """Write each outcome of `batch` on its own; (those written, and
        Unavailable if the database refused one: it and the rest are queued
        again). One that fails otherwise is logged and dropped."""
        written: Batch = []
        for position, (outcome, target) in enumerate(batch):
            try:
                await self._write([(outcome, target)])
            except Unavailable as exc:
                self._batch[:0] = batch[position:]
                return written, exc
            except asyncio.CancelledError:
                self._batch[:0] = batch[position + 1 :]  # this one's write goes on
                raise
            except Exception as exc:
                _problems.exception(
                    ("dropped", type(exc)),
                    "the outcome of delivery %s cannot be recorded; dropped "
                    "(the delivery is sent again once its lease expires)",
                    outcome.delivery_id,
                )
                continue
            written.append((outcome, target))
        return written, None


def _label(outcome: Outcome) -> str:
    if outcome.status == PENDING:
        return "retried" if outcome.attempt else "deferred"
    return outcome.status
