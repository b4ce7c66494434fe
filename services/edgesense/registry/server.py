"""Wiring of the registry process: database, migrations, servicer, gRPC server,
and the task that publishes operational events to delivery (forwarder.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from edgesense.common.auth import Authenticator
from edgesense.common.config import Settings
from edgesense.common.grpc_runtime import GrpcServer, wait_for_signal
from edgesense.common.metrics_http import MetricsServer
from edgesense.common.netpolicy import UrlPolicy
from edgesense.common.paging import PageTokens
from edgesense.registry.forwarder import OperationalForwarder
from edgesense.registry.secretbox import SecretBox
from edgesense.registry.service import RegistryService
from edgesense.registry.store import WebhookStore
from edgesense.storage.engine import create_engine, dispose_engine
from edgesense.storage.migrate import migrate
from edgesense.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["WebhookRegistry"].full_name


@dataclass
class RunningRegistry:
    server: GrpcServer
    engine: AsyncEngine
    port: int
    service: RegistryService
    forwarder: OperationalForwarder
    forwarding: asyncio.Task[None]

    async def stop(self, grace: float = 5.0) -> None:
        # Watch streams never end on their own: end them, or stopping would
        # always wait out the whole grace period.
        self.service.stop_watches()
        await self.server.stop(grace)
        # Rows it had not seen confirmed stay, for the next start (or another
        # replica) to publish.
        self.forwarding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.forwarding
        await dispose_engine(self.engine)


async def start_registry(
    settings: Settings, addr: str | None = None, delivery_addr: str | None = None
) -> RunningRegistry:
    """Migrate the database and start serving on `addr` (default: the configured
    one); operational events go to delivery at `delivery_addr` (default: the
    configured one)."""
    api_keys = settings.require_api_keys()
    box = SecretBox(settings.require_secret_key())
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine, "registry")
        store = WebhookStore(engine, box)
        service = RegistryService(
            store,
            Authenticator(api_keys, settings.service_token()),
            UrlPolicy(settings.allow_insecure_urls, settings.allow_private_networks),
            PageTokens(settings.service_token()),
            settings.max_webhooks_per_project or None,
        )
        server = GrpcServer.for_service(
            lambda s: registry_pb2_grpc.add_WebhookRegistryServicer_to_server(service, s),
            SERVICE_NAME,
            settings,
            service.auth,
            bdp_probe=False,  # small requests: a refused call leaves at most 64 KiB
        )
        port = await server.start(addr or settings.registry_addr)
    except BaseException:
        await engine.dispose()
        raise
    forwarder = OperationalForwarder(
        store,
        delivery_addr or settings.delivery_addr,
        settings.service_token(),
        settings.grpc_tls,
    )
    forwarding = asyncio.create_task(forwarder.run(), name="operational-events")
    return RunningRegistry(server, engine, port, service, forwarder, forwarding)


async def run_registry(settings: Settings, stop: asyncio.Event | None = None) -> None:
    # Metrics first: a taken metrics address stops the start before anything
    # else was opened (nothing half-started to clean up).
    metrics = await MetricsServer.start(settings.metrics_addr("registry"))
    try:
        registry = await start_registry(settings)
        log.info(
            "registry listening on %s (metrics on %s)", settings.registry_addr, metrics.address
        )
        try:
            await wait_for_signal(stop)
        finally:
            log.info("registry stopping")
            await registry.stop()
    finally:
        await metrics.stop()
