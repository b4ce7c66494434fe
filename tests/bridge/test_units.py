"""Small pieces: settings, backoff, the outbox window, the rejection log."""

from __future__ import annotations

import random

import pytest

from edgesense.common.backoff import backoff_delay
from edgesense.common.config import BrokerUrl, Settings
from edgesense.common.errors import ConfigurationError
from edgesense.v1 import events_pb2
from edgesense_bridge.batching import Item, Outbox, UnknownBatch
from edgesense_bridge.inbound import Receipt
from edgesense_bridge.settings import BridgeSettings


def test_broker_urls() -> None:
    plain = BrokerUrl.parse("mqtt://127.0.0.1")
    assert (plain.host, plain.port, plain.tls, plain.username) == ("127.0.0.1", 1883, False, None)
    secure = BrokerUrl.parse("mqtts://br%40idge:p%3Ass@broker.example:18883")
    assert (secure.host, secure.port, secure.tls) == ("broker.example", 18883, True)
    assert (secure.username, secure.password) == ("br@idge", "p:ss")
    assert str(secure) == "mqtts://broker.example:18883"  # no credentials in logs
    assert BrokerUrl.parse("mqtts://h").port == 8883
    assert BrokerUrl.parse("mqtt://user@h").password is None


@pytest.mark.parametrize("url", ["http://h", "mqtt://", "mqtt://h:port", "h:1883"])
def test_bad_broker_urls(url: str) -> None:
    with pytest.raises(ConfigurationError, match="EDGESENSE_MQTT_URL"):
        BrokerUrl.parse(url)


def test_bridge_settings_defaults_and_overrides() -> None:
    default = BridgeSettings.from_env({}, mqtt_url="mqtt://h", topic_prefix="edgesense")
    assert default.client_id == "edgesense-bridge"
    assert (default.max_payload_bytes, default.max_in_flight, default.mqtt5) == (262144, 1000, True)
    assert default.shared_group is None
    env = {
        "EDGESENSE_MQTT_CLIENT_ID": "b1",
        "EDGESENSE_MQTT_SHARED_GROUP": "bridges",
        "EDGESENSE_MQTT_PROTOCOL": "3.1.1",
        "EDGESENSE_MQTT_MAX_PAYLOAD_BYTES": "1024",
        "EDGESENSE_BRIDGE_MAX_IN_FLIGHT": "50",
        "EDGESENSE_BRIDGE_BATCH_SIZE": "10",
        "EDGESENSE_BRIDGE_BATCH_LINGER_MS": "0",
        "EDGESENSE_BRIDGE_PIPELINE_DEPTH": "2",
    }
    custom = BridgeSettings.from_env(env, mqtt_url="mqtt://h", topic_prefix="a/b")
    assert (custom.client_id, custom.shared_group, custom.mqtt5) == ("b1", "bridges", False)
    assert (custom.max_payload_bytes, custom.max_in_flight, custom.batch_size) == (1024, 50, 10)
    assert (custom.batch_linger_seconds, custom.pipeline_depth) == (0.0, 2)


