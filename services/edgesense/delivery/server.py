"""Wiring of the delivery process: what starts, in what order, and how it stops.

Start (start_delivery): check the gRPC address is free; migrate the
database; open the outbox, the webhook index and the senders (started, so
sender processes are up before anything is claimed); the reconciler, the
dispatcher (with its outcome writer), the registry link, the devices view's
tracker and the acceptor; the gRPC services (Delivery and Devices). Then
the tasks run: the dispatcher (it claims only once
the registry's first snapshot has filled the index), the registry link, the
acceptor, the rules link, the alert endings, the devices view's flusher
and the outbox maintenance; beside them, one chore, a task that ends
when done: building PostgreSQL's online indexes (store/online_indexes.py,
minutes on a large table after an upgrade, while the process serves; the
maintenance's retention waits for it); and
last the gRPC server opens, so Publish is served only by a process that can
store and send.

Stop (RunningDelivery.stop): Publish streams end once what they read is
confirmed; the gRPC server stops; the dispatcher hands back its queued
deliveries, finishes the attempts in flight and writes their outcomes; the
other tasks and the chores are cancelled; then the senders, the outbox and the database
engine close.

Failures, one rule: the loops go on where they can, and the process stops
where they cannot (crash-only). The claim loop, the outcome writer and the
outbox maintenance log any error (throttled) and go on after a short pause;
the registry link reconnects after a broken stream; the acceptor answers a
commit the database refused with an error to its Publish batches. A task
that ends all the same before stop() (a bug past those guards, e.g. an
unexpected error in the acceptor's commit) is not restarted in place: it is
logged, the process stops as on SIGTERM, and run_delivery raises SystemExit
(exit status 1) for a supervisor to start it again. Nothing is lost by that:
every accepted event is in the outbox, a lease not handed back expires, and
the bridge sends again what Publish did not confirm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from edgesense.common.auth import Authenticator
from edgesense.common.config import Settings
from edgesense.common.grpc_runtime import GrpcServer
from edgesense.common.ids import new_id
from edgesense.common.listen import ensure_free
from edgesense.common.metrics_http import MetricsServer
from edgesense.common.paging import PageTokens
from edgesense.common.runtime import stop_on_signals
from edgesense.delivery.accept.acceptor import Acceptor
from edgesense.delivery.claim.dispatcher import Dispatcher
from edgesense.delivery.devices.service import DevicesService
from edgesense.delivery.devices.tracker import DeviceTracker
from edgesense.delivery.record.maintenance import build_indexes_until_done, maintain
from edgesense.delivery.record.policy import RetryPolicy
from edgesense.delivery.record.reconciler import Reconciler
from edgesense.delivery.rules.index import RuleIndex
from edgesense.delivery.rules.link import AlertEndings, RulesLink
from edgesense.delivery.send.attempt import Sender
from edgesense.delivery.send.http_sender import HttpSender
from edgesense.delivery.send.senders import SenderPool
from edgesense.delivery.service import DeliveryService
from edgesense.delivery.store.outbox import Outbox, open_outbox
from edgesense.delivery.webhooks.index import WebhookIndex
from edgesense.delivery.webhooks.registry_link import RegistryLink
from edgesense.v1 import delivery_pb2, delivery_pb2_grpc, devices_pb2, devices_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = delivery_pb2.DESCRIPTOR.services_by_name["Delivery"].full_name
DEVICES_SERVICE_NAME = devices_pb2.DESCRIPTOR.services_by_name["Devices"].full_name


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
    # The names of `tasks` that ended before stop() (see the module docstring).
    ended: list[str] = field(default_factory=list)
    # Tasks that end when their work is done (not watched), cancelled at stop().
    chores: list[asyncio.Task[None]] = field(default_factory=list)
    _stopping: bool = False

    def watch(self, on_end: Callable[[], None]) -> None:
        """Call `on_end` when one of `tasks` ends before stop() (it is logged)."""

        def ended(task: asyncio.Task[None]) -> None:
            if self._stopping:
                return
            name = task.get_name()
            if task.cancelled():
                log.error("delivery's %s task was cancelled; stopping", name)
            elif (error := task.exception()) is not None:
                log.error("delivery's %s task failed; stopping", name, exc_info=error)
            else:
                log.error("delivery's %s task ended; stopping", name)
            self.ended.append(name)
            on_end()

        for task in self.tasks:
            task.add_done_callback(ended)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking events, finish or hand back claimed work, then close."""
        self._stopping = True
        self.service.stop_publishing()  # Publish streams never end on their own
        await self.server.stop(grace)
        self.dispatcher.stop()
        dispatcher_task, *others = self.tasks
        with contextlib.suppress(Exception):
            await dispatcher_task
        for task in (*others, *self.chores):
            task.cancel()
        await asyncio.gather(*others, *self.chores, return_exceptions=True)
        await self.sender.close()
        await self.outbox.close()


