"""Sending: claim due deliveries, POST them, write the outcomes back.

Claimed deliveries wait in memory in a lane per webhook; `FairShare` (see
fairness) decides which lane's next delivery takes a free slot (bounded
overall, per project and per webhook, shared fairly across projects, then
across a project's webhooks) and how many each lane may hold. A webhook whose
lane is full, and every webhook of a project that holds all it may, is left
out of the next claim, so one slow or dead receiver holds at most its own
lane and one project at most its share, and never starves the others. Claims
are leases (see outbox); on shutdown, claimed but unsent deliveries are handed
back and in-flight attempts are finished and recorded. Outcomes are written
in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable

from edgesense.common.config import default_per_project
from edgesense.common.errors import Unavailable
from edgesense.common.log_throttle import ThrottledLog
from edgesense.delivery import metrics
from edgesense.delivery.claim.breaker import PAUSED_REASON, Breaker
from edgesense.delivery.claim.fairness import FairShare
from edgesense.delivery.record.policy import RetryPolicy, after_attempt, without_attempt
from edgesense.delivery.send.attempt import Sender
from edgesense.delivery.send.payload import RenderedEvent, render
from edgesense.delivery.store.outbox import FAILED, HELD, PENDING, Claimed, Outbox, Outcome
from edgesense.delivery.webhooks.index import Target, WebhookIndex
from edgesense.v1 import events_pb2

log = logging.getLogger(__name__)
# A bug that every attempt runs into logs one traceback, then a line a minute.
_internal_errors = ThrottledLog(log)

CLAIM_BATCH = 500
CLAIM_LOW_WATER = 64
# Events kept rendered, so that fanning one out renders it once: a few
# seconds' worth at full speed; an event sent again later renders again.
RENDERED_EVENTS = 4096
IDLE_POLL_SECONDS = 0.5
# Outcomes are not on the latency path (the POST already happened): let them
# gather into fewer, larger writes.
RESULT_LINGER_SECONDS = 0.02
# A delivery whose webhook this process does not know is only taken for one of
# a deleted webhook once it is older than this (deletions seen live fail their
# deliveries at once; this covers those missed while every process was down).
UNKNOWN_WEBHOOK_GRACE_SECONDS = 60.0
UNKNOWN_WEBHOOK_RETRY_SECONDS = 1.0
# A delivery not sent for a failure of ours (a sender process died) is tried again after this.
INTERNAL_RETRY_SECONDS = 1.0
# A webhook failing again and again pauses for the first backoff delay, at most this.
BREAKER_MAX_PAUSE_SECONDS = 30.0
ExhaustedHandler = Callable[[Target, Outcome], Awaitable[None]]


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
        self.concurrency = concurrency
        self.per_target = per_target
        # In flight and in memory, per webhook and per project.
        per_project = per_project or default_per_project(concurrency, per_target)
        self.fair = FairShare(concurrency, per_project, per_target)
        self._on_exhausted = on_exhausted
        self._wake = asyncio.Event()
        # Whether a claim may find something: fresh deliveries normally arrive
        # by hand-off, so a finished attempt only triggers a claim when the
        # last claim was cut short or work was stored without a lease.
        self._more_due = True
        self._stopping = False
        self._lanes: dict[str, deque[Claimed]] = {}
        # Webhooks (-> their projects) with due deliveries left in the outbox
        # while their lane was full: a claim for them is worth it once a quarter
        # of their lane is free.
        self._backlogged: dict[str, str] = {}
        # Webhooks (-> their projects) whose lanes have room for deliveries
        # waiting in the outbox.
        self._refill: dict[str, str] = {}
        self.breaker = Breaker(pause_seconds=min(policy.base_seconds, BREAKER_MAX_PAUSE_SECONDS))
        self._tasks: set[asyncio.Task[None]] = set()
        self._results: list[tuple[Outcome, Target | None]] = []
        self._rendered: dict[str, RenderedEvent] = {}  # by event id, oldest first
        self._results_ready = asyncio.Event()

    def wake(self) -> None:
        """Something may be due: look now (stored unleased, enabled, redelivered)."""
        self._more_due = True
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    # Hand-off: the acceptor stores a fresh delivery already leased to this
    # process when its lane has room, and passes it here after the commit, so
    # the common case costs no claim transaction and no wait for one.

    def reserve(self, webhook_id: str, project_id: str) -> bool:
        """Room for one freshly accepted delivery of this webhook?"""
        if self._stopping or not self.index.ready.is_set():
            return False
        if self.breaker.open_until(webhook_id, time.time()) is not None:
            return False
        return self.fair.admit(project_id, webhook_id)

    def paused_until(self, webhook_id: str) -> float | None:
        """When sends to this webhook resume, if its breaker has paused them."""
        return self.breaker.open_until(webhook_id, time.time())

    def stored_unleased(self, webhooks: Iterable[tuple[str, str]]) -> None:
        """Fresh pending deliveries of these (webhook, project)s were stored
        without a lease: claim them now if their lanes have room, else once
        they have drained (those of a paused webhook were stored due at the
        end of the pause)."""
        now = time.time()
        for webhook_id, project_id in webhooks:
            if self.breaker.open_until(webhook_id, now) is not None:
                continue
            if self.fair.room(project_id, webhook_id) <= 0:
                self._backlogged[webhook_id] = project_id
            else:
                # Room in the lane: the lease was refused for a limit since
                # lifted or a missing index; refill the lane.
                self._refill[webhook_id] = project_id
                self._wake.set()

    def cancel_reservations(self, items: Iterable[Claimed]) -> None:
        for item in items:
            self.fair.cancel(item.project_id, item.webhook_id)

    def hand_over(self, items: Iterable[Claimed]) -> None:
        """Deliveries stored as leased to this process, after their commit."""
        queue = self.fair.queue
        for item in items:
            queue(item.project_id, item.webhook_id, reserved=True)
            self._lanes.setdefault(item.webhook_id, deque()).append(item)
        if not self._stopping:  # stopping: they are handed back with the queued ones
            self._pump()

    async def run(self) -> None:
        """Send until stop(); then hand back what is queued and finish what is sent."""
        writer = asyncio.create_task(self._write_results())
        try:
            await self._claim_loop()
        finally:
            queued = [c.delivery_id for lane in self._lanes.values() for c in lane]
            self._lanes.clear()
            self.fair.drop_queued()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self.sender.timeout_seconds + 5)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            with contextlib.suppress(Unavailable):
                await self._flush()
                await self.outbox.release_leases(self.owner, queued)
            log.info("dispatcher stopped; handed back %d claimed deliveries", len(queued))

    async def _claim_loop(self) -> None:
        loop = asyncio.get_running_loop()
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
                if self._refill:
                    await self._claim_refills()
                if self._more_due or loop.time() >= next_poll:
                    next_poll = loop.time() + IDLE_POLL_SECONDS
                    if await self._claim_due():
                        continue  # a full batch: more may be due right now
            except Unavailable as exc:
                self._more_due = True
                log.warning("cannot claim deliveries: %s; retrying in 1 s", exc.message)
                await asyncio.sleep(1)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_poll - loop.time()))

    def _room(self) -> int:
        """How many deliveries a claim may take now (0: wait for room for a batch).

        Claims come in batches: while much is in flight, wait until a batch
        fits (every finished attempt wakes the claim loop while more is due).
        While other projects' work fills memory, a claim still takes a
        newcomer's share (the projects that fill it are left out).
        """
        load = self.fair.load_total
        room = min(CLAIM_BATCH, self.fair.claim_room())
        if load >= 2 * self.concurrency:
            return room
        return room if room >= CLAIM_LOW_WATER or (room > 0 and load < self.concurrency) else 0

    async def _claim_due(self) -> bool:
        """Claim whatever is due (retries, redeliveries, ...), leaving out full
        lanes, projects that hold all they may, and paused webhooks; True if
        the batch came back full."""
        room = self._room()
        if room <= 0:
            return False
        for webhook_id, lane in self._lanes.items():
            project_id = lane[0].project_id
            if self.fair.room(project_id, webhook_id) <= 0:
                self._backlogged[webhook_id] = project_id
        # Backlogged lanes are refilled by their own claims once they drain (an
        # attempt of theirs that ends sees to it); paused webhooks are due again
        # when the pause ends; a saturated project's webhooks once it has room.
        left_out = [w for w, p in self._backlogged.items() if self.fair.running(p, w)]
        left_out += self.breaker.paused(time.time())
        for project_id in self.fair.saturated():
            left_out += self.index.webhook_ids(project_id)
        self._more_due = False  # a wake() during the claim sets it again
        claimed = await self.outbox.claim(
            self.owner, time.time(), self.lease_seconds, room, left_out
        )
        self._enqueue(claimed)
        full = len(claimed) == room
        self._more_due = self._more_due or full
        return full

    async def _claim_refills(self) -> None:
        """Refill the lanes of webhooks with deliveries waiting in the outbox,
        reading only their rows (however much other webhooks have waiting)."""
        now = time.time()
        limits: dict[str, int] = {}
        projects = dict(self._refill)
        self._refill.clear()
        for webhook_id, project_id in projects.items():
            # Reserved while the claim runs, so that the lanes refilled together
            # stay within their project's room (and hand-overs meanwhile too).
            want = self.fair.room(project_id, webhook_id)
            if want > 0 and self.breaker.open_until(webhook_id, now) is None:
                limits[webhook_id] = want
                self.fair.reserve(project_id, webhook_id, want)
        try:
            claimed = await self.outbox.claim_for(self.owner, now, self.lease_seconds, limits)
        finally:
            for webhook_id, limit in limits.items():
                self.fair.cancel(projects[webhook_id], webhook_id, limit)
        self._enqueue(claimed)
        got = Counter(item.webhook_id for item in claimed)
        for webhook_id, limit in limits.items():
            if got[webhook_id] == limit:
                self._backlogged[webhook_id] = projects[webhook_id]  # there may be more

    def _enqueue(self, claimed: list[Claimed]) -> None:
        queue = self.fair.queue
        for item in claimed:
            queue(item.project_id, item.webhook_id)
            self._lanes.setdefault(item.webhook_id, deque()).append(item)
        self._pump()

    def _pump(self) -> None:
        """Start attempts while there are free slots, in FairShare's order."""
        start, lanes = self.fair.start, self._lanes
        while (chosen := start()) is not None:
            webhook_id = chosen[1]
            lane = lanes[webhook_id]
            item = lane.popleft()
            if not lane:
                del lanes[webhook_id]
            task = asyncio.create_task(self._attempt(item))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        metrics.IN_FLIGHT.set(self.fair.running_total)
        if not self._stopping:
            self._pump()
            if self._more_due or self._refill:
                self._wake.set()

    async def _attempt(self, item: Claimed) -> None:
        webhook_id = item.webhook_id
        try:
            target = self.index.get(webhook_id)
            now = time.time()
            if target is None and now - item.created_at < UNKNOWN_WEBHOOK_GRACE_SECONDS:
                # Another process accepted it for a webhook whose registration
                # has not reached this process's change stream yet: try later.
                outcome = without_attempt(
                    item, PENDING, "webhook not known yet", now, now + UNKNOWN_WEBHOOK_RETRY_SECONDS
                )
            elif target is None:
                outcome = without_attempt(item, FAILED, "webhook deleted", now)
            elif not target.active:
                outcome = without_attempt(item, HELD, "webhook disabled", now)
            elif (until := self.breaker.open_until(webhook_id, now)) is not None:
                outcome = without_attempt(item, PENDING, PAUSED_REASON, now, until)
            else:
                outcome = await self._send(item, target)
            self._results.append((outcome, target))
            self._results_ready.set()
        except Exception as exc:
            _internal_errors.exception(
                type(exc).__name__,
                "attempt of %s failed unexpectedly; it is retried after its lease",
                item.delivery_id,
            )
        finally:
            project_id = item.project_id
            self.fair.finish(project_id, webhook_id)
            if (
                webhook_id in self._backlogged
                and 2 * self.fair.room(project_id, webhook_id) >= self.per_target
            ):
                del self._backlogged[webhook_id]
                self._refill[webhook_id] = project_id  # _finished wakes the claim loop

    async def _send(self, item: Claimed, target: Target) -> Outcome:
        rendered = self._render(item)
        body = rendered.body(target.webhook_id)
        headers = target.signer.headers(item.delivery_id, rendered.name, body, int(time.time()))
        metrics.IN_FLIGHT.set(self.fair.running_total)
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

    def _defer(self, webhook_id: str, until: float) -> None:
        """The breaker paused this webhook: its due deliveries in the outbox
        become due when the pause ends, so claims no longer pass over them."""

        async def defer() -> None:
            try:
                await self.outbox.defer(webhook_id, until, PAUSED_REASON, time.time())
            except Unavailable as exc:  # they stay due; claims leave them out meanwhile
                log.warning("cannot defer deliveries of %s: %s", webhook_id, exc.message)

        task = asyncio.create_task(defer())
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

    async def _write_results(self) -> None:
        while True:
            await self._results_ready.wait()
            self._results_ready.clear()
            await asyncio.sleep(RESULT_LINGER_SECONDS)  # let a batch gather
            try:
                await self._flush()
            except Unavailable as exc:
                log.warning("cannot record delivery outcomes: %s; retrying in 1 s", exc.message)
                await asyncio.sleep(1)
                self._results_ready.set()

    async def _flush(self) -> None:
        batch, self._results = self._results, []
        if not batch:
            return
        # Shielded: once handed to the database the write goes on even if this
        # task is cancelled (at shutdown), and is not queued again, which
        # would log its attempts twice.
        record = self.outbox.record(self.owner, [o for o, _ in batch], time.time())
        self._tasks.add(writing := asyncio.create_task(record))
        writing.add_done_callback(self._tasks.discard)
        try:
            await asyncio.shield(writing)
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._results[:0] = batch
            raise
        earliest: float | None = None
        for outcome, target in batch:
            metrics.DELIVERIES.labels(_label(outcome)).inc()
            if outcome.status == PENDING:
                earliest = (
                    outcome.next_attempt_at
                    if earliest is None
                    else min(earliest, outcome.next_attempt_at)
                )
            elif outcome.status == FAILED and outcome.attempt > 0 and target is not None:
                await self._on_exhausted(target, outcome)
        if earliest is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(max(0.0, earliest - time.time()), self.wake)


def _label(outcome: Outcome) -> str:
    if outcome.status == PENDING:
        return "retried" if outcome.attempt else "deferred"
    return outcome.status
