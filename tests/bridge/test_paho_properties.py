"""paho_properties: the bridge's paho decodes a PUBLISH's MQTT 5 properties
into the same values with tables built once, and paho still decodes there."""

from __future__ import annotations

from typing import Any

import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.exception import MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

# Importing the bridge's adapter installs the class, as the bridge does.
from edgesense_bridge import mqtt_adapter, paho_properties  # noqa: F401
from edgesense_bridge.paho_properties import SharedTableProperties

TOPIC = b"edgesense/p/gw-1/dev-1/data"
PAYLOAD = b'{"temperature": 21.5}'


def publish_packet(properties: bytes, mid: int = 7) -> bytes:
    """A QoS 1 PUBLISH after its fixed header, with these packed properties."""
    return len(TOPIC).to_bytes(2, "big") + TOPIC + mid.to_bytes(2, "big") + properties + PAYLOAD


def packed(**values: object) -> bytes:
    properties: Any = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(properties, name, value)
    return bytes(properties.pack())


CASES = [
    {},
    {"ContentType": "application/x-protobuf"},
    {"UserProperty": [("event-id", "e-1"), ("event-id", "e-2"), ("k", "v")]},
    {
        "PayloadFormatIndicator": 1,
        "MessageExpiryInterval": 60,
        "ResponseTopic": "replies/1",
        "CorrelationData": b"\x00\x01",
        "SubscriptionIdentifier": [3, 1000],
        "ContentType": "application/json; charset=utf-8",
        "UserProperty": [("a", "b")],
    },
]


def decoded(properties: bytes) -> Any:
    """The properties paho's decoder reads from a PUBLISH carrying these."""
    result = _packet.decode_publish(0x32, publish_packet(properties), MQTTProtocolVersion.MQTTv5)
    assert result.properties is not None
    assert (result.topic, result.mid, result.payload) == (TOPIC, 7, PAYLOAD)
    return result.properties


def test_the_bridge_installs_it_where_paho_decodes_a_publish() -> None:
    """Fails if a paho upgrade moves the decoder: look at paho_properties then."""
    assert _packet.Properties is SharedTableProperties  # type: ignore[attr-defined]
    assert paho_properties.install() is True  # and again: still there
    assert type(decoded(b"\x00")) is SharedTableProperties


@pytest.mark.parametrize("values", CASES)
def test_the_properties_read_are_paho_s_own(
    values: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = packed(**values)
    ours = decoded(data)
    monkeypatch.setattr(_packet, "Properties", Properties)
    theirs = decoded(data)
    assert type(ours) is not type(theirs)
    assert ours.json() == theirs.json()
    assert str(ours) == str(theirs)
    assert ours.isEmpty() == theirs.isEmpty() == (not values)
    assert bytes(ours.pack()) == bytes(theirs.pack()) == data
    for name, value in values.items():
        assert getattr(ours, name) == value
    assert type(theirs) is Properties


def test_each_packet_has_its_own_properties() -> None:
    first = decoded(packed(ContentType="a", UserProperty=[("k", "1")]))
    second = decoded(packed(UserProperty=[("k", "2")]))
    empty = decoded(b"\x00")
    assert (first.ContentType, first.UserProperty) == ("a", [("k", "1")])
    assert second.UserProperty == [("k", "2")]
    assert not hasattr(second, "ContentType")
    assert empty.isEmpty()
    assert first.names is second.names  # the tables are shared, the values are not


def test_a_repeated_single_property_is_malformed_as_paho_says() -> None:
    once = packed(ContentType="a")
    length, body = once[0], once[1:]
    twice = bytes([length * 2]) + body + body
    with pytest.raises(MQTTException):
        decoded(twice)
