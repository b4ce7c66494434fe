"""Durable accept: events from Publish streams become rows, group-committed.

Every Publish stream hands its batches to one `Acceptor`, which merges the
batches waiting at that moment into a single transaction (group commit: the
fsync is paid once per group, not per batch) and resolves each batch's future
only after the commit. Its queue is bounded, so when the database falls
behind, streams stop reading and gRPC flow control pushes back on the
bridge; past `outbox_limit` pending deliveries, Publish answers
RESOURCE_EXHAUSTED.

A delivery to an `ordered` webhook is never handed over leased: it is stored
with its event's device as its order key, unleased, and the dispatcher is
told (`stored_unleased`), so that it is leased only by a claim, which takes a
device's deliveries one at a time in event order (store/rows.py
ORDERED_HEAD). Operational events are about no device: their deliveries have
no key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from edgesense.common.errors import EdgesenseError, ResourceExhausted
from edgesense.common.event_check import check_event, subject_of
from edgesense.common.events import KIND_TO_EVENT, OPERATIONAL_EVENT_NAMES
from edgesense.common.ids import new_id
from edgesense.delivery import metrics
from edgesense.delivery.claim.breaker import PAUSED_REASON
from edgesense.delivery.devices.tracker import DeviceTracker
from edgesense.delivery.rules.alerts import (
    ALERT_EVENT,
    AlertTarget,
    RuleWork,
    pending_webhooks,
)
from edgesense.delivery.rules.index import Observation, RuleIndex
from edgesense.delivery.store.outbox import Outbox
from edgesense.delivery.store.rows import (
    HELD,
    OPERATIONAL_DELIVERY_PREFIX,
    PENDING,
    Claimed,
    NewDelivery,
    StoredEvent,
)
from edgesense.delivery.webhooks.index import Target, WebhookIndex
from edgesense.v1 import events_pb2

MAX_GROUP_EVENTS = 5000
QUEUE_BATCHES = 64
_OPERATIONAL = frozenset(OPERATIONAL_EVENT_NAMES)
DATA_EVENT = KIND_TO_EVENT["readings"]
_OPERATIONAL_ID = OPERATIONAL_DELIVERY_PREFIX.removesuffix("_")


@dataclass(frozen=True)
class Accepted:
    accepted: int
    duplicates: int


Job = tuple[Sequence[events_pb2.Event], "asyncio.Future[Accepted]"]


class Start(NamedTuple):
    """How a new delivery to one webhook starts out: the seven fields of its
    `NewDelivery` after `device_id`, in that row's order (the row is built as
    `NewDelivery(delivery_id, ..., device_id, *start)`, an ordered webhook's
    with its order key after them). One is made per
    webhook and group, not per delivery; a NamedTuple, like the rows in
    store/rows.py, since a frozen dataclass costs several times more."""

    status: str
    status_reason: str | None
    next_attempt_at: float  # later than now while the webhook's sends are paused
    lease_owner: str | None  # this process, when handed straight to its dispatcher
    lease_expires_at: float | None
    created_at: float
    updated_at: float


class Handoff(Protocol):
    """The dispatcher, as the acceptor sees it (see Dispatcher.reserve)."""

    owner: str
    lease_seconds: float

    def reserve(self, *, project_id: str, webhook_id: str, now: float) -> bool: ...
    def paused_until(self, webhook_id: str, now: float) -> float | None: ...
    def cancel_reservations(self, items: Iterable[Claimed]) -> None: ...
    def hand_over(self, items: Iterable[Claimed]) -> None: ...
    def stored_unleased(self, webhooks: Iterable[tuple[str, str]]) -> None: ...


class Acceptor:
    def __init__(
        self,
        outbox: Outbox,
        index: WebhookIndex,
        handoff: Handoff,
        outbox_limit: int,
        rules: RuleIndex | None = None,
        devices: DeviceTracker | None = None,
    ) -> None:
        self.outbox = outbox
        # The devices view: told of each event stored (after the commit).
        self.devices = devices
        self.index = index
        self.rules = RuleIndex() if rules is None else rules
        self._handoff = handoff
        self.outbox_limit = outbox_limit
        self.pending_deliveries = 0  # refreshed by the maintenance loop
        self.created_total = 0  # deliveries this process created, ever
        self._queue: asyncio.Queue[Job] = asyncio.Queue(QUEUE_BATCHES)

    def begin_pending_count(self) -> Callable[[int], None]:
        """Before reading how many deliveries the outbox holds pending: returns
        what to call with that count to make it `pending_deliveries`. Deliveries
        this process created while the count was read may be missing from it
        (overwriting the tally with it would drop them): they are added."""
        created_before = self.created_total

        def counted(pending: int) -> None:
            self.pending_deliveries = pending + self.created_total - created_before

        return counted

    async def submit(self, events: Sequence[events_pb2.Event]) -> asyncio.Future[Accepted]:
        """Queue a batch (waits while the queue is full); the future resolves once stored."""
        for position, event in enumerate(events):
            check_event(event, position)
        if self.pending_deliveries >= self.outbox_limit:
            raise ResourceExhausted(
                f"the outbox holds {self.pending_deliveries} pending deliveries "
                f"(limit {self.outbox_limit}); retry later"
            )
        future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        await self._queue.put((events, future))
        return future

    async def run(self) -> None:
        while True:
            group = [await self._queue.get()]
            size = len(group[0][0])
            while not self._queue.empty() and size < MAX_GROUP_EVENTS:
                job = self._queue.get_nowait()
                group.append(job)
                size += len(job[0])
            await self._store(group)

    async def _store(self, group: list[Job]) -> None:
        stored: list[StoredEvent] = []
        kept: list[events_pb2.Event] = []  # stored[i] is kept[i] serialized
        planned: list[NewDelivery] = []
        handed: list[Claimed] = []
        # (event id, webhook id, project id): pending, for a claim
        unleased: list[tuple[str, str, str]] = []
        seen: set[str] = set()
        now = time.time()
        lease_until = now + self._handoff.lease_seconds
        owner = self._handoff.owner
        reserve, unleased_start = self._handoff.reserve, self._unleased
        # How a delivery to each webhook starts out. A webhook whose lease was
        # refused once is refused for the rest of the group (its lane only
        # fills up meanwhile): the answer is kept.
        leased = Start(PENDING, None, now, owner, lease_until, now, now)
        settled: dict[str, Start] = {}
        observations: list[Observation] = []
        has_rules, observe = self.rules.has_rules, self.rules.observe
        for events, _ in group:
            for event in events:
                event_id = event.event_id
                if event_id in seen:
                    continue
                seen.add(event_id)
                name = KIND_TO_EVENT[event.WhichOneof("kind") or ""]
                payload = event.SerializeToString()
                project_id, device_id = event.project_id, event.device_id
                stored.append(StoredEvent(event_id, project_id, payload))
                kept.append(event)
                if name in _OPERATIONAL:
                    # The project's other subscribers, never the subject;
                    # their delivery ids tell the outcome writer what they are.
                    targets = self.index.subscribers(project_id, name, subject_of(event))
                    id_prefix = _OPERATIONAL_ID
                    order_key = None  # about no device: never held back by one
                else:
                    targets = self.index.match(project_id, name, device_id)
                    id_prefix = "dlv"
                    order_key = device_id
                    if name == DATA_EVENT and has_rules(project_id):
                        observations += observe(event)
                for target in targets:
                    delivery_id = new_id(id_prefix)
                    webhook_id = target.webhook_id
                    start = settled.get(webhook_id)
                    if start is None:
                        if (
                            target.active
                            and not target.ordered
                            and reserve(project_id=project_id, webhook_id=webhook_id, now=now)
                        ):
                            handed.append(
                                Claimed.fresh(
                                    delivery_id, webhook_id, event_id, payload, now, project_id
                                )
                            )
                            planned.append(
                                NewDelivery(
                                    delivery_id,
                                    event_id,
                                    webhook_id,
                                    project_id,
                                    name,
                                    device_id,
                                    *leased,
                                )
                            )
                            continue
                        status, reason, due = unleased_start(target, now)
                        start = Start(status, reason, due, None, None, now, now)
                        settled[webhook_id] = start
                    if start.status == PENDING:
                        unleased.append((event_id, webhook_id, project_id))
                    planned.append(
                        NewDelivery(
                            delivery_id,
                            event_id,
                            webhook_id,
                            project_id,
                            name,
                            device_id,
                            *start,
                            order_key if target.ordered else None,
                        )
                    )
        work = self._rule_work(observations, now) if observations else None
        try:
            new_ids, created = await self.outbox.accept(stored, planned, now, work)
        except BaseException as exc:
            self._handoff.cancel_reservations(handed)
            if not isinstance(exc, EdgesenseError):
                raise
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        unhanded = [c for c in handed if c.event_id not in new_ids]
        self._handoff.cancel_reservations(unhanded)
        self._handoff.hand_over(c for c in handed if c.event_id in new_ids)
        counted: set[str] = set()
        for events, future in group:
            fresh = 0
            for event in events:
                if event.event_id in new_ids and event.event_id not in counted:
                    counted.add(event.event_id)
                    fresh += 1
            if not future.done():
                future.set_result(Accepted(fresh, len(events) - fresh))
        if self.devices is not None:
            self.devices.fold_stored(kept, stored, new_ids)
        metrics.EVENTS_ACCEPTED.inc(len(new_ids))
        metrics.EVENTS_DUPLICATE.inc(sum(len(e) for e, _ in group) - len(new_ids))
        self.pending_deliveries += created
        self.created_total += created
        waiting = {
            (project, webhook) for event_id, webhook, project in unleased if event_id in new_ids
        }
        if work is not None and work.plan:
            waiting |= pending_webhooks(work.plan)
            metrics.ALERTS.labels("triggered").inc(work.plan.triggered)
            metrics.ALERTS.labels("resolved").inc(work.plan.resolved)
        if waiting:
            self._handoff.stored_unleased(waiting)  # for a claim to find

    def _rule_work(self, observations: list[Observation], now: float) -> RuleWork:
        """The observations, and the webhooks their devices' alerts would go to."""
        devices = {(o.rule.project_id, o.device_id) for o in observations}
        return RuleWork(
            observations, {device: self.alert_targets(*device, now) for device in devices}
        )

    def alert_targets(self, project_id: str, device_id: str, now: float) -> tuple[AlertTarget, ...]:
        """The webhooks a device.alert of this device goes to, each as its
        delivery starts out, left for a claim (never handed over)."""
        return tuple(
            AlertTarget(target.webhook_id, *self._unleased(target, now), target.ordered)
            for target in self.index.match(project_id, ALERT_EVENT, device_id)
        )

    def _unleased(self, target: Target, now: float) -> tuple[str, str | None, float]:
        """How a delivery to `target` not handed over starts out: status,
        reason, due: held while the webhook is disabled, else pending, due
        when its sends are no longer paused."""
        if not target.active:
            return HELD, "webhook disabled", now
        not_before = self._handoff.paused_until(target.webhook_id, now)
        return PENDING, None if not_before is None else PAUSED_REASON, not_before or now
