"""Delivery's connection to the registry: the webhook change stream and
failure reports, both over gRPC with the internal token.

The stream is followed forever: after any break the link reconnects with
backoff and jitter and takes a whole new snapshot, so the index never drifts
from the registry. Failure reports are queued and retried until the registry
has them (a lost report would leave a failing webhook enabled).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from edgesense.common.auth import bearer_metadata
from edgesense.common.backoff import backoff_delay
from edgesense.common.errors import Unavailable
from edgesense.common.grpc_tls import open_channel
from edgesense.common.tls import GrpcTls
from edgesense.delivery.webhooks.index import Target, WebhookIndex
from edgesense.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")
Change = registry_pb2.WebhookChange
SnapshotHandler = Callable[[list[Target]], Awaitable[None]]
ChangeHandler = Callable[[Target | None, Target | None], Awaitable[None]]
RECONNECT_MIN_SECONDS = 0.2
RECONNECT_MAX_SECONDS = 10.0
# gRPC's own reconnect backoff grows to 120 s, and while it waits every call
# fails at once: after a long registry outage the stream would stay down for
# up to two minutes after the registry is back. Keep it within ours.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", int(RECONNECT_MIN_SECONDS * 1000)),
    ("grpc.max_reconnect_backoff_ms", int(RECONNECT_MAX_SECONDS * 1000)),
)


def target_from(message: registry_pb2.WebhookTarget) -> Target:
    hook = message.webhook
    return Target(
        webhook_id=hook.webhook_id,
        project_id=message.project_id,
        url=hook.url,
        events=frozenset(hook.events),
        device_ids=frozenset(hook.device_ids),
        status=hook.status,
        secret=message.secret,
        disabled_reason=hook.disabled_reason if hook.HasField("disabled_reason") else None,
        previous_secrets=tuple(
            (p.secret, p.expires_at.seconds + p.expires_at.nanos / 1e9)
            for p in message.previous_secrets
        ),
        headers=tuple(sorted(message.headers.items())),
        rate_limit_per_second=hook.rate_limit_per_second,
        ordered=hook.ordered,
    )


@dataclass(frozen=True)
class FailureReport:
    webhook_id: str
    delivery_id: str
    reason: str
    # The delivery's last attempt: when it started (unix time), and the
    # receiver's status or why there was none.
    started_at: float | None = None
    status_code: int | None = None
    error: str | None = None
    # The delivery was of an operational event: the registry publishes no
    # webhook.disabled for this disable.
    operational_event: bool = False

    def request(self) -> registry_pb2.ReportDeliveryFailureRequest:
        request = registry_pb2.ReportDeliveryFailureRequest(
            webhook_id=self.webhook_id,
            delivery_id=self.delivery_id,
            reason=self.reason,
            operational_event=self.operational_event,
        )
        if self.started_at is not None:
            attempt = request.last_attempt
            attempt.started_at.FromMicroseconds(round(self.started_at * 1e6))
            if self.status_code is not None:
                attempt.status_code = self.status_code
            if self.error is not None:
                attempt.error = self.error
        return request


async def follow(
    what: str,
    address: str,
    watch: Callable[[], AsyncIterable[T]],
    consume: Callable[[AsyncIterable[T]], Awaitable[bool]],
) -> None:
    """Follow a registry change stream forever: `consume` each stream `watch`
    opens (it answers True once it loaded a snapshot); after any break,
    reconnect with backoff and jitter (reset once a stream worked)."""
    failures = 0
    while True:
        try:
            if await consume(watch()):
                failures = 0  # it worked for a while
            reason = "ended"
        except grpc.aio.AioRpcError as exc:
            reason = f"{exc.code().name}: {exc.details()}"
        except Unavailable as exc:  # applying a change to the outbox failed
            reason = exc.message
        failures += 1
        delay = backoff_delay(failures, RECONNECT_MIN_SECONDS, RECONNECT_MAX_SECONDS)
        log.warning(
            "%s stream from registry %s broke (%s); reconnecting in %.1f s (attempt %d)",
            what,
            address,
            reason,
            delay,
            failures + 1,
        )
        await asyncio.sleep(delay)


class RegistryLink:
    def __init__(
        self,
        address: str,
        token: str,
        index: WebhookIndex,
        on_snapshot: SnapshotHandler,
        on_change: ChangeHandler,
        *,
        tls: GrpcTls | None = None,
    ) -> None:
        self.address = address
        self._tls = tls or GrpcTls()
        self.index = index
        self._metadata = bearer_metadata(token)
        self._on_snapshot = on_snapshot
        self._on_change = on_change
        self._reports: asyncio.Queue[FailureReport] = asyncio.Queue()
        self._channel: grpc.aio.Channel | None = None

    def report_failure(self, report: FailureReport) -> None:
        self._reports.put_nowait(report)

    async def run(self) -> None:
        """Follow the change stream and send reports until cancelled."""
        self._channel = open_channel(self.address, self._tls, CHANNEL_OPTIONS)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._follow())
                tasks.create_task(self._send_reports())
        finally:
            await self._channel.close()

    async def _follow(self) -> None:
        assert self._channel is not None
        stub = registry_pb2_grpc.WebhookRegistryStub(self._channel)
        await follow(
            "webhook",
            self.address,
            lambda: stub.WatchWebhooks(
                registry_pb2.WatchWebhooksRequest(), metadata=self._metadata
            ),
            self._consume,
        )

    async def _consume(self, stream: AsyncIterable[registry_pb2.WebhookChange]) -> bool:
        """Apply the stream to the index; True once a snapshot was loaded."""
        snapshot: list[Target] = []
        in_snapshot = True
        async for change in stream:
            if in_snapshot:
                if change.kind == Change.KIND_SNAPSHOT:
                    snapshot.append(target_from(change.target))
                elif change.kind == Change.KIND_SNAPSHOT_END:
                    self.index.replace(snapshot)
                    log.info("webhook index loaded: %d webhooks", len(snapshot))
                    await self._on_snapshot(snapshot)
                    in_snapshot = False
                continue
            if change.kind == Change.KIND_UPSERT:
                target = target_from(change.target)
                await self._on_change(self.index.upsert(target), target)
            elif change.kind == Change.KIND_DELETE:
                await self._on_change(self.index.remove(change.target.webhook.webhook_id), None)
        return not in_snapshot

    async def _send_reports(self) -> None:
        assert self._channel is not None
        stub = registry_pb2_grpc.WebhookRegistryStub(self._channel)
        while True:
            report = await self._reports.get()
            failures = 0
            while True:
                try:
                    await stub.ReportDeliveryFailure(
                        report.request(),
                        metadata=self._metadata,
                        timeout=10,
                    )
                    break
                except grpc.aio.AioRpcError as exc:
                    failures += 1
                    delay = backoff_delay(failures, RECONNECT_MIN_SECONDS, RECONNECT_MAX_SECONDS)
                    log.warning(
                        "cannot report the failure of %s to the registry (%s); retrying in %.1f s",
                        report.webhook_id,
                        exc.code().name,
                        delay,
                    )
                    await asyncio.sleep(delay)
