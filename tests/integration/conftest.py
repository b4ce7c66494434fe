"""The registry and the REST API as real servers on free ports, driven over HTTP."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from edgesense.api.server import RunningApi, start_api
from edgesense.common.config import Settings
from edgesense.delivery.server import start_delivery
from edgesense.registry.server import RunningRegistry, start_registry
from tests.conftest import key_of
from tests.integration.cluster import Cluster
from tests.support.processes import Processes
from tests.support.receivers import Receiver


@dataclass
class Api:
    """An HTTP client of the REST API, with each project's key at hand."""

    http: httpx.AsyncClient
    keys: dict[str, str]
    registry: RunningRegistry
    server: RunningApi
    settings: Settings

    def auth(self, project: str = "project-a") -> dict[str, str]:
        return {"Authorization": f"Bearer {key_of(self.keys, project)}"}


@contextlib.asynccontextmanager
async def serving_api(settings: Settings, api_keys: dict[str, str]) -> AsyncIterator[Api]:
    """The registry and the REST API with `settings`, stopped on leaving."""
    # No delivery: operational events stay unpublished (nothing listens there).
    registry = await start_registry(settings, "127.0.0.1:0", "127.0.0.1:1")
    server = await start_api(
        {
            "edgesense.v1.WebhookRegistry": f"127.0.0.1:{registry.port}",
            "edgesense.v1.AlertRules": f"127.0.0.1:{registry.port}",
            # Delivery is not running in these tests: its routes answer 503.
            "edgesense.v1.Delivery": "127.0.0.1:1",
        }
    )
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            yield Api(http, api_keys, registry, server, settings)
    finally:
        await server.stop()
        await registry.stop(0)


@pytest.fixture
async def api(settings: Settings, api_keys: dict[str, str]) -> AsyncIterator[Api]:
    async with serving_api(settings, api_keys) as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on a free port that answers 200."""
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
def cluster_env(database_url: str, api_keys: dict[str, str], secret_key: str) -> dict[str, str]:
    """Settings for a cluster that sends to loopback receivers quickly."""
    return {
        "EDGESENSE_DATABASE_URL": database_url,
        "EDGESENSE_API_KEYS": ",".join(f"{k}={p}" for k, p in api_keys.items()),
        "EDGESENSE_SECRET_KEY": secret_key,
        "EDGESENSE_ALLOW_INSECURE_URLS": "1",
        "EDGESENSE_ALLOW_PRIVATE_NETWORKS": "1",
        "EDGESENSE_RETRY_BASE_SECONDS": "0.05",
        "EDGESENSE_RETRY_MAX_SECONDS": "5",
        "EDGESENSE_DELIVERY_TIMEOUT_SECONDS": "1",
        "EDGESENSE_DELIVERY_LEASE_SECONDS": "10",
    }


@pytest.fixture
async def cluster(cluster_env: dict[str, str], api_keys: dict[str, str]) -> AsyncIterator[Cluster]:
    settings = Settings.from_env(cluster_env, dev=False)
    registry = await start_registry(settings, "127.0.0.1:0")
    settings = dataclasses.replace(settings, registry_addr=f"127.0.0.1:{registry.port}")
    delivery = await start_delivery(settings, "127.0.0.1:0")
    # Operational events go to this delivery, whose port is known only now.
    registry.forwarder.delivery_addr = f"127.0.0.1:{delivery.port}"
    server = await start_api(
        {
            "edgesense.v1.WebhookRegistry": f"127.0.0.1:{registry.port}",
            "edgesense.v1.AlertRules": f"127.0.0.1:{registry.port}",
            "edgesense.v1.Delivery": f"127.0.0.1:{delivery.port}",
            "edgesense.v1.Devices": f"127.0.0.1:{delivery.port}",
        }
    )
    running: Cluster | None = None
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            running = Cluster(settings, api_keys, registry, delivery, server, http)
            yield running
    finally:
        await server.stop()
        await delivery.stop(0)
        # The registry the cluster has now: a test may have restarted it.
        await (running.registry if running is not None else registry).stop(0)


@pytest.fixture
def processes(database_url: str, service_processes: Processes) -> Processes:
    """`service_processes` killed before their database is dropped: taken
    after `database_url`, they are set up after the database and torn down
    before it. (Tests that need no database take `service_processes`.)"""
    return service_processes
