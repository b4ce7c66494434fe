"""The MQTT 5 user property `event-id`, end to end: a real Mosquitto, the
registry, delivery and bridge as processes, a real receiver.

A gateway that did not get its PUBACK publishes the message again, and the
broker sends a message again when the bridge is killed after delivery stored
it but before the PUBACK (the confirmation held back by a `Valve` between
bridge and delivery): with the same `event-id` that is one event and one
delivery; without one, each copy is an event of its own, which receivers
cannot tell apart.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from edgesense.common.auth import bearer_metadata
from edgesense.common.config import Settings
from edgesense.v1 import delivery_pb2, delivery_pb2_grpc
from tests.conftest import key_of
from tests.integration.valve import Valve
from tests.support.broker import MOSQUITTO, Gateway, Mosquitto, message_properties
from tests.support.processes import (
    Processes,
    ServiceProcess,
    register_webhook,
    wait_routed,
)
from tests.support.receivers import Receiver
from tests.support.waiting import eventually

pytestmark = pytest.mark.mosquitto
SECONDS = 30.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if not Path(MOSQUITTO).exists():
        pytest.skip(f"these tests need Mosquitto at {MOSQUITTO} (apt-get install mosquitto)")
    mosquitto = Mosquitto(tmp_path)
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


def devices_received(receiver: Receiver) -> Counter[str]:
    return Counter(json.loads(r.body)["deviceId"] for r in receiver.received)


@dataclass(frozen=True)
class Bridged:
    """The running cluster; the bridge reaches delivery through `valve`."""

    bridge: ServiceProcess
    delivery: ServiceProcess
    webhook_id: str
    prefix: str
    valve: Valve
    bridge_env: dict[str, str]


@pytest.fixture
async def valve() -> AsyncIterator[Valve]:
    """Set up by `bridged` (it needs delivery's port); closed after the test."""
    holder = Valve("127.0.0.1", 0)
    yield holder
    await holder.close()


@pytest.fixture
async def bridged(
    processes: Processes,
    cluster_env: dict[str, str],
    api_keys: dict[str, str],
    receiver: Receiver,
    broker: Mosquitto,
    valve: Valve,
) -> Bridged:
    """Registry, delivery routing to a webhook of project-a, and a bridge that forwards."""
    prefix = f"dedupe{secrets.token_hex(4)}"
    env = cluster_env
    registry = await processes.start("registry", env)
    webhook_id = await register_webhook(registry, key_of(api_keys, "project-a"), receiver.url)
    env = {**env, "EDGESENSE_REGISTRY_ADDR": registry.address}
    delivery = await processes.start("delivery", env)
    await wait_routed(delivery, Settings.from_env(env).service_token(), receiver, webhook_id)
    valve.target = ("127.0.0.1", delivery.port)
    await valve.start()
    bridge_env = {
        **env,
        "EDGESENSE_DELIVERY_ADDR": valve.address,
        "EDGESENSE_MQTT_URL": broker.url,
        "EDGESENSE_MQTT_TOPIC_PREFIX": prefix,
        "EDGESENSE_MQTT_CLIENT_ID": f"bridge-{secrets.token_hex(4)}",
    }
    bridge = await processes.start("bridge", bridge_env)
    # Subscribed and forwarding once an MQTT probe reaches the receiver.
    probe = Gateway(broker.port, f"probe-{secrets.token_hex(4)}")
    try:

        async def probe_arrived() -> bool:
            if devices_received(receiver)["probe"]:
                return True
            await probe.publish([(f"{prefix}/project-a/gw-1/probe/data", b"{}", None)])
            return False

        await eventually(probe_arrived, SECONDS, "a probe through the bridge", interval=0.2)
    finally:
        probe.close()
    return Bridged(bridge, delivery, webhook_id, prefix, valve, bridge_env)


async def stored_deliveries(
    delivery: ServiceProcess, api_key: str, webhook_id: str
) -> Counter[str]:
    """The webhook's deliveries as delivery stored them, counted by device."""
    async with grpc.aio.insecure_channel(delivery.address) as channel:
        answer = await delivery_pb2_grpc.DeliveryStub(channel).ListDeliveries(
            delivery_pb2.ListDeliveriesRequest(webhook_id=webhook_id, page_size=500),
            metadata=bearer_metadata(api_key),
            timeout=10,
        )
    return Counter(record.device_id for record in answer.deliveries)


async def test_a_message_published_again_with_its_event_id_is_delivered_once(
    bridged: Bridged, api_keys: dict[str, str], receiver: Receiver, broker: Mosquitto
) -> None:
    bridge, delivery, webhook_id, prefix = (
        bridged.bridge,
        bridged.delivery,
        bridged.webhook_id,
        bridged.prefix,
    )
    forwarded_before = await bridge.metric("edgesense_bridge_events_forwarded_total")
    topic = f"{prefix}/project-a/gw-1/{{}}/data"
    named = (topic.format("named"), b'{"temperature": 75.3}', message_properties(None, "r-42"))
    unnamed = (topic.format("unnamed"), b'{"temperature": 75.3}', None)
    # A gateway that lost its connection before the PUBACK sends again, from a
    # new connection: the broker takes each copy for a new message.
    for attempt in range(2):
        gateway = Gateway(broker.port, f"gw-1-{attempt}")
        try:
            await gateway.publish([named, unnamed])
        finally:
            gateway.close()

    async def all_forwarded() -> bool:
        forwarded = await bridge.metric("edgesense_bridge_events_forwarded_total")
        return forwarded - forwarded_before == 4

    # Delivery confirmed all four copies, and makes deliveries when it stores an
    # event: what it stored is final from here on.
    await eventually(all_forwarded, SECONDS, "the four copies confirmed by delivery")
    stored = await stored_deliveries(delivery, key_of(api_keys, "project-a"), webhook_id)
    assert stored["named"] == 1, "the copy with the same event-id made a second delivery"
    assert stored["unnamed"] == 2, "without event-id each copy is an event of its own"
    await eventually(
        lambda: (
            devices_received(receiver)["unnamed"] == 2 and devices_received(receiver)["named"] >= 1
        ),
        SECONDS,
        "the three deliveries at the receiver",
    )
    bodies = [json.loads(r.body) for r in receiver.received]
    assert [b["deviceId"] for b in bodies].count("named") == 1
    assert len({b["eventId"] for b in bodies if b["deviceId"] == "unnamed"}) == 2


@pytest.mark.parametrize(("event_id", "deliveries"), [("r-7", 1), (None, 2)])
async def test_a_message_the_broker_sends_again_after_a_kill_is_delivered_once_with_its_event_id(
    bridged: Bridged,
    processes: Processes,
    api_keys: dict[str, str],
    receiver: Receiver,
    broker: Mosquitto,
    event_id: str | None,
    deliveries: int,
) -> None:
    # Delivery stores the event and confirms it, the confirmation is lost on
    # the way, the bridge is killed before its PUBACK: the broker sends the
    # message again to the bridge that takes over the session.
    bridged.valve.hold_replies()
    device = f"crash-{secrets.token_hex(3)}"
    message = (
        f"{bridged.prefix}/project-a/gw-1/{device}/data",
        b'{"temperature": 75.3}',
        message_properties(None, event_id),
    )
    gateway = Gateway(broker.port, f"gw-1-{secrets.token_hex(3)}")
    try:
        await gateway.publish([message])
    finally:
        gateway.close()
    await eventually(lambda: devices_received(receiver)[device] == 1, SECONDS, "the first copy")
    bridged.bridge.kill()
    await bridged.bridge.wait_exit()
    duplicates = await bridged.delivery.metric("edgesense_events_duplicate_total")
    bridge = await processes.start("bridge", bridged.bridge_env)

    async def resent() -> bool:
        # The resumed session brings the message again, to be confirmed this time.
        return await bridge.metric("edgesense_bridge_events_forwarded_total") >= 1

    await eventually(resent, SECONDS, "the broker's second copy through the new bridge")
    api_key = key_of(api_keys, "project-a")
    stored = await stored_deliveries(bridged.delivery, api_key, bridged.webhook_id)
    assert stored[device] == deliveries
    duplicated = await bridged.delivery.metric("edgesense_events_duplicate_total") - duplicates
    assert duplicated == (1 if event_id else 0)
    await eventually(
        lambda: devices_received(receiver)[device] == deliveries, SECONDS, "deliveries"
    )
