"""A broker that does not speak the bridge's MQTT version ends the bridge with
one configuration error naming EDGESENSE_MQTT_PROTOCOL, instead of retrying
forever: the embedded amqtt broker (it never answers an MQTT 5 CONNECT), and
a broker that refuses the version outright (CONNACK "unacceptable protocol
version", as Mosquitto 1.4 answers)."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest

from edgesense.common.config import Settings
from edgesense.common.mqtt_probe import MQTT_5, MQTT_311, broker_answers
from edgesense_bridge import mqtt_adapter
from edgesense_bridge.errors import ProtocolRefused
from edgesense_bridge.server import Bridge
from tests.bridge.conftest import bridge_options
from tests.bridge.delivery_double import FakeDelivery
from tests.support.broker import Mosquitto
from tests.support.ports import free_port, wait_for_port


@pytest.fixture(scope="module")
def amqtt_url() -> Iterator[str]:
    port = free_port()
    broker = subprocess.Popen(
        [sys.executable, "-m", "edgesense.embedded_broker", "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        broker.terminate()
        broker.wait(10)


@pytest.fixture
async def refusing_url() -> AsyncIterator[str]:
    """A broker that answers every CONNECT with 3.1.1's return code 1."""

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"\x20\x02\x00\x01")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    try:
        yield f"mqtt://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


def test_the_probe_tells_the_versions_apart(amqtt_url: str, mosquitto: Mosquitto) -> None:
    amqtt_port = int(amqtt_url.rsplit(":", 1)[1])
    assert broker_answers("127.0.0.1", amqtt_port, level=MQTT_311)
    assert not broker_answers("127.0.0.1", amqtt_port, level=MQTT_5)
    assert broker_answers("127.0.0.1", mosquitto.port, level=MQTT_311)
    assert broker_answers("127.0.0.1", mosquitto.port, level=MQTT_5)
    assert not broker_answers("127.0.0.1", free_port())


async def refused_by(
    url: str, settings: Settings, delivery: FakeDelivery, prefix: str
) -> ProtocolRefused:
    """Run an MQTT 5 bridge against `url`: it must end with ProtocolRefused."""
    bridge = Bridge(
        dataclasses.replace(settings, delivery_addr=delivery.addr), bridge_options(url, prefix)
    )
    with pytest.raises(ProtocolRefused) as refused:
        await asyncio.wait_for(bridge.run(asyncio.Event(), addr="127.0.0.1:0"), 20)
    assert "set EDGESENSE_MQTT_PROTOCOL=3.1.1" in refused.value.message
    assert f"broker at {url} does not speak MQTT 5" in refused.value.message
    return refused.value


async def test_mqtt_5_against_amqtt_is_a_configuration_error(
    amqtt_url: str,
    settings: Settings,
    delivery: FakeDelivery,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mqtt_adapter, "CONNACK_TIMEOUT_SECONDS", 1.0)  # amqtt never answers
    refused = await refused_by(amqtt_url, settings, delivery, prefix)
    assert "no CONNACK in time to an MQTT 5 CONNECT; it answers MQTT 3.1.1" in refused.message


async def test_a_broker_refusing_mqtt_5_is_a_configuration_error(
    refusing_url: str, settings: Settings, delivery: FakeDelivery, prefix: str
) -> None:
    refused = await refused_by(refusing_url, settings, delivery, prefix)
    assert "it refused MQTT 5: Unsupported protocol version" in refused.message


async def test_mqtt_311_works_with_the_embedded_broker(
    amqtt_url: str, settings: Settings, delivery: FakeDelivery, prefix: str
) -> None:
    options = bridge_options(amqtt_url, prefix, mqtt5=False)
    bridge = Bridge(dataclasses.replace(settings, delivery_addr=delivery.addr), options)
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop, addr="127.0.0.1:0"))
    try:
        await asyncio.wait_for(bridge.connection.subscribed.wait(), 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
