"""Wiring of the delivery process: database, index, registry link, acceptor,
dispatcher, gRPC server, and the order in which they start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from dataclasses import dataclass, field

from edgesense.common.auth import Authenticator
from edgesense.common.config import Settings
from edgesense.common.errors import Unavailable
from edgesense.common.grpc_runtime import GrpcServer, wait_for_signal
from edgesense.common.ids import new_id
from edgesense.common.listen import ensure_free
from edgesense.common.metrics_http import MetricsServer
from edgesense.common.paging import PageTokens
from edgesense.delivery import metrics
from edgesense.delivery.accept.acceptor import Acceptor
from edgesense.delivery.claim.dispatcher import Dispatcher
from edgesense.delivery.record.policy import RetryPolicy
from edgesense.delivery.send.attempt import Sender
from edgesense.delivery.send.http_sender import HttpSender
from edgesense.delivery.send.senders import SenderPool
from edgesense.delivery.service import DeliveryService
from edgesense.delivery.store.outbox import Outbox, Outcome, open_outbox
from edgesense.delivery.webhooks.index import DISABLED, Target, WebhookIndex
from edgesense.delivery.webhooks.registry_link import FailureReport, RegistryLink
from edgesense.v1 import delivery_pb2, delivery_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = delivery_pb2.DESCRIPTOR.services_by_name["Delivery"].full_name
COUNT_EVERY_SECONDS = 2.0
EXPIRE_EVERY_SECONDS = 60.0


def expiry_period(held_retention_seconds: float) -> float:
    """How often held deliveries are checked for expiry: every minute, or every
    half retention when that is shorter, so a delivery is not held much past its
    retention (checks run with the maintenance loop: at most every 2 s)."""
    return min(EXPIRE_EVERY_SECONDS, held_retention_seconds / 2)


class Reconciler:
    """Keeps delivery states in step with webhook states."""

    dispatcher: Dispatcher
    link: RegistryLink

    def __init__(self, outbox: Outbox, index: WebhookIndex) -> None:
        self.outbox = outbox
        self.index = index

    def attach(self, dispatcher: Dispatcher, link: RegistryLink) -> None:
        """The two collaborators that themselves call back into the reconciler."""
        self.dispatcher = dispatcher
        self.link = link

    async def on_snapshot(self, targets: list[Target]) -> None:
        now = time.time()
        released = await self.outbox.release_held([t.webhook_id for t in targets if t.active], now)
        held = await self.outbox.hold(
            [t.webhook_id for t in targets if not t.active], "webhook disabled", now
        )
        if released or held:
            log.info("after the webhook snapshot: %d deliveries released, %d held", released, held)
        self.dispatcher.wake()

    async def on_change(self, previous: Target | None, current: Target | None) -> None:
        now = time.time()
        if current is None:
            if previous is not None:
                failed = await self.outbox.fail_all([previous.webhook_id], "webhook deleted", now)
                log.info(
                    "webhook %s deleted: %d open deliveries failed", previous.webhook_id, failed
                )
        elif not current.active and (previous is None or previous.active):
            held = await self.outbox.hold([current.webhook_id], "webhook disabled", now)
            log.info("webhook %s disabled: %d deliveries held", current.webhook_id, held)
        elif current.active and previous is not None and not previous.active:
            released = await self.outbox.release_held([current.webhook_id], now)
            log.info("webhook %s enabled: sending %d held deliveries", current.webhook_id, released)
            self.dispatcher.wake()

    async def on_exhausted(self, target: Target, outcome: Outcome) -> None:
        reason = outcome.status_reason or "all attempts failed"
        log.warning(
            "delivery %s to %s failed: %s; disabling the webhook",
            outcome.delivery_id,
            target.webhook_id,
            reason,
        )
        self.index.upsert(dataclasses.replace(target, status=DISABLED, disabled_reason=reason))
        await self.outbox.hold([target.webhook_id], "webhook disabled", time.time())
        self.link.report_failure(FailureReport(target.webhook_id, outcome.delivery_id, reason))


@dataclass
class RunningDelivery:
    server: GrpcServer
    outbox: Outbox
    sender: Sender
    service: DeliveryService
    dispatcher: Dispatcher
    index: WebhookIndex
    port: int
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking events, finish or hand back claimed work, then close."""
        self.service.stop_publishing()  # Publish streams never end on their own
        await self.server.stop(grace)
        self.dispatcher.stop()
        dispatcher_task, *others = self.tasks
        with contextlib.suppress(Exception):
            await dispatcher_task
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self.sender.close()
        await self.outbox.close()


