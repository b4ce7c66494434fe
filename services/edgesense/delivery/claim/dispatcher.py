"""Sending: claim due deliveries, POST them, hand the outcomes to the writer.

The loop: claimed deliveries (from a claim, or handed over by the acceptor
right after they were stored) wait in their webhook's lane (`Lanes`, in
claim/lanes.py, which keeps every count and states their invariants); each
free send slot starts an attempt of the delivery `Lanes.start()` picks
(`FairShare`'s order: bounded overall, per project and per webhook, shared
fairly across projects, then across a project's webhooks); the attempt's
outcome goes to the `OutcomeWriter` (record/writer.py), which writes outcomes
back in batches. A webhook whose lane is full, and every webhook of a project
that holds all it may, is left out of the next claim, so one slow or dead
receiver holds at most its own lane and one project at most its share, and
never starves the others. Claims are leases (see outbox); on shutdown,
claimed but unsent deliveries are handed back and in-flight attempts are
finished and recorded.

This file is the asyncio and I/O half: the claim loop, the attempt tasks,
the sender, the outbox calls. Per delivery it does no more than start a task,
send, and add the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Coroutine, Iterable
from typing import Any

from edgesense.common.config import default_per_project
from edgesense.common.errors import Unavailable
from edgesense.common.log_throttle import ThrottledLog
from edgesense.delivery import metrics
from edgesense.delivery.claim.breaker import PAUSED_REASON, Breaker
from edgesense.delivery.claim.fairness import FairShare, queue_factor_for
from edgesense.delivery.claim.lanes import Lanes
from edgesense.delivery.claim.ratelimit import RateLimiter
from edgesense.delivery.record.policy import (
    RetryPolicy,
    after_attempt,
    before_attempt,
    without_attempt,
)
from edgesense.delivery.record.writer import ExhaustedHandler, OutcomeWriter
from edgesense.delivery.send.attempt import Sender
from edgesense.delivery.send.payload import TEST_HEADER, RenderedEvent, render
from edgesense.delivery.store.outbox import Outbox
from edgesense.delivery.store.rows import PENDING, Claimed, Outcome
from edgesense.delivery.webhooks.index import Target, WebhookIndex
from edgesense.v1 import events_pb2

log = logging.getLogger(__name__)
# A bug that every attempt runs into logs one traceback, then a line a minute.
_internal_errors = ThrottledLog(log)

# Events kept rendered, so that fanning one out renders it once: a few
# seconds' worth at full speed; an event sent again later renders again.
RENDERED_EVENTS = 4096
IDLE_POLL_SECONDS = 0.5
CLAIM_RETRY_SECONDS = 1.0  # after a claim that failed
# A delivery not sent for a failure of ours (a sender process died) is tried again after this.
INTERNAL_RETRY_SECONDS = 1.0
# A webhook failing again and again pauses for the first backoff delay, at most this.
BREAKER_MAX_PAUSE_SECONDS = 30.0


class Dispatcher:
    def __init__(
        self,
        outbox: Outbox,
        index: WebhookIndex,
        sender: Sender,
        policy: RetryPolicy,
        *,
        owner: str,
        lease_seconds: float,
        concurrency: int,
        per_target: int,
        per_project: int | None = None,
        on_exhausted: ExhaustedHandler,
    ) -> None:
        self.outbox = outbox
        self.index = index
        self.sender = sender
        self.policy = policy
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.breaker = Breaker(pause_seconds=min(policy.base_seconds, BREAKER_MAX_PAUSE_SECONDS))
        # In flight and in memory, per webhook and per project.
        per_project = per_project or default_per_project(concurrency, per_target)
        # A rate-limited webhook's lane holds one second's worth, and its
        # deliveries take a slot only with a token (claim/ratelimit.py).
        self.limiter = RateLimiter()
        self.lanes = Lanes(
            FairShare(
                concurrency,
                per_project,
                per_target,
                caps=index.rate_limits,
                may_start=self._may_start,
                queue_factor=queue_factor_for(lease_seconds, sender.timeout_seconds),
            ),
            self.breaker,
        )
        fair = self.lanes.fair
        # Read when scraped, not set per attempt (the gauge of the newest dispatcher).
        metrics.IN_FLIGHT.set_function(lambda: fair.running_total)
        # Throttled webhooks waiting for a token that comes back at a known time.
        self._unthrottle_at: dict[str, asyncio.TimerHandle] = {}
        self.writer = OutcomeWriter(
            outbox,
            owner,
            on_exhausted=on_exhausted,
            on_retry_due=self.wake,
            on_order_released=self.stored_unleased,
        )
        self._record = self.writer.add  # bound once: every attempt calls it
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()  # attempts, and deferrals
        self._rendered: dict[str, RenderedEvent] = {}  # by event id, oldest first

    def wake(self) -> None:
        """Something may be due: look now (held deliveries released, a
        redelivery, a retry whose time came)."""
        self.lanes.due_wanted()
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    # Hand-off: the acceptor stores a fresh delivery already leased to this
    # process when its lane has room, and passes it here after the commit, so
    # the common case costs no claim transaction and no wait for one.

    def reserve(self, *, project_id: str, webhook_id: str, now: float) -> bool:
        """Room for one freshly accepted delivery of this webhook?"""
        if self._stopping or not self.index.ready.is_set():
            return False
        return self.lanes.reserve(project_id, webhook_id, now)

    def paused_until(self, webhook_id: str, now: float) -> float | None:
        """When sends to this webhook resume, if its breaker has paused them."""
        return self.breaker.open_until(webhook_id, now)

    def stored_unleased(self, webhooks: Iterable[tuple[str, str]]) -> None:
        """Pending deliveries of these (project, webhook)s may be claimable
        that no lane holds: fresh ones stored without a lease, or, for an
        ordered webhook, a device's next one once the one before it ended
        (the outcome writer's `on_order_released`). Claim them now if their
        lanes have room, else once they have drained."""
        if self.lanes.stored_unleased(webhooks, time.time()):
            self._wake.set()

    def cancel_reservations(self, items: Iterable[Claimed]) -> None:
        self.lanes.cancel(items)

    def hand_over(self, items: Iterable[Claimed]) -> None:
        """Deliveries stored as leased to this process, after their commit."""
        self.lanes.add(items, reserved=True)
        # Stopping: run() hands them back with the queued ones, until it has
        # ended (any later keep their lease until it expires).
        if not self._stopping:
            self._pump()

    async def run(self) -> None:
        """Send until stop(); then hand back what is queued and finish what is sent."""
        writer = asyncio.create_task(self.writer.run())
        try:
            await self._claim_loop()
        finally:
            queued = self.lanes.drop_queued()
            timeout = self.sender.timeout_seconds + 5
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=timeout)
            # Handed over since (the acceptor's commits that ended meanwhile).
            queued += self.lanes.drop_queued()
            # Two steps, each tried whatever the other did. An outcome the
            # database refuses now leaves its delivery leased: once the lease
            # expires it is claimed and sent again (a duplicate, never a loss);
            # leases not handed back expire the same way.
            try:
                await self.writer.close(writer, timeout)
            except Unavailable as exc:
                log.warning("at stop, delivery outcomes not recorded: %s", exc.message)
            except Exception as exc:
                _internal_errors.exception(
                    ("stop", "outcomes", type(exc).__name__),
                    "at stop, recording delivery outcomes failed",
                )
            try:
                await self.outbox.release_leases(self.owner, [c.delivery_id for c in queued])
            except Unavailable as exc:
                log.warning(
                    "at stop, %d claimed deliveries not handed back (their leases expire): %s",
                    len(queued),
                    exc.message,
                )
            except Exception as exc:
                _internal_errors.exception(
                    ("stop", "leases", type(exc).__name__),
                    "at stop, handing back %d claimed deliveries failed (their leases expire)",
                    len(queued),
                )
            log.info("dispatcher stopped; handed back %d claimed deliveries", len(queued))

    async def _claim_loop(self) -> None:
        """Claim until stop(). A failed claim is tried again a second later:
        the database refusing it (Unavailable), or anything else (a bug:
        logged, throttled), so that claiming never ends but with stop()."""
        loop = asyncio.get_running_loop()
        lanes = self.lanes
        next_poll = 0.0
        while not self._stopping:
            self._wake.clear()
            if not self.index.ready.is_set():
                # Until the registry's first snapshot is in, every webhook looks
                # deleted, and a claimed delivery would be failed as such.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.index.ready.wait(), IDLE_POLL_SECONDS)
                continue
            try:
                if lanes.refill_wanted:
                    await self._claim_refills()
                if lanes.more_due or loop.time() >= next_poll:
                    next_poll = loop.time() + IDLE_POLL_SECONDS
                    if await self._claim_due():
                        continue  # a full batch: more may be due right now
            except Unavailable as exc:
                lanes.due_wanted()
                log.warning(
                    "cannot claim deliveries: %s; retrying in %g s",
                    exc.message,
                    CLAIM_RETRY_SECONDS,
                )
                await asyncio.sleep(CLAIM_RETRY_SECONDS)
                continue
            except Exception as exc:
                lanes.due_wanted()
                _internal_errors.exception(
                    ("claim", type(exc).__name__),
                    "claiming deliveries failed unexpectedly; retrying in %g s",
                    CLAIM_RETRY_SECONDS,
                )
                await asyncio.sleep(CLAIM_RETRY_SECONDS)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_poll - loop.time()))

    async def _claim_due(self) -> bool:
        """Claim whatever is due (retries, redeliveries, ...), as much as the
        lanes may take; True if the batch came back full."""
        size, left_out = self.lanes.begin_due_claim(time.time(), self.index.webhook_ids)
        if size <= 0:
            return False
        claimed = await self.outbox.claim(
            self.owner, time.time(), self.lease_seconds, size, left_out
        )
        full, excess = self.lanes.end_due_claim(claimed, size)
        if excess:
            self._background(self._hand_back(excess))
        self._pump()
        return full

    async def _hand_back(self, items: list[Claimed]) -> None:
        """Claimed deliveries beyond a capped lane's room: due again for the
        next claim that has room for them (a refill as attempts end)."""
        try:
            await self.outbox.release_leases(self.owner, [c.delivery_id for c in items])
        except Unavailable as exc:  # their leases expire instead
            log.warning("cannot hand back %d claimed deliveries: %s", len(items), exc.message)
        except Exception as exc:
            _internal_errors.exception(
                ("hand back", type(exc).__name__),
                "handing back %d claimed deliveries failed (their leases expire)",
                len(items),
            )

    async def _claim_refills(self) -> None:
        """Refill the lanes of webhooks with deliveries waiting in the outbox,
        reading only their rows (however much other webhooks have waiting)."""
        now = time.time()
        limits = self.lanes.begin_refill(now)
        try:
            claimed = await self.outbox.claim_for(self.owner, now, self.lease_seconds, limits)
        except BaseException:
            self.lanes.end_refill([])
            raise
        self.lanes.end_refill(claimed)
        self._pump()

    def _pump(self) -> None:
        """Start attempts while there are free slots, in FairShare's order."""
        start, tasks, finished = self.lanes.start, self._tasks, self._finished
        limited = self.index.rate_limits
        while (item := start()) is not None:
            # A rate-limited webhook's delivery started with a token (_may_start).
            task = asyncio.create_task(self._attempt(item, item.webhook_id in limited))
            tasks.add(task)
            task.add_done_callback(finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        lanes = self.lanes
        if not self._stopping:
            self._pump()
            if lanes.more_due or lanes.refill_wanted:
                self._wake.set()

    async def _attempt(self, item: Claimed, token: bool) -> None:
        """Send `item` if it may be sent, and record the outcome; `token`: it
        holds a rate-limit token, given back once the request has ended."""
        webhook_id = item.webhook_id
        try:
            target = self.index.get(webhook_id)
            now = time.time()
            active = None if target is None else target.active
            outcome = before_attempt(item, active, self.breaker.open_until(webhook_id, now), now)
            if outcome is None:
                assert target is not None  # before_attempt sends to known webhooks only
                outcome = await self._send(item, target)
            self._record(outcome, target)
        except Exception as exc:
            _internal_errors.exception(
                type(exc).__name__,
                "attempt of %s failed unexpectedly; it is retried after its lease",
                item.delivery_id,
            )
        finally:
            # A backlogged lane with room again asks for a refill (_finished
            # wakes the claim loop).
            self.lanes.finish(item.project_id, webhook_id)
            if token:
                self._give_back(webhook_id)

    async def _send(self, item: Claimed, target: Target) -> Outcome:
        rendered = self._render(item)
        body = rendered.body(target.webhook_id)
        headers = target.request_headers(item.delivery_id, rendered.name, body, time.time())
        if rendered.test:
            headers[TEST_HEADER] = "1"
        result = await self.sender.post(target.url, body, headers)
        now = time.time()
        if result.internal_failure:
            # Our failure, not the receiver's: no attempt used, no breaker count.
            log.warning("delivery %s not sent: %s", item.delivery_id, result.error)
            reason = f"not sent: {result.error}; trying again"
            return without_attempt(item, PENDING, reason, now, now + INTERNAL_RETRY_SECONDS)
        metrics.ATTEMPT_SECONDS.observe(result.duration_ms / 1000)
        opened = self.breaker.record(target.webhook_id, result.ok, now)
        if opened is not None:
            self._defer(target.webhook_id, opened)
        current = self.index.get(target.webhook_id)
        return after_attempt(self.policy, item, result, now, current is not None and current.active)

    # Rate limits (claim/ratelimit.py): a token is taken as a delivery takes
    # its slot, and given back when its request has ended.

    def _may_start(self, webhook_id: str) -> bool:
        """FairShare asks before a rate-limited webhook's delivery takes a slot:
        True with a token taken; False throttles the webhook until a token is
        back (a timer when it is known, else the next give-back)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        # FairShare asks only for webhooks in its caps, which are these limits.
        retry_at = self.limiter.take(webhook_id, self.index.rate_limits[webhook_id], now)
        if retry_at <= now:
            return True
        metrics.RATE_LIMITED.inc()
        if retry_at < math.inf and webhook_id not in self._unthrottle_at:
            self._unthrottle_at[webhook_id] = loop.call_at(retry_at, self._unthrottle, webhook_id)
        return False

    def _unthrottle(self, webhook_id: str) -> None:
        self._unthrottle_at.pop(webhook_id, None)
        if self.lanes.fair.unthrottle(webhook_id) and not self._stopping:
            self._pump()

    def _give_back(self, webhook_id: str) -> None:
        self.limiter.give_back(webhook_id, asyncio.get_running_loop().time())
        if webhook_id not in self._unthrottle_at:
            # Throttled with every token out: when one is back is known now.
            self._unthrottle(webhook_id)

    def limits_changed(self) -> None:
        """Webhooks' rate limits were set, changed or lifted (the registry's
        stream): a lane beyond its new cap hands the rest back to the outbox,
        where it waits, with no attempt used, for a claim with room."""
        excess = self.lanes.limits_changed()
        if excess:
            self._background(self._hand_back(excess))
        if not self._stopping:
            self._pump()

    def _defer(self, webhook_id: str, until: float) -> None:
        """The breaker paused this webhook: its due deliveries in the outbox
        become due when the pause ends, so claims no longer pass over them."""

        async def defer() -> None:
            try:
                await self.outbox.defer(webhook_id, until, PAUSED_REASON, time.time())
            except Unavailable as exc:  # they stay due; claims leave them out meanwhile
                log.warning("cannot defer deliveries of %s: %s", webhook_id, exc.message)
            except Exception as exc:
                _internal_errors.exception(
                    ("defer", type(exc).__name__), "deferring deliveries of %s failed", webhook_id
                )

        self._background(defer())

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` beside the attempts (stop() waits for it with them)."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _render(self, item: Claimed) -> RenderedEvent:
        """The event's rendering, shared by its deliveries to other webhooks."""
        rendered = self._rendered.get(item.event_id)
        if rendered is None:
            rendered = render(events_pb2.Event.FromString(item.event))
            if len(self._rendered) >= RENDERED_EVENTS:
                del self._rendered[next(iter(self._rendered))]  # the oldest
            self._rendered[item.event_id] = rendered
        return rendered