@pytest.mark.parametrize(
    ("env", "prefix", "message"),
    [
        ({"EDGESENSE_MQTT_PROTOCOL": "4"}, "edgesense", "EDGESENSE_MQTT_PROTOCOL"),
        ({"EDGESENSE_BRIDGE_MAX_IN_FLIGHT": "0"}, "edgesense", "EDGESENSE_BRIDGE_MAX_IN_FLIGHT"),
        ({"EDGESENSE_BRIDGE_MAX_IN_FLIGHT": "70000"}, "edgesense", "65535"),
        ({"EDGESENSE_BRIDGE_BATCH_SIZE": "many"}, "edgesense", "whole number"),
        ({"EDGESENSE_MQTT_SHARED_GROUP": "a/b"}, "edgesense", "SHARED_GROUP"),
        ({}, "edge/#", "TOPIC_PREFIX"),
        ({}, "/edge", "TOPIC_PREFIX"),
        ({}, "", "TOPIC_PREFIX"),
    ],
)
def test_bad_bridge_settings(env: dict[str, str], prefix: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        BridgeSettings.from_env(env, mqtt_url="mqtt://h", topic_prefix=prefix)


@pytest.mark.parametrize("value", ["2.5", "many", "0"])
def test_the_bridge_and_the_services_refuse_a_value_in_the_same_words(value: str) -> None:
    """One parser for every process: a bad whole number reads the same whoever reads it."""
    with pytest.raises(ConfigurationError) as services:
        Settings.from_env({"EDGESENSE_DELIVERY_PER_TARGET": value})
    with pytest.raises(ConfigurationError) as bridge:
        BridgeSettings.from_env(
            {"EDGESENSE_BRIDGE_BATCH_SIZE": value}, mqtt_url="mqtt://h", topic_prefix="edgesense"
        )
    assert services.value.message.replace("EDGESENSE_DELIVERY_PER_TARGET", "X") == (
        bridge.value.message.replace("EDGESENSE_BRIDGE_BATCH_SIZE", "X")
    )


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, 0.5, 30, rng) for n in range(1, 12)]
    for n, delay in enumerate(delays, 1):
        ceiling = min(30, 0.5 * 2 ** (n - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays}) == len(delays)
    assert backoff_delay(10_000, 0.5, 30) <= 30


def item(n: int, epoch: int = 1) -> Item:
    return Item(events_pb2.Event(event_id=f"evt_{n}"), Receipt(epoch, n, 1), 0.0)


def ids(items: list[Item]) -> list[str]:
    return [i.event.event_id for i in items]


def test_outbox_batches_pipelines_and_confirms() -> None:
    outbox = Outbox(batch_size=3, depth=2)
    assert not outbox.sendable()
    for n in range(8):
        outbox.add(item(n))
    first, second = outbox.next_batch(), outbox.next_batch()
    assert ids(first.items) == ["evt_0", "evt_1", "evt_2"]
    assert first.batch_id == 1
    assert not outbox.sendable(), "two batches in flight fill the window"
    assert outbox.should_linger()  # 2 waiting, fewer than a batch
    outbox.add(item(8))
    assert not outbox.should_linger()  # a full batch is waiting
    assert len(outbox) == 9
    assert outbox.confirm(first.batch_id) is first
    assert len(outbox) == 6
    assert outbox.sendable()
    third = outbox.next_batch()
    assert ids(third.items) == ["evt_6", "evt_7", "evt_8"]
    assert third.batch_id == 3
    assert list(third.request().events) == [i.event for i in third.items]
    with pytest.raises(UnknownBatch):
        outbox.confirm(99)
    assert {second.batch_id, third.batch_id} == {2, 3}


def test_outbox_resends_unconfirmed_batches_first_with_their_ids() -> None:
    outbox = Outbox(batch_size=2, depth=3)
    for n in range(6):
        outbox.add(item(n))
    sent = [outbox.next_batch(), outbox.next_batch()]
    assert outbox.requeue_sent() == 2
    assert outbox.in_flight_batches == 0
    assert len(outbox) == 6
    again = [outbox.next_batch(), outbox.next_batch(), outbox.next_batch()]
    assert [b.batch_id for b in again] == [1, 2, 3]
    assert again[:2] == sent
    assert ids(again[2].items) == ["evt_4", "evt_5"]


def test_outbox_lingers_only_with_batches_in_flight() -> None:
    outbox = Outbox(batch_size=10, depth=4)
    outbox.add(item(1))
    assert not outbox.should_linger()
    outbox.next_batch()
    outbox.add(item(2))
    assert outbox.should_linger()


def test_outbox_drops_stale_pending_items_only() -> None:
    outbox = Outbox(batch_size=1, depth=4)
    outbox.add(item(1, epoch=1))
    sent = outbox.next_batch()
    outbox.add(item(2, epoch=1))
    outbox.add(item(3, epoch=2))
    dropped = outbox.drop_pending(lambda i: i.receipt.epoch < 2)
    assert ids(dropped) == ["evt_2"]
    assert len(outbox) == 2
    assert ids(list(outbox)) == ["evt_3", "evt_1"]
    assert outbox.confirm(sent.batch_id) is sent