async def _maintain(outbox: Outbox, acceptor: Acceptor, settings: Settings) -> None:
    last_expiry = 0.0
    expire_every = expiry_period(settings.held_retention_seconds)
    while True:
        try:
            created_before = acceptor.created_total
            counts = await outbox.counts()
            # Deliveries accepted while counting may be missing from the count;
            # overwriting the acceptor's tally with it would drop them.
            created_meanwhile = acceptor.created_total - created_before
            acceptor.pending_deliveries = counts["pending"] + created_meanwhile
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
        await asyncio.sleep(COUNT_EVERY_SECONDS)


async def start_delivery(settings: Settings, addr: str | None = None) -> RunningDelivery:
    """Migrate, connect to the registry, and start serving and sending."""
    auth = Authenticator(settings.require_api_keys(), settings.service_token())
    ensure_free(addr or settings.delivery_addr)  # before the senders and the link start
    outbox = await open_outbox(settings.database_url)
    index = WebhookIndex()
    sender: Sender = (
        SenderPool.from_settings(settings)
        if settings.delivery_senders
        else HttpSender.from_settings(settings)
    )
    await sender.start()
    owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{new_id('w', 6)}"
    reconciler = Reconciler(outbox, index)
    dispatcher = Dispatcher(
        outbox,
        index,
        sender,
        RetryPolicy(settings.max_retries, settings.retry_base_seconds, settings.retry_max_seconds),
        owner=owner,
        lease_seconds=settings.lease_seconds,
        concurrency=settings.delivery_concurrency,
        per_target=settings.delivery_per_target,
        per_project=settings.delivery_per_project,
        on_exhausted=reconciler.on_exhausted,
    )

    link = RegistryLink(
        settings.registry_addr,
        settings.service_token(),
        index,
        reconciler.on_snapshot,
        reconciler.on_change,
        tls=settings.grpc_tls,
    )
    reconciler.attach(dispatcher, link)
    acceptor = Acceptor(outbox, index, dispatcher, settings.outbox_limit)
    service = DeliveryService(
        outbox, index, acceptor, auth, dispatcher.wake, PageTokens(settings.service_token())
    )
    server = GrpcServer.for_service(
        lambda s: delivery_pb2_grpc.add_DeliveryServicer_to_server(service, s),
        SERVICE_NAME,
        settings,
        auth,
    )
    tasks = [
        asyncio.create_task(dispatcher.run(), name="dispatcher"),
        asyncio.create_task(link.run(), name="registry-link"),
        asyncio.create_task(acceptor.run(), name="acceptor"),
        asyncio.create_task(_maintain(outbox, acceptor, settings), name="maintenance"),
    ]
    running = RunningDelivery(server, outbox, sender, service, dispatcher, index, 0, tasks)
    try:
        running.port = await server.start(addr or settings.delivery_addr)
    except BaseException:
        await running.stop(0)
        raise
    log.info("delivery worker %s started", owner)
    return running


async def run_delivery(settings: Settings, stop: asyncio.Event | None = None) -> None:
    # Metrics first: a taken metrics address stops the start before the
    # database, the senders and the registry link were opened.
    metrics_server = await MetricsServer.start(settings.metrics_addr("delivery"))
    try:
        delivery = await start_delivery(settings)
        log.info(
            "delivery listening on %s (metrics on %s)",
            settings.delivery_addr,
            metrics_server.address,
        )
        try:
            await wait_for_signal(stop)
        finally:
            log.info("delivery stopping")
            await delivery.stop()
    finally:
        await metrics_server.stop()
