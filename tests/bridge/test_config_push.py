"""Config push: PushConfig (gRPC and its REST route) publishes to …/config/set
with QoS 1; the gateway's confirmation on …/config becomes config.update."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator

import grpc
import httpx
import paho.mqtt.client as paho
import pytest
from google.protobuf import struct_pb2
from paho.mqtt.enums import CallbackAPIVersion

from edgesense.api.server import start_api
from edgesense.common.auth import bearer_metadata
from edgesense.common.config import Settings
from edgesense.v1 import devices_pb2, devices_pb2_grpc
from edgesense_bridge.server import Bridge
from tests.bridge.conftest import API_KEY, PROJECT, bridge_options, running_bridge
from tests.bridge.delivery_double import FakeDelivery
from tests.support.broker import Gateway, Mosquitto
from tests.support.waiting import eventually


class ConfigListener:
    """A gateway's subscription to its devices' config/set topics."""

    def __init__(self, port: int, topic: str) -> None:
        self.received: list[tuple[str, bytes, str | None]] = []
        subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        # A message published before the broker's SUBACK could miss us.
        assert subscribed.wait(10), f"the broker never acknowledged the subscription to {topic}"

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        content_type = getattr(message.properties, "ContentType", None)
        self.received.append((message.topic, bytes(message.payload), content_type))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
async def bridge(
    mosquitto: Mosquitto, delivery: FakeDelivery, settings: Settings, prefix: str
) -> AsyncIterator[Bridge]:
    async with running_bridge(settings, delivery, bridge_options(mosquitto.url, prefix)) as b:
        yield b


@pytest.fixture
def listener(mosquitto: Mosquitto, prefix: str) -> Iterator[ConfigListener]:
    listening = ConfigListener(mosquitto.port, f"{prefix}/+/+/+/config/set")
    yield listening
    listening.close()


async def test_push_over_grpc_then_the_confirmation_becomes_config_update(
    bridge: Bridge,
    listener: ConfigListener,
    gateway: Gateway,
    delivery: FakeDelivery,
    prefix: str,
) -> None:
    config = struct_pb2.Struct()
    config.update({"interval": 30, "thresholds": {"temperature": 80}})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = devices_pb2_grpc.DeviceConfigStub(channel)
        request = devices_pb2.PushConfigRequest(gateway_id="gw-1", device_id="dev-1", config=config)
        answer = await stub.PushConfig(request, metadata=bearer_metadata(API_KEY))
    topic = f"{prefix}/{PROJECT}/gw-1/dev-1/config/set"
    assert (answer.topic, answer.status) == (topic, "published")
    await eventually(lambda: len(listener.received) == 1, 5, "the config/set message")
    assert listener.received[0][0] == topic
    assert json.loads(listener.received[0][1]) == {
        "interval": 30,
        "thresholds": {"temperature": 80},
    }
    assert listener.received[0][2] == "application/json"

    applied = f"{prefix}/{PROJECT}/gw-1/dev-1/config"
    await gateway.publish([(applied, listener.received[0][1], None)])
    await delivery.wait_for(lambda: len(delivery.stored) == 1, what="config.update")
    (event,) = delivery.stored.values()
    assert event.WhichOneof("kind") == "configuration"
    assert event.configuration.values == config
    assert (event.gateway_id, event.device_id) == ("gw-1", "dev-1")
    assert len(delivery.received) == 1, "our own config/set publication is not an event"


async def test_push_over_rest_through_the_api(
    bridge: Bridge, listener: ConfigListener, prefix: str
) -> None:
    http = await start_api({"edgesense.v1.DeviceConfig": f"127.0.0.1:{bridge.port}"})
    try:
        async with httpx.AsyncClient(base_url=http.url, timeout=10) as client:
            url = "/api/gateways/gw-2/devices/dev:7/config"
            auth = {"Authorization": f"Bearer {API_KEY}"}
            answer = await client.post(url, json={"mode": "eco"}, headers=auth)
            assert answer.status_code == 200, answer.text
            topic = f"{prefix}/{PROJECT}/gw-2/dev:7/config/set"
            assert answer.json() == {"topic": topic, "status": "published"}
            await eventually(lambda: len(listener.received) == 1, 5, "the config/set message")
            assert json.loads(listener.received[0][1]) == {"mode": "eco"}

            refused = await client.post(url, json={"mode": "eco"})
            assert refused.status_code == 401
            bad = await client.post("/api/gateways/gw-2/devices/-x/config", json={}, headers=auth)
            assert bad.status_code == 400
            assert "deviceId" in bad.json()["message"]
    finally:
        await http.stop()


@pytest.mark.parametrize(
    ("request_fields", "metadata", "code"),
    [
        ({"gateway_id": "gw", "device_id": "d"}, (), grpc.StatusCode.UNAUTHENTICATED),
        (
            {"gateway_id": "gw", "device_id": "d"},
            (("authorization", "Bearer nope"),),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        ({"gateway_id": "g/w", "device_id": "d"}, None, grpc.StatusCode.INVALID_ARGUMENT),
        ({"gateway_id": "gw", "device_id": "+"}, None, grpc.StatusCode.INVALID_ARGUMENT),
        (
            {"gateway_id": "gw", "device_id": "d", "no_config": True},
            None,
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
async def test_push_refusals(
    bridge: Bridge,
    request_fields: dict[str, object],
    metadata: tuple[tuple[str, str], ...] | None,
    code: grpc.StatusCode,
) -> None:
    fields = dict(request_fields)
    request = devices_pb2.PushConfigRequest(
        gateway_id=str(fields["gateway_id"]), device_id=str(fields["device_id"])
    )
    if not fields.get("no_config"):
        request.config.update({"a": 1})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        stub = devices_pb2_grpc.DeviceConfigStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.PushConfig(
                request, metadata=bearer_metadata(API_KEY) if metadata is None else metadata
            )
    assert raised.value.code() == code


async def test_push_without_a_broker_is_unavailable(
    broker_factory: Callable[..., Mosquitto],
    delivery: FakeDelivery,
    settings: Settings,
    prefix: str,
) -> None:
    broker = broker_factory()
    async with running_bridge(settings, delivery, bridge_options(broker.url, prefix)) as bridge:
        broker.stop()
        await eventually(lambda: not bridge.connection.connected, 5, "the disconnect")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
            stub = devices_pb2_grpc.DeviceConfigStub(channel)
            request = devices_pb2.PushConfigRequest(gateway_id="g", device_id="d")
            request.config.SetInParent()  # an empty object
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.PushConfig(request, metadata=bearer_metadata(API_KEY))
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