async def start_delivery(settings: Settings, addr: str | None = None) -> RunningDelivery:
    """Migrate, connect to the registry, and start serving and sending."""
    auth = Authenticator(settings.require_api_keys(), settings.service_token())
    ensure_free(addr or settings.delivery_addr)  # before the senders and the link start
    outbox = await open_outbox(settings.database_url, build_indexes=False)  # a chore, below
    index = WebhookIndex()
    sender: Sender = (
        SenderPool.from_settings(settings)
        if settings.delivery_senders
        else HttpSender.from_settings(settings)
    )
    try:
        await sender.start()
    except BaseException:
        await outbox.close()  # nothing else holds it yet
        raise
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
    reconciler.attach(dispatcher.wake, link.report_failure, dispatcher.limits_changed)
    rules = RuleIndex()
    devices = DeviceTracker(outbox.devices)
    acceptor = Acceptor(outbox, index, dispatcher, settings.outbox_limit, rules, devices)
    endings = AlertEndings(
        outbox, rules, acceptor.alert_targets, dispatcher.stored_unleased, index.ready
    )
    rules_link = RulesLink(
        settings.registry_addr, settings.service_token(), rules, endings, tls=settings.grpc_tls
    )
    service = DeliveryService(
        outbox,
        index,
        acceptor,
        auth,
        dispatcher.wake,
        PageTokens(settings.service_token()),
        recover_max_age_seconds=settings.retention_seconds,
        rules_loaded=endings.loaded,
    )
    devices_service = DevicesService(outbox.devices, auth, PageTokens(settings.service_token()))
    server = GrpcServer.for_services(
        [
            lambda s: delivery_pb2_grpc.add_DeliveryServicer_to_server(service, s),
            lambda s: devices_pb2_grpc.add_DevicesServicer_to_server(devices_service, s),
        ],
        [SERVICE_NAME, DEVICES_SERVICE_NAME],
        settings,
        auth,
    )
    indexes_built = asyncio.Event()  # retention waits for it
    tasks = [  # the dispatcher first: stop() waits for it, and cancels the others
        asyncio.create_task(dispatcher.run(), name="dispatcher"),
        asyncio.create_task(link.run(), name="registry-link"),
        asyncio.create_task(acceptor.run(), name="acceptor"),
        asyncio.create_task(rules_link.run(), name="rules-link"),
        asyncio.create_task(endings.run(), name="alert-endings"),
        asyncio.create_task(devices.run(), name="devices-view"),
        asyncio.create_task(
            maintain(outbox, acceptor.begin_pending_count, settings, indexes_built),
            name="maintenance",
        ),
    ]
    chores = [
        asyncio.create_task(build_indexes_until_done(outbox, indexes_built), name="online-indexes")
    ]
    running = RunningDelivery(
        server, outbox, sender, service, dispatcher, index, 0, tasks, chores=chores
    )
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
        event = stop or asyncio.Event()
        delivery.watch(event.set)
        try:
            with stop_on_signals(event) if stop is None else contextlib.nullcontext():
                await event.wait()
        finally:
            log.info("delivery stopping")
            await delivery.stop()
        if delivery.ended:
            raise SystemExit(f"delivery stopped: its {', '.join(delivery.ended)} task ended")
    finally:
        await metrics_server.stop()
