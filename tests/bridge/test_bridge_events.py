"""Gateway messages through a running bridge into delivery: each kind in each
form becomes the right typed event, with the right ids and timestamp."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import paho.mqtt.client as paho
from google.protobuf import json_format, struct_pb2
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties

from edgesense.common.config import Settings
from edgesense.v1 import events_pb2
from edgesense_bridge.payloads import PROTOBUF_CONTENT_TYPE
from tests.bridge.conftest import bridge_options, running_bridge, sample
from tests.bridge.delivery_double import FakeDelivery
from tests.support.broker import Gateway, Mosquitto, message_properties

ENVELOPE_TIME = "2025-07-24T10:35:17Z"
KINDS = {"data": "readings", "alert": "alert", "status": "status", "config": "configuration"}


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def kind_message(kind: str, values: dict[str, Any]) -> Any:
    if kind == "data":
        return events_pb2.Readings(values=struct(values))
    if kind == "alert":
        return events_pb2.Alert(details=struct(values))
    if kind == "config":
        return events_pb2.Configuration(values=struct(values))
    return events_pb2.DeviceStatus(
        state=events_pb2.DeviceStatus.STATE_OFFLINE, details=struct(values)
    )


async def test_every_kind_in_every_form(
    mosquitto: Mosquitto, gateway: Gateway, delivery: FakeDelivery, settings: Settings, prefix: str
) -> None:
    sent: dict[str, tuple[str, str, str]] = {}  # device id -> (kind, form, gateway id)
    messages: list[tuple[str, bytes, Properties | None]] = []
    for kind in KINDS:
        for form in ("json", "envelope", "protobuf"):
            device, gateway_id = f"{kind}-{form}", f"gw-{kind}"
            values: dict[str, Any] = {"device": device, "level": 3}
            topic = f"{prefix}/proj-1/{gateway_id}/{device}/{kind}"
            body: dict[str, Any] = {"status": "offline", **values} if kind == "status" else values
            if form == "json":
                messages.append((topic, json.dumps(body).encode(), None))
            elif form == "envelope":
                envelope = {"timestamp": ENVELOPE_TIME, "payload": body}
                messages.append((topic, json.dumps(envelope).encode(), None))
            else:
                payload = kind_message(kind, values).SerializeToString()
                messages.append((topic, payload, message_properties(PROTOBUF_CONTENT_TYPE)))
            sent[device] = (kind, form, gateway_id)
    async with running_bridge(settings, delivery, bridge_options(mosquitto.url, prefix)):
        before = time.time()
        await gateway.publish(messages)
        await delivery.wait_for(lambda: len(delivery.stored) == len(messages), what="12 events")
        after = time.time()

    by_device = {event.device_id: event for event in delivery.stored.values()}
    assert set(by_device) == set(sent)
    for device, (kind, form, gateway_id) in sent.items():
        event = by_device[device]
        assert event.event_id.startswith("evt_")
        assert (event.project_id, event.gateway_id) == ("proj-1", gateway_id)
        assert event.WhichOneof("kind") == KINDS[kind]
        expected = kind_message(kind, {"device": device, "level": 3})
        assert getattr(event, KINDS[kind]) == expected, (kind, form)
        received = event.received_at.ToNanoseconds() / 1e9
        assert before - 1 <= received <= after
        if form == "envelope":
            assert event.timestamp.ToJsonString() == ENVELOPE_TIME
        else:
            assert event.timestamp == event.received_at


async def test_gateway_status_and_its_last_will(
    mosquitto: Mosquitto, gateway: Gateway, delivery: FakeDelivery, settings: Settings, prefix: str
) -> None:
    status_topic = f"{prefix}/proj-1/gw-9/status"
    async with running_bridge(settings, delivery, bridge_options(mosquitto.url, prefix)):
        await gateway.publish([(status_topic, b"online", None)])
        await delivery.wait_for(lambda: len(delivery.stored) == 1, what="online")

        dying = paho.Client(CallbackAPIVersion.VERSION2, client_id="gw-9", protocol=paho.MQTTv5)
        dying.will_set(status_topic, b"offline", qos=1, retain=True)
        dying.connect("127.0.0.1", mosquitto.port)
        dying.loop(1.0)  # CONNACK
        sock = dying.socket()
        assert sock is not None
        sock.close()  # the gateway vanishes without DISCONNECT: the broker sends its will
        await delivery.wait_for(lambda: len(delivery.stored) == 2, what="the last will")

    states = [
        (event.gateway_id, event.device_id, event.status.state)
        for event in sorted(delivery.stored.values(), key=lambda e: e.received_at.ToNanoseconds())
    ]
    assert states == [
        ("gw-9", "gw-9", events_pb2.DeviceStatus.STATE_ONLINE),
        ("gw-9", "gw-9", events_pb2.DeviceStatus.STATE_OFFLINE),
    ]


async def test_the_retained_last_will_is_not_replayed_to_a_new_bridge(
    mosquitto: Mosquitto, gateway: Gateway, delivery: FakeDelivery, settings: Settings, prefix: str
) -> None:
    info = gateway.client.publish(f"{prefix}/proj-1/gw-3/status", b"offline", qos=1, retain=True)
    await asyncio.to_thread(info.wait_for_publish, 5)  # retained at the broker before we start
    ignored = sample("edgesense_bridge_messages_ignored_total", reason="retained")
    async with running_bridge(settings, delivery, bridge_options(mosquitto.url, prefix)):
        await gateway.publish([(f"{prefix}/proj-1/gw-3/d/data", b'{"after": 1}', None)])
        await delivery.wait_for(lambda: len(delivery.stored) == 1, what="the data event")
    assert sample("edgesense_bridge_messages_ignored_total", reason="retained") == ignored + 1
    (event,) = delivery.stored.values()
    assert json_format.MessageToDict(event.readings.values) == {"after": 1}


async def test_a_gateway_event_id_is_deduplicated(
    mosquitto: Mosquitto, gateway: Gateway, delivery: FakeDelivery, settings: Settings, prefix: str
) -> None:
    topic = f"{prefix}/proj-1/gw/d/alert"
    twice = [(topic, b'{"over": 80}', message_properties(None, "alert-17"))] * 2
    async with running_bridge(settings, delivery, bridge_options(mosquitto.url, prefix)):
        await gateway.publish(twice)
        await delivery.wait_for(lambda: len(delivery.received) == 2, what="both copies")
    assert len(delivery.stored) == 1
    assert delivery.duplicates == 1
