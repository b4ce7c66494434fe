"""Fixtures for the bridge tests: a real Mosquitto, a recording Delivery server,
bridges in this process or as `edgesense bridge` subprocesses.

Mosquitto is session-scoped; every test gets its own topic prefix and client
ids, so tests never see each other's messages or sessions. Without the
mosquitto binary the MQTT tests skip and say why (a failure under
EDGESENSE_TEST_STRICT=1).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from edgesense.common.config import Settings
from edgesense_bridge.server import Bridge
from edgesense_bridge.settings import BridgeSettings
from tests.bridge.delivery_double import FakeDelivery
from tests.support.broker import MOSQUITTO, Gateway, Mosquitto

TOKEN = "internal-test-token"
API_KEY = "bridge-test-key"
PROJECT = "proj-1"


def _require_mosquitto() -> None:
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.skip(f"the bridge tests need Mosquitto at {MOSQUITTO} (apt-get install mosquitto)")


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    _require_mosquitto()
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Brokers of this test's own (to stop, restart, or give TLS and passwords)."""
    _require_mosquitto()
    started: list[Mosquitto] = []

    def make(**options: object) -> Mosquitto:
        broker = Mosquitto(tmp_path, **options)  # type: ignore[arg-type]
        broker.start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def prefix() -> str:
    return f"es-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings() -> Settings:  # overrides the database-backed one of tests/conftest.py
    return Settings.from_env(
        {"EDGESENSE_API_KEYS": f"{API_KEY}={PROJECT}", "EDGESENSE_INTERNAL_TOKEN": TOKEN},
        dev=False,
    )


@contextlib.asynccontextmanager
async def delivery_double() -> AsyncIterator[FakeDelivery]:
    """A started FakeDelivery that accepts TOKEN, stopped on leaving."""
    double = FakeDelivery(TOKEN)
    await double.start()
    try:
        yield double
    finally:
        await double.stop()


@pytest.fixture
async def delivery() -> AsyncIterator[FakeDelivery]:
    async with delivery_double() as double:
        yield double


@pytest.fixture
def gateway(mosquitto: Mosquitto) -> Iterator[Gateway]:
    client = Gateway(mosquitto.port, f"gw-{uuid.uuid4().hex[:8]}")
    try:
        yield client
    finally:
        client.close()


def bridge_options(url: str, prefix: str, **overrides: object) -> BridgeSettings:
    """Our own topics only, under the test's prefix, unless `inputs` says otherwise:
    Sparkplug's spBv1.0/ is one namespace for the whole broker, and its retained
    STATE messages would be replayed to (and counted by) every later bridge."""
    options = BridgeSettings.from_env({}, mqtt_url=url, topic_prefix=prefix)
    client_id = f"bridge-{uuid.uuid4().hex[:8]}"
    overrides = {"client_id": client_id, "inputs": ("edgesense",), **overrides}
    return dataclasses.replace(options, **overrides)  # type: ignore[arg-type]


@asynccontextmanager
async def running_bridge(
    settings: Settings, delivery: FakeDelivery, options: BridgeSettings
) -> AsyncIterator[Bridge]:
    """A bridge in this process, subscribed when this yields; stopped gracefully after."""
    bridge = Bridge(dataclasses.replace(settings, delivery_addr=delivery.addr), options)
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop, addr="127.0.0.1:0"))
    try:
        await asyncio.wait_for(bridge.connection.subscribed.wait(), 10)
        yield bridge
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def sample(name: str, **labels: str) -> float:
    """A metric's current value in this process (0 if never set)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
