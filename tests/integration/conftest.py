"""The registry and the gateway as real servers on free ports, driven over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from edgesense.config import Settings
from edgesense.gateway.server import RunningGateway, start_gateway
from edgesense.registry.server import RunningRegistry, start_registry
from tests.conftest import key_of


@dataclass
class Api:
    """An HTTP client of the gateway, with each project's key at hand."""

    http: httpx.AsyncClient
    keys: dict[str, str]
    registry: RunningRegistry
    gateway: RunningGateway
    settings: Settings

    def auth(self, project: str = "project-a") -> dict[str, str]:
        return {"Authorization": f"Bearer {key_of(self.keys, project)}"}


@pytest.fixture
async def api(settings: Settings, api_keys: dict[str, str]) -> AsyncIterator[Api]:
    registry = await start_registry(settings, "127.0.0.1:0")
    gateway = await start_gateway(
        {
            "edgesense.v1.WebhookRegistry": f"127.0.0.1:{registry.port}",
            # Delivery is not running in these tests: its routes answer 503.
            "edgesense.v1.Delivery": "127.0.0.1:1",
        }
    )
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            yield Api(http, api_keys, registry, gateway, settings)
    finally:
        await gateway.stop()
        await registry.stop(0)
