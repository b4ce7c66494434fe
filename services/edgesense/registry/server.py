"""Wiring of the registry process: database, migrations, the servicers
(webhooks, alert rules) on one gRPC server, and the task that publishes
operational events to delivery (forwarder.py)."""

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
from edgesense.registry.rules_service import AlertRulesServicer
from edgesense.registry.rules_store import MAX_RULES_PER_PROJECT, RuleStore
from edgesense.registry.secretbox import SecretBox
from edgesense.registry.service import RegistryService
from edgesense.registry.store import WebhookStore
from edgesense.storage.engine import create_engine, dispose_engine, writer_lock
from edgesense.storage.migrate import migrate
from edgesense.v1 import registry_pb2, registry_pb2_grpc, rules_pb2, rules_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["WebhookRegistry"].full_name
RULES_SERVICE_NAME = rules_pb2.DESCRIPTOR.services_by_name["AlertRules"].full_name


@dataclass
class RunningRegistry:
    server: GrpcServer
    engine: AsyncEngine
    port: int
    service: RegistryService
    forwarder: OperationalForwarder
    forwarding: asyncio.Task[None]
    rules: AlertRulesServicer

    async def stop(self, grace: float = 5.0) -> None:
        # Watch streams never end on their own: end them, or stopping would
        # always wait out the whole grace period.
        self.service.stop_watches()
        self.rules.stop_watches()
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
        # One writer lock for both stores: on SQLite their writes queue on it
        # before SQLite's own lock (see storage.engine.writer_lock).
        writes = writer_lock(engine)
        store = WebhookStore(engine, box, writes)
        auth = Authenticator(api_keys, settings.service_token())
        page_tokens = PageTokens(settings.service_token())
        service = RegistryService(
            store,
            auth,
            UrlPolicy(settings.allow_insecure_urls, settings.allow_private_networks),
            page_tokens,
            settings.max_webhooks_per_project or None,
        )
        rules = AlertRulesServicer(
            RuleStore(engine, writes), auth, page_tokens, MAX_RULES_PER_PROJECT
        )
        server = GrpcServer.for_services(
            [
                lambda s: registry_pb2_grpc.add_WebhookRegistryServicer_to_server(service, s),
                lambda s: rules_pb2_grpc.add_AlertRulesServicer_to_server(rules, s),
            ],
            [SERVICE_NAME, RULES_SERVICE_NAME],
            settings,
            auth,
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
    return RunningRegistry(server, engine, port, service, forwarder, forwarding, rules)


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
