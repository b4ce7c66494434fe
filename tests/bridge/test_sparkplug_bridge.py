"""The bridge as a Sparkplug B host application, end to end: a real Mosquitto,
the recording Delivery server, and edge nodes whose payloads pysparkplug
encodes (an encoder independent of our decoder).

Every test has its own Sparkplug group (the project of the same id), edge
node ids and STATE host id, so tests on the shared broker never see each
other's nodes; the bridges see every test's traffic under spBv1.0/# and
that is part of what is tested (nothing foreign leaks into a test's events).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from google.protobuf.json_format import MessageToDict
from paho.mqtt.enums import CallbackAPIVersion
from pysparkplug import (
    DataType,
    DBirth,
    DData,
    DDeath,
    Metric,
    MetricValue,
    NBirth,
    NCmd,
    NData,
    NDeath,
)

from edgesense.common.config import Settings
from edgesense.common.errors import ConfigurationError
from edgesense.v1 import events_pb2
from edgesense_bridge.settings import BridgeSettings
from tests.bridge.conftest import API_KEY, PROJECT, TOKEN, bridge_options, running_bridge, sample
from tests.bridge.delivery_double import FakeDelivery
from tests.bridge.process import BridgeProcess
from tests.support.broker import Gateway, Mosquitto
from tests.support.waiting import eventually, wait_until

ONLINE = events_pb2.DeviceStatus.STATE_ONLINE
OFFLINE = events_pb2.DeviceStatus.STATE_OFFLINE


class Watcher:
    """A subscriber of its own (paho's network thread) that records what
    arrives on one topic filter, retained replays included."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"watch-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = self._record
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until(self._subscribed.is_set, 10, f"the subscription to {topic}")

    def _record(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(message)

    def payloads(self) -> list[bytes]:
        with self._lock:
            return [bytes(m.payload) for m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class EdgeNode:
    """A Sparkplug edge node: topics, seq and bdSeq, payloads by pysparkplug.

    It publishes with the test's `Gateway` client (QoS 1, waiting for PUBACKs,
    so that a message is at the broker when `publish` returns)."""

    def __init__(self, gateway: Gateway, group: str, edge: str, bd_seq: int = 0) -> None:
        self.gateway, self.group, self.edge = gateway, group, edge
        self.bd_seq, self.seq = bd_seq, 0
        self.clock = time.time_ns() // 1_000_000  # distinct timestamps: one per message

    def topic(self, kind: str, device: str | None = None) -> str:
        tail = f"/{device}" if device else ""
        return f"spBv1.0/{self.group}/{kind}/{self.edge}{tail}"

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def next_seq(self) -> int:
        seq, self.seq = self.seq, (self.seq + 1) % 256
        return seq

    async def send(self, topic: str, payload: bytes) -> None:
        await self.gateway.publish([(topic, payload, None)])

    async def nbirth(self, metrics: dict[str, tuple[int, DataType, MetricValue]]) -> int:
        """`metrics`: name -> (alias, datatype, value). Returns the timestamp."""
        ts = self.tick()
        self.seq = 0
        born = (
            Metric(ts, "bdSeq", DataType.INT64, value=self.bd_seq),
            Metric(ts, "Node Control/Rebirth", DataType.BOOLEAN, value=False),
            *(Metric(ts, name, t, value=v, alias=a) for name, (a, t, v) in metrics.items()),
        )
        await self.send(self.topic("NBIRTH"), NBirth(ts, self.next_seq(), born).encode())
        return ts

    async def dbirth(
        self, device: str, metrics: dict[str, tuple[int, DataType, MetricValue]]
    ) -> int:
        ts = self.tick()
        born = tuple(Metric(ts, name, t, value=v, alias=a) for name, (a, t, v) in metrics.items())
        await self.send(self.topic("DBIRTH", device), DBirth(ts, self.next_seq(), born).encode())
        return ts

    async def data(
        self, values: dict[int, tuple[DataType, MetricValue]], device: str | None = None
    ) -> int:
        """Values by alias only, as most edge nodes send them after the birth."""
        ts = self.tick()
        metrics = tuple(Metric(ts, None, t, value=v, alias=a) for a, (t, v) in values.items())
        if device is None:
            payload = NData(ts, self.next_seq(), metrics).encode()
        else:
            payload = DData(ts, self.next_seq(), metrics).encode()
        await self.send(self.topic("DDATA" if device else "NDATA", device), payload)
        return ts

    async def ddeath(self, device: str) -> None:
        payload = DDeath(self.tick(), self.next_seq()).encode()
        await self.send(self.topic("DDEATH", device), payload)

    async def ndeath(self, bd_seq: int) -> None:
        bd = Metric(None, "bdSeq", DataType.INT64, value=bd_seq)
        await self.send(self.topic("NDEATH"), NDeath(None, bd).encode())


def millis(event: events_pb2.Event) -> int:
    return event.timestamp.ToMilliseconds()


def readings(event: events_pb2.Event) -> dict[str, object]:
    return MessageToDict(event.readings.values)


def statuses(delivery: FakeDelivery, project: str) -> list[tuple[str, int]]:
    """(device id, state) of the project's status events, in arrival order."""
    return [
        (e.device_id, e.status.state)
        for e in delivery.received
        if e.project_id == project and e.WhichOneof("kind") == "status"
    ]


def data_events(delivery: FakeDelivery, project: str, device: str) -> list[events_pb2.Event]:
    return [
        e
        for e in delivery.received
        if e.project_id == project and e.device_id == device and e.WhichOneof("kind") == "readings"
    ]


@pytest.fixture
def group() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def host_id(mosquitto: Mosquitto) -> Iterator[str]:
    host = f"host-{uuid.uuid4().hex[:8]}"
    yield host
    # The STATE is retained: cleared, or every later bridge would be replayed it.
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"clear-{host}")
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    client.publish(f"spBv1.0/STATE/{host}", b"", qos=1, retain=True).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def options(mosquitto: Mosquitto, prefix: str, host_id: str) -> BridgeSettings:
    """Both inputs, as by default."""
    return bridge_options(
        mosquitto.url, prefix, inputs=("edgesense", "sparkplug"), sparkplug_host_id=host_id
    )


@pytest.fixture
def watchers(mosquitto: Mosquitto) -> Iterator[Callable[[str], Watcher]]:
    made: list[Watcher] = []

    def watch(topic: str) -> Watcher:
        made.append(Watcher(mosquitto.port, topic))
        return made[-1]

    yield watch
    for watcher in made:
        watcher.close()


async def test_births_then_aliased_data_become_named_typed_readings(
    gateway: Gateway,
    delivery: FakeDelivery,
    settings: Settings,
    options: BridgeSettings,
    group: str,
    prefix: str,
) -> None:
    node = EdgeNode(gateway, group, "edge-1")
    async with running_bridge(settings, delivery, options):
        # our own topics still arrive beside Sparkplug's
        await gateway.publish([(f"{prefix}/{PROJECT}/gw-j/dev-j/data", b'{"t": 1}', None)])
        await node.nbirth(
            {
                "Temperature": (1, DataType.DOUBLE, 20.5),
                "Running": (2, DataType.BOOLEAN, True),
                "Mode": (3, DataType.STRING, "auto"),
            }
        )
        await node.dbirth("pump-1", {"rpm": (10, DataType.INT32, 1200)})
        node_ts = await node.data({1: (DataType.DOUBLE, 21.25), 2: (DataType.BOOLEAN, False)})
        device_ts = await node.data({10: (DataType.INT32, 1500)}, device="pump-1")
        await delivery.wait_for(
            lambda: any(millis(e) == device_ts for e in data_events(delivery, group, "pump-1")),
            what="the DDATA's event",
        )
    assert ("edge-1", ONLINE) in statuses(delivery, group)
    assert ("pump-1", ONLINE) in statuses(delivery, group)
    (ndata,) = [e for e in data_events(delivery, group, "edge-1") if millis(e) == node_ts]
    assert readings(ndata) == {"Temperature": 21.25, "Running": False}
    assert ndata.gateway_id == "edge-1"
    (ddata,) = [e for e in data_events(delivery, group, "pump-1") if millis(e) == device_ts]
    assert readings(ddata) == {"rpm": 1500}
    assert ddata.gateway_id == "edge-1"
    assert readings(data_events(delivery, PROJECT, "dev-j")[0]) == {"t": 1}
    born = [e for e in data_events(delivery, group, "edge-1") if millis(e) != node_ts]
    assert born, "births' values are device.data"
    assert readings(born[0])["Temperature"] == 20.5


async def test_a_bridge_restarted_between_birth_and_data_asks_for_a_rebirth_and_never_guesses(
    gateway: Gateway,
    delivery: FakeDelivery,
    settings: Settings,
    options: BridgeSettings,
    group: str,
    watchers: Callable[[str], Watcher],
) -> None:
    node = EdgeNode(gateway, group, "edge-r")
    async with running_bridge(settings, delivery, options):
        await node.nbirth(
            {"Temperature": (1, DataType.DOUBLE, 20.0), "Pressure": (2, DataType.DOUBLE, 1.0)}
        )
        await delivery.wait_for(lambda: ("edge-r", ONLINE) in statuses(delivery, group))
    commands = watchers(node.topic("NCMD"))
    rebirths = sample("edgesense_bridge_sparkplug_rebirth_requests_total", reason="unknown_node")
    rebirths += sample("edgesense_bridge_sparkplug_rebirth_requests_total", reason="unknown_alias")
    async with running_bridge(settings, delivery, options):  # knows no alias now
        lost_ts = await node.data({1: (DataType.DOUBLE, 30.0), 2: (DataType.DOUBLE, 3.0)})
        await eventually(lambda: bool(commands.payloads()), 10, "a rebirth request (NCMD)")
        (request,) = [NCmd.decode(payload) for payload in commands.payloads()]
        assert {(m.name, m.value) for m in request.metrics} == {("Node Control/Rebirth", True)}
        after = sample("edgesense_bridge_sparkplug_rebirth_requests_total", reason="unknown_node")
        after += sample("edgesense_bridge_sparkplug_rebirth_requests_total", reason="unknown_alias")
        assert after == rebirths + 1
        # The node answers with a new session whose aliases are the other way round.
        node.bd_seq += 1
        await node.nbirth(
            {"Temperature": (2, DataType.DOUBLE, 20.0), "Pressure": (1, DataType.DOUBLE, 1.0)}
        )
        new_ts = await node.data({2: (DataType.DOUBLE, 31.0), 1: (DataType.DOUBLE, 2.5)})
        await delivery.wait_for(
            lambda: any(millis(e) == new_ts for e in data_events(delivery, group, "edge-r")),
            what="the data after the rebirth",
        )
    events = data_events(delivery, group, "edge-r")
    assert not [e for e in events if millis(e) == lost_ts], "data without a birth is never guessed"
    (after_rebirth,) = [e for e in events if millis(e) == new_ts]
    assert readings(after_rebirth) == {"Temperature": 31.0, "Pressure": 2.5}


async def test_ddeath_and_ndeath_report_offline_and_a_stale_ndeath_is_ignored(
    gateway: Gateway,
    delivery: FakeDelivery,
    settings: Settings,
    options: BridgeSettings,
    group: str,
) -> None:
    node = EdgeNode(gateway, group, "edge-d", bd_seq=5)
    async with running_bridge(settings, delivery, options):
        await node.nbirth({"Temperature": (1, DataType.DOUBLE, 20.0)})
        await node.dbirth("dev-a", {"level": (2, DataType.FLOAT, 0.5)})
        await node.dbirth("dev-b", {"level": (3, DataType.FLOAT, 0.25)})
        await node.ddeath("dev-a")
        await delivery.wait_for(lambda: ("dev-a", OFFLINE) in statuses(delivery, group))

        await node.ndeath(bd_seq=4)  # the Will of an earlier session, delivered late
        probe_ts = await node.data({1: (DataType.DOUBLE, 22.0)})
        await delivery.wait_for(
            lambda: any(millis(e) == probe_ts for e in data_events(delivery, group, "edge-d")),
            what="the data after the stale NDEATH",
        )
        assert ("edge-d", OFFLINE) not in statuses(delivery, group), "a stale NDEATH is ignored"

        await node.ndeath(bd_seq=5)
        await delivery.wait_for(lambda: ("edge-d", OFFLINE) in statuses(delivery, group))
        await delivery.wait_for(lambda: ("dev-b", OFFLINE) in statuses(delivery, group))
    assert statuses(delivery, group).count(("dev-a", OFFLINE)) == 1


async def test_malformed_payloads_and_bad_topics_are_counted_and_the_bridge_goes_on(
    gateway: Gateway,
    delivery: FakeDelivery,
    settings: Settings,
    options: BridgeSettings,
    group: str,
) -> None:
    node = EdgeNode(gateway, group, "edge-m")
    name = "edgesense_bridge_messages_rejected_total"
    reasons = ("sparkplug_bad_payload", "sparkplug_bad_topic")
    before = {reason: sample(name, reason=reason) for reason in reasons}
    ts = node.tick()
    birth = NBirth(ts, 0, (Metric(ts, "bdSeq", DataType.INT64, value=0),)).encode()
    truncated = birth[: len(birth) - 3]  # into the bdSeq metric
    async with running_bridge(settings, delivery, options):
        await gateway.publish(
            [
                (node.topic("NBIRTH"), truncated, None),
                (node.topic("NDATA"), b"\x12\x05ab", None),  # a metric of 5 bytes, 2 there
                (f"spBv1.0/{group}/NOPE/edge-m", b"", None),
                (f"spBv1.0/{group}", b"x", None),
                (f"spBv1.0/{group}/DDATA/edge-m", b"", None),  # a device message without its device
            ]
        )
        await node.nbirth({"Temperature": (1, DataType.DOUBLE, 20.0)})
        ts = await node.data({1: (DataType.DOUBLE, 23.5)})
        await delivery.wait_for(
            lambda: any(millis(e) == ts for e in data_events(delivery, group, "edge-m")),
            what="good data after the bad",
        )
    after = {reason: sample(name, reason=reason) - before[reason] for reason in reasons}
    assert after == {"sparkplug_bad_payload": 2, "sparkplug_bad_topic": 3}


async def test_an_unconfirmed_sparkplug_message_is_not_acknowledged(
    gateway: Gateway,
    delivery: FakeDelivery,
    settings: Settings,
    options: BridgeSettings,
    group: str,
) -> None:
    node = EdgeNode(gateway, group, "edge-q")
    delivery.pause()
    async with running_bridge(settings, delivery, options) as bridge:
        bridge.drain_seconds = 0.3
        await node.nbirth({"Temperature": (1, DataType.DOUBLE, 20.0)})
        await eventually(lambda: len(bridge.forwarder.outbox) > 0, 5, "the NBIRTH's events held")
    assert statuses(delivery, group) == []
    delivery.resume()  # (the cut stream's first batch may be stored now: a harmless copy)
    async with running_bridge(settings, delivery, options):  # the same session: resent
        await delivery.wait_for(lambda: ("edge-q", ONLINE) in statuses(delivery, group))
    online = [
        e for e in delivery.received if e.project_id == group and e.WhichOneof("kind") == "status"
    ]
    assert len({e.event_id for e in online}) == 1, "copies of one message have one event id"


def state(watcher: Watcher) -> dict[str, object] | None:
    payloads = watcher.payloads()
    return json.loads(payloads[-1]) if payloads else None


async def test_state_is_retained_online_while_running_and_offline_after_a_clean_stop(
    delivery: FakeDelivery,
    settings: Settings,
    options: BridgeSettings,
    host_id: str,
    watchers: Callable[[str], Watcher],
) -> None:
    topic = f"spBv1.0/STATE/{host_id}"
    async with running_bridge(settings, delivery, options):
        fresh = watchers(topic)  # subscribed after the bridge: sees the retained STATE
        await eventually(lambda: state(fresh) is not None, 5, "the retained STATE")
        online = state(fresh)
        assert online is not None
        assert online["online"] is True
        assert isinstance(online["timestamp"], int)
    after = watchers(topic)
    await eventually(lambda: state(after) is not None, 5, "the retained STATE after the stop")
    assert state(after) == {"online": False, "timestamp": online["timestamp"]}


async def test_an_offline_state_on_our_own_topic_is_answered_with_online(
    delivery: FakeDelivery,
    settings: Settings,
    options: BridgeSettings,
    host_id: str,
    watchers: Callable[[str], Watcher],
) -> None:
    """Sparkplug 3.0: a host that is sent an offline STATE on its own topic (a
    late Will of an older connection, another process with its host id)
    publishes its online STATE again, with its connection's timestamp."""
    topic = f"spBv1.0/STATE/{host_id}"
    async with running_bridge(settings, delivery, options) as bridge:
        watcher = watchers(topic)
        await eventually(lambda: state(watcher) is not None, 5, "the retained STATE")
        online = state(watcher)
        assert online is not None
        assert online["online"] is True
        impostor = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"imp-{host_id}")
        impostor.connect("127.0.0.1", bridge.options.broker.port)
        impostor.loop_start()
        offline = json.dumps({"online": False, "timestamp": online["timestamp"]}).encode()
        impostor.publish(topic, offline, qos=1, retain=True).wait_for_publish(10)
        impostor.disconnect()
        impostor.loop_stop()
        await eventually(
            lambda: [json.loads(p)["online"] for p in watcher.payloads()][-2:] == [False, True],
            5,
            "the impostor's offline STATE, then the online STATE again",
        )
        assert state(watcher) == online
        fresh = watchers(topic)  # the retained one is online again too
        await eventually(lambda: state(fresh) == online, 5, "the retained online STATE")


@pytest.fixture
def sparkplug_process(
    mosquitto: Mosquitto, delivery: FakeDelivery, prefix: str, host_id: str, tmp_path: Path
) -> Iterator[BridgeProcess]:
    env = {
        "EDGESENSE_MQTT_URL": mosquitto.url,
        "EDGESENSE_MQTT_TOPIC_PREFIX": prefix,
        "EDGESENSE_MQTT_CLIENT_ID": f"bridge-{uuid.uuid4().hex[:8]}",
        "EDGESENSE_DELIVERY_ADDR": delivery.addr,
        "EDGESENSE_API_KEYS": f"{API_KEY}={PROJECT}",
        "EDGESENSE_INTERNAL_TOKEN": TOKEN,
        "EDGESENSE_SPARKPLUG_HOST_ID": host_id,
    }
    process = BridgeProcess(env, tmp_path / "bridge.log")
    try:
        yield process
    finally:
        process.stop()


async def test_a_killed_bridge_is_offline_through_its_will(
    sparkplug_process: BridgeProcess, host_id: str, watchers: Callable[[str], Watcher]
) -> None:
    watcher = watchers(f"spBv1.0/STATE/{host_id}")
    sparkplug_process.start()
    await eventually(lambda: state(watcher) is not None, 30, "the bridge's online STATE")
    online = state(watcher)
    assert online is not None
    assert online["online"] is True
    sparkplug_process.kill()
    await eventually(
        lambda: state(watcher) == {"online": False, "timestamp": online["timestamp"]},
        10,
        "the Will's offline STATE",
    )


# Settings


def from_env(**env: str) -> BridgeSettings:
    return BridgeSettings.from_env(env, mqtt_url="mqtt://127.0.0.1:1883", topic_prefix="es")


def test_the_sparkplug_settings_default_to_both_inputs_and_a_state() -> None:
    options = from_env()
    assert options.inputs == ("edgesense", "sparkplug")
    assert options.sparkplug_groups == {}
    assert options.sparkplug_host_id == "edgesense"
    options = from_env(
        EDGESENSE_BRIDGE_TOPICS=" sparkplug ",
        EDGESENSE_SPARKPLUG_GROUPS="Plant A=acme, line-2 = acme-2",
        EDGESENSE_SPARKPLUG_HOST_ID="",
    )
    assert options.inputs == ("sparkplug",)
    assert options.sparkplug_groups == {"Plant A": "acme", "line-2": "acme-2"}
    assert options.sparkplug_host_id is None, "empty: no STATE"


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"EDGESENSE_BRIDGE_TOPICS": ""}, "EDGESENSE_BRIDGE_TOPICS must name"),
        ({"EDGESENSE_BRIDGE_TOPICS": "edgesense,mqtt"}, "not 'edgesense,mqtt'"),
        ({"EDGESENSE_BRIDGE_TOPICS": "sparkplug,sparkplug"}, "each once"),
        ({"EDGESENSE_SPARKPLUG_GROUPS": "plant"}, "entry 1 ('plant') has no group or no project"),
        ({"EDGESENSE_SPARKPLUG_GROUPS": "a=p1,=p2"}, "entry 2"),
        ({"EDGESENSE_SPARKPLUG_GROUPS": "a/b=p1"}, "'a/b' is not a Sparkplug id"),
        ({"EDGESENSE_SPARKPLUG_GROUPS": "a=bad project"}, "project 'bad project' is not an id"),
        ({"EDGESENSE_SPARKPLUG_GROUPS": "a=p1,a=p2"}, "names group 'a' twice"),
        ({"EDGESENSE_SPARKPLUG_HOST_ID": "scada/1"}, "EDGESENSE_SPARKPLUG_HOST_ID"),
        ({"EDGESENSE_SPARKPLUG_HOST_ID": "host#"}, "is not a Sparkplug id"),
    ],
)
def test_bad_sparkplug_settings_are_refused_saying_why(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(words)):
        from_env(**env)


def test_our_prefix_may_not_hide_under_the_sparkplug_namespace() -> None:
    with pytest.raises(ConfigurationError, match=r"must not be under spBv1\.0/"):
        BridgeSettings.from_env({}, mqtt_url="mqtt://127.0.0.1:1883", topic_prefix="spBv1.0/x")
    alone = {"EDGESENSE_BRIDGE_TOPICS": "edgesense"}
    assert BridgeSettings.from_env(alone, mqtt_url="mqtt://h", topic_prefix="spBv1.0/x")
