"""The Delivery gRPC servicer: Publish (internal), ListDeliveries, GetDelivery,
Redeliver, SendTestEvent, RecoverDeliveries, GetWebhookStats, GetProjectStats,
ListAlerts."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from edgesense.common.auth import Authenticator
from edgesense.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from edgesense.common.events import EVENT_NAMES
from edgesense.common.ids import new_id
from edgesense.common.paging import PageTokens, fit_page, page_size
from edgesense.common.thresholds import ACTIVE, RESOLVED
from edgesense.delivery.accept.acceptor import Accepted, Acceptor
from edgesense.delivery.accept.samples import TestSendLimit, sample_event
from edgesense.delivery.send.payload import render, unsigned_request_headers
from edgesense.delivery.store.outbox import Outbox
from edgesense.delivery.store.rows import (
    HELD,
    PENDING,
    STATUSES,
    TEST_DELIVERY_PREFIX,
    NewDelivery,
    StoredEvent,
)
from edgesense.delivery.webhooks.index import Target, WebhookIndex
from edgesense.v1 import delivery_pb2, delivery_pb2_grpc, events_pb2

Context = grpc.aio.ServicerContext[Any, Any]
INDEX_WAIT_SECONDS = 10.0
PIPELINE_DEPTH = 16
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_ATTEMPTS_LISTED = 50
MAX_TEXT_CHARS = 1000
# Stats windows: (length, bucket) in seconds; 60, 288 and 168 buckets.
STATS_WINDOWS = {"1h": (3600, 60), "24h": (86_400, 300), "7d": (604_800, 3600)}
DEFAULT_STATS_WINDOW = "24h"
PERCENTILES = (50, 95, 99)
BUCKET_PERCENTILES = (50, 99)
ALERT_STATES = (ACTIVE, RESOLVED)
MAX_FILTER_CHARS = 128


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromMicroseconds(round(seconds * 1e6))
    return ts


def delivery_record(row: Any, logs: list[Any]) -> delivery_pb2.DeliveryRecord:
    record = delivery_pb2.DeliveryRecord(
        delivery_id=row.delivery_id,
        webhook_id=row.webhook_id,
        event_id=row.event_id,
        event=row.event_name,
        device_id=row.device_id,
        status=row.status,
        created_at=timestamp(row.created_at),
    )
    if row.status_reason is not None:
        record.status_reason = row.status_reason[:MAX_TEXT_CHARS]
    # The latest attempts only: redelivering adds attempts without end, and a
    # record must stay far below the message limit (see paging).
    for log in logs[-MAX_ATTEMPTS_LISTED:]:
        attempt = record.attempts.add(
            attempt=log.attempt, started_at=timestamp(log.started_at), duration_ms=log.duration_ms
        )
        if log.status_code is not None:
            attempt.status_code = log.status_code
        if log.error is not None:
            attempt.error = log.error[:MAX_TEXT_CHARS]
        if log.response_body is not None:
            attempt.response_body = log.response_body
    return record


def alert_instance(row: Any) -> delivery_pb2.AlertInstance:
    alert = delivery_pb2.AlertInstance(
        alert_id=row.alert_id,
        rule_id=row.rule_id,
        rule_name=row.rule_name[:MAX_TEXT_CHARS],
        device_id=row.device_id,
        gateway_id=row.gateway_id,
        state=row.state,
        severity=row.severity,
        field=row.field,
        value=row.value,
        triggered_at=timestamp(row.triggered_at),
        since=timestamp(row.since),
        triggered_event_id=row.triggered_event_id,
    )
    if row.resolved_at is not None:
        alert.resolved_at.CopyFrom(timestamp(row.resolved_at))
    if row.resolved_value is not None:
        alert.resolved_value = row.resolved_value
    if row.resolved_reason is not None:
        alert.resolved_reason = row.resolved_reason
    if row.resolved_event_id is not None:
        alert.resolved_event_id = row.resolved_event_id
    return alert


class DeliveryService(delivery_pb2_grpc.DeliveryServicer):
    def __init__(
        self,
        outbox: Outbox,
        index: WebhookIndex,
        acceptor: Acceptor,
        auth: Authenticator,
        wake: Callable[[], None],
        page_tokens: PageTokens,
        *,
        recover_max_age_seconds: float = 30 * 86400.0,
        rules_loaded: asyncio.Event | None = None,
    ) -> None:
        # Set once the alert rules are loaded (RulesLink): Publish waits for
        # it, so that no reading is stored unjudged. None: no rules to wait for.
        self._rules_loaded = rules_loaded
        self.page_tokens = page_tokens
        # How far back recover may look: the retention (older deliveries are deleted).
        self.recover_max_age_seconds = recover_max_age_seconds
        self.test_sends = TestSendLimit()
        self.outbox = outbox
        self.index = index
        self.acceptor = acceptor
        self.auth = auth
        self._wake = wake
        self._stopping = asyncio.Event()

    async def Publish(
        self, request_iterator: AsyncIterator[delivery_pb2.PublishRequest], context: Context
    ) -> AsyncIterator[delivery_pb2.PublishResponse]:
        self.auth.require_internal(context.invocation_metadata())
        try:
            await asyncio.wait_for(self.index.ready.wait(), INDEX_WAIT_SECONDS)
        except TimeoutError:
            raise Unavailable("delivery is starting: the webhook list is not loaded yet") from None
        if self._rules_loaded is not None:
            try:
                await asyncio.wait_for(self._rules_loaded.wait(), INDEX_WAIT_SECONDS)
            except TimeoutError:
                raise Unavailable(
                    "delivery is starting: the alert rules are not loaded yet"
                ) from None
        # Read ahead while earlier batches commit; confirm strictly in order.
        pipeline: asyncio.Queue[tuple[int, asyncio.Future[Accepted]] | None] = asyncio.Queue(
            PIPELINE_DEPTH
        )

        async def read() -> None:
            async for request in request_iterator:
                await pipeline.put((request.batch_id, await self.acceptor.submit(request.events)))
            await pipeline.put(None)

        reader = asyncio.create_task(read())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while True:
                if stopping.done() and not reader.done():
                    reader.cancel()  # read no more: confirm what was read, then end
                if reader.done() and pipeline.empty():
                    if not reader.cancelled() and reader.exception() is not None:
                        reader.result()  # the reader failed: raise its error
                    return
                getter = asyncio.ensure_future(pipeline.get())
                waiting = {getter, reader} if stopping.done() else {getter, reader, stopping}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    continue
                item = getter.result()
                if item is None:
                    return
                batch_id, future = item
                accepted = await future
                yield delivery_pb2.PublishResponse(
                    batch_id=batch_id, accepted=accepted.accepted, duplicates=accepted.duplicates
                )
        finally:
            stopping.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    def stop_publishing(self) -> None:
        """End every Publish stream once the batches it has read are confirmed
        (stopping: the bridge sends the rest again, to this process when it is
        back or to another)."""
        self._stopping.set()

    async def ListDeliveries(
        self, request: delivery_pb2.ListDeliveriesRequest, context: Context
    ) -> delivery_pb2.ListDeliveriesResponse:
        project = self.auth.project(context.invocation_metadata())
        if request.status and request.status not in STATUSES:
            raise InvalidArgument("status", f"must be one of {', '.join(STATUSES)}")
        size = page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        # Whose webhook first: another project's answers 404 whatever the token.
        target = self.index.get(request.webhook_id)
        if target is None or target.project_id != project:
            # Not (or no longer) a webhook of this project: its deliveries may remain.
            kept, _ = await self.outbox.page(project, request.webhook_id, "", 1, None)
            if not kept:
                raise NotFound(f"webhook {request.webhook_id} not found")
        scope = (project, request.webhook_id, request.status)
        before = self.page_tokens.read_seq(request.page_token, scope)
        rows, logs = await self.outbox.page(
            project, request.webhook_id, request.status, size + 1, before
        )
        page, more = fit_page(rows, lambda r: delivery_record(r, logs.get(r.delivery_id, [])), size)
        response = delivery_pb2.ListDeliveriesResponse(deliveries=page)
        if more:
            response.next_page_token = self.page_tokens.issue(scope, str(rows[len(page) - 1].seq))
        return response

    async def Redeliver(
        self, request: delivery_pb2.RedeliverRequest, context: Context
    ) -> delivery_pb2.DeliveryRecord:
        project = self.auth.project(context.invocation_metadata())
        found = await self.outbox.one(project, request.delivery_id)
        if found is None:
            raise NotFound(f"delivery {request.delivery_id} not found")
        row, _ = found
        target = self.index.get(row.webhook_id)
        if target is None:
            raise FailedPrecondition(f"the webhook of {request.delivery_id} was deleted")
        status, reason = (PENDING, None) if target.active else (HELD, "webhook disabled")
        await self.outbox.requeue(project, request.delivery_id, status, reason, time.time())
        self._wake()
        again = await self.outbox.one(project, request.delivery_id)
        assert again is not None
        return delivery_record(*again)

    async def ListAlerts(
        self, request: delivery_pb2.ListAlertsRequest, context: Context
    ) -> delivery_pb2.ListAlertsResponse:
        project = self.auth.project(context.invocation_metadata())
        if request.state and request.state not in ALERT_STATES:
            raise InvalidArgument("state", f"must be one of {', '.join(ALERT_STATES)}")
        for name in ("rule_id", "device_id"):
            value = getattr(request, name)
            if len(value) > MAX_FILTER_CHARS:
                raise InvalidArgument(name, f"must be at most {MAX_FILTER_CHARS} characters")
        size = page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        scope = ("alerts", project, request.state, request.rule_id, request.device_id)
        before = self.page_tokens.read_seq(request.page_token, scope)
        rows = await self.outbox.alert_page(
            project, request.state, request.rule_id, request.device_id, size + 1, before
        )
        page, more = fit_page(rows, alert_instance, size)
        response = delivery_pb2.ListAlertsResponse(alerts=page)
        if more:
            response.next_page_token = self.page_tokens.issue(scope, str(rows[len(page) - 1].seq))
        return response

    def _own_webhook(self, project: str, webhook_id: str) -> Target:
        """The project's webhook as this process knows it; NotFound for
        another project's or an unknown one."""
        if not self.index.ready.is_set():
            raise Unavailable("delivery is starting: the webhook list is not loaded yet")
        target = self.index.get(webhook_id)
        if target is None or target.project_id != project:
            raise NotFound(f"webhook {webhook_id} not found")
        return target

    async def SendTestEvent(
        self, request: delivery_pb2.SendTestEventRequest, context: Context
    ) -> delivery_pb2.DeliveryRecord:
        project = self.auth.project(context.invocation_metadata())
        target = self._own_webhook(project, request.webhook_id)
        if request.event not in EVENT_NAMES:
            raise InvalidArgument("event", f"must be one of {', '.join(EVENT_NAMES)}")
        now = time.time()
        if not self.test_sends.allow(target.webhook_id, now):
            raise ResourceExhausted(
                f"at most {self.test_sends.per_minute} test sends per webhook a minute; retry later"
            )
        event = sample_event(request.event, project, target.device_ids, now)
        # Pending even while the webhook is disabled: the policy sends a test
        # delivery all the same (record/policy.py). To this webhook only.
        planned = NewDelivery(
            new_id(TEST_DELIVERY_PREFIX.removesuffix("_")),
            event.event_id,
            target.webhook_id,
            project,
            request.event,
            event.device_id,
            PENDING,
            None,
            now,
            None,
            None,
            now,
            now,
        )
        await self.outbox.accept(
            [StoredEvent(event.event_id, project, event.SerializeToString())], [planned], now
        )
        self._wake()
        # The delivery as stored: a read back could find it sent already, by
        # a dispatcher quicker than the read (GET it for what became of it).
        return delivery_record(planned, [])

    async def RecoverDeliveries(
        self, request: delivery_pb2.RecoverDeliveriesRequest, context: Context
    ) -> delivery_pb2.RecoverDeliveriesResponse:
        project = self.auth.project(context.invocation_metadata())
        target = self._own_webhook(project, request.webhook_id)
        now = time.time()
        if not request.HasField("since"):
            raise InvalidArgument("since", "is required: an RFC 3339 time")
        since = request.since.ToMicroseconds() / 1e6
        # Never past now: a delivery recovered here that fails again during
        # this call must not be taken again.
        until = min(now, request.until.ToMicroseconds() / 1e6) if request.HasField("until") else now
        oldest = now - self.recover_max_age_seconds
        if since < oldest:
            days = self.recover_max_age_seconds / 86400
            raise InvalidArgument(
                "since",
                f"is more than {days:g} days ago (EDGESENSE_RETENTION_DAYS); "
                f"at most {self.recover_max_age_seconds:g} s back",
            )
        if since >= until:
            raise InvalidArgument("since", "must be before until (default: now)")
        status, reason = (PENDING, None) if target.active else (HELD, "webhook disabled")
        done = await self.outbox.recover(
            project, target.webhook_id, since, until, status, reason, now
        )
        if done.recovered:
            self._wake()
        response = delivery_pb2.RecoverDeliveriesResponse(
            webhook_id=target.webhook_id,
            recovered=done.recovered,
            more=done.next_since is not None,
        )
        if done.next_since is not None:
            response.next_since.CopyFrom(timestamp(done.next_since))
        return response

    async def GetWebhookStats(
        self, request: delivery_pb2.GetWebhookStatsRequest, context: Context
    ) -> delivery_pb2.WebhookStats:
        project = self.auth.project(context.invocation_metadata())
        target = self._own_webhook(project, request.webhook_id)
        answer = delivery_pb2.WebhookStats(webhook_id=target.webhook_id)
        await self._window_stats(answer, project, [target.webhook_id], request.window)
        return answer

    async def GetProjectStats(
        self, request: delivery_pb2.GetProjectStatsRequest, context: Context
    ) -> delivery_pb2.ProjectStats:
        project = self.auth.project(context.invocation_metadata())
        stats_window(request.window)  # a bad window answers before any read
        if not self.index.ready.is_set():
            raise Unavailable("delivery is starting: the webhook list is not loaded yet")
        # The project's webhooks as delivery knows them (its index follows the
        # registry's stream): the same that GetWebhookStats answers for.
        webhook_ids = list(self.index.webhook_ids(project))
        targets = [t for t in map(self.index.get, webhook_ids) if t is not None]
        active = sum(1 for t in targets if t.active)
        answer = delivery_pb2.ProjectStats(
            webhooks=delivery_pb2.WebhookCounts(active=active, disabled=len(targets) - active)
        )
        await self._window_stats(answer, project, webhook_ids, request.window)
        answer.held = await self.outbox.held_count(project, webhook_ids)
        answer.alerts_active = await self.outbox.active_alert_count(project)
        return answer

    async def _window_stats(
        self,
        answer: delivery_pb2.WebhookStats | delivery_pb2.ProjectStats,
        project: str,
        webhook_ids: Sequence[str],
        window_name: str,
    ) -> None:
        """Fill the window's figures of `answer` (WebhookStats and
        ProjectStats name them alike) from the deliveries of `webhook_ids`."""
        window, length, bucket = stats_window(window_name)
        # Ends with the current bucket: buckets start at whole multiples of
        # their size, so successive answers line up.
        until = (math.floor(time.time() / bucket) + 1) * bucket
        since = until - length
        stats = await self.outbox.stats(
            project, webhook_ids, since, until, bucket, PERCENTILES, BUCKET_PERCENTILES
        )
        counts = stats.counts
        answer.window = window
        answer.since.CopyFrom(timestamp(since))
        answer.until.CopyFrom(timestamp(until))
        answer.deliveries.CopyFrom(
            delivery_pb2.DeliveryCounts(
                total=sum(counts.values()),
                pending=counts[PENDING],
                succeeded=counts["succeeded"],
                failed=counts["failed"],
                held=counts[HELD],
            )
        )
        answer.attempts = stats.attempts
        answer.attempts_succeeded = stats.attempts_succeeded
        answer.bucket_seconds = bucket
        if stats.attempts:
            answer.success_rate = stats.attempts_succeeded / stats.attempts
            answer.p50_duration_ms = stats.durations[50]
            answer.p95_duration_ms = stats.durations[95]
            answer.p99_duration_ms = stats.durations[99]
        found = {b.bucket: b for b in stats.buckets}
        for position in range(length // bucket):
            point = answer.series.add(start=timestamp(since + position * bucket))
            got = found.get(position)
            if got is not None:
                point.succeeded, point.retried, point.failed = got[1:4]
                point.p50_duration_ms = got.durations[50]
                point.p99_duration_ms = got.durations[99]

    async def GetDelivery(
        self, request: delivery_pb2.GetDeliveryRequest, context: Context
    ) -> delivery_pb2.DeliveryRecord:
        project = self.auth.project(context.invocation_metadata())
        found = await self.outbox.one(project, request.delivery_id)
        if found is None:
            raise NotFound(f"delivery {request.delivery_id} not found")
        row, logs = found
        stored = await self.outbox.event(project, row.event_id)
        if stored is None:  # retention deletes an event only once no delivery refers to it
            raise NotFound(f"the event of delivery {request.delivery_id} is no longer stored")
        # Rendered as the senders render it (send/payload.py): the same bytes.
        rendered = render(events_pb2.Event.FromString(stored))
        record = delivery_record(row, logs)
        record.body = rendered.body(row.webhook_id).decode()
        record.headers.update(unsigned_request_headers(rendered, row.delivery_id))
        return record


def stats_window(name: str) -> tuple[str, int, int]:
    """The stats window `name` ("" for the default): its name, length and
    bucket in seconds; InvalidArgument naming `window` for another."""
    window = name or DEFAULT_STATS_WINDOW
    if window not in STATS_WINDOWS:
        raise InvalidArgument("window", f"must be one of {', '.join(STATS_WINDOWS)}")
    length, bucket = STATS_WINDOWS[window]
    return window, length, bucket
