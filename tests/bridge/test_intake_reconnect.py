"""The intake across a resumed MQTT session: what the broker resends, and what
it never resends (QoS 0), for our topics and Sparkplug B.

A real Forwarder and Outbox (its stream never runs: batches are taken and
confirmed by hand), a real SparkplugHost, payloads encoded by pysparkplug; the
acknowledger is a double that refuses acks of older connections, as the MQTT
adapter does. The reconnect scenarios are driven message by message, so each
assertion is about one step.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from pysparkplug import DataType, Metric, NBirth, NData, NDeath

from edgesense.v1 import events_pb2
from edgesense_bridge.batching import Outbox
from edgesense_bridge.forwarder import Forwarder
from edgesense_bridge.inbound import InboundMessage, Receipt
from edgesense_bridge.intake import Intake
from edgesense_bridge.parsing import ParseRules, RawMessage
from edgesense_bridge.sparkplug.host import Rebirth, SparkplugHost
from edgesense_bridge.topics import TopicLayout
from tests.bridge.test_intake import FakeAcker

RULES = ParseRules(TopicLayout("es"), max_payload_bytes=100_000)
TS = 1_764_583_200_000
NODE = "spBv1.0/plant/NBIRTH/gw1"
DATA = "spBv1.0/plant/NDATA/gw1"
DEATH = "spBv1.0/plant/NDEATH/gw1"
OWN_STATE = "spBv1.0/STATE/edgesense"


@dataclass
class Parts:
    intake: Intake
    outbox: Outbox
    acker: FakeAcker
    rebirths: list[Rebirth]
    presence_asserted: list[int]

    def send(
        self,
        topic: str,
        payload: bytes,
        mid: int,
        qos: int,
        *,
        dup: bool = False,
        retain: bool = False,
    ) -> None:
        raw = RawMessage(topic.encode(), payload, time.time_ns(), retain=retain)
        receipt = Receipt(self.acker.epoch, mid, qos)
        self.intake.on_message(InboundMessage(raw, receipt, dup))

    def confirm_all(self) -> None:
        while self.outbox.sendable():
            batch = self.outbox.next_batch()
            self.intake.on_confirmed(self.outbox.confirm(batch.batch_id))

    def reconnect(self) -> None:
        self.acker.epoch += 1
        self.intake.on_session(self.acker.epoch, session_present=True)

    def held(self) -> list[events_pb2.Event]:
        return [item.event for item in self.outbox]


@pytest.fixture
async def parts() -> AsyncIterator[Parts]:
    channel = grpc.aio.insecure_channel("127.0.0.1:1")  # never used: nothing runs the stream
    outbox = Outbox(batch_size=100, depth=8)
    forwarder = Forwarder(channel, "token", outbox, lambda batch: None)
    acker, rebirths, asserted = FakeAcker(), list[Rebirth](), list[int]()
    intake = Intake(
        RULES,
        forwarder,
        acker,
        max_in_flight=1000,
        sparkplug=SparkplugHost(),
        request_rebirth=rebirths.append,
        own_state=(OWN_STATE, lambda: asserted.append(1)),
    )
    yield Parts(intake, outbox, acker, rebirths, asserted)
    await channel.close()


def birth(bd_seq: int, names: dict[int, str]) -> bytes:
    metrics = [Metric(TS, "bdSeq", DataType.INT64, value=bd_seq)]
    metrics += [Metric(TS, n, DataType.DOUBLE, value=1.0, alias=a) for a, n in names.items()]
    return NBirth(TS, 0, tuple(metrics)).encode()


def data(seq: int, alias: int, value: float) -> bytes:
    metric = Metric(None, None, DataType.DOUBLE, value=value, alias=alias)
    return NData(TS + seq, seq, (metric,)).encode()


def readings(events: list[events_pb2.Event]) -> list[dict[str, object]]:
    return [dict(e.readings.values) for e in events if e.HasField("readings")]


async def test_qos0_messages_pending_at_a_reconnect_are_kept(parts: Parts) -> None:
    """The broker resends QoS 1 only: a QoS 0 message's events queued when the
    connection dropped are stored anyway (a Sparkplug NBIRTH is QoS 0)."""
    parts.send(NODE, birth(1, {1: "Temp"}), mid=0, qos=0)
    parts.send("es/proj-1/gw/dev/data", b'{"n": 1}', mid=0, qos=0)
    parts.send("es/proj-1/gw/dev/data", b'{"n": 2}', mid=4, qos=1)
    assert len(parts.outbox) == 4
    parts.reconnect()
    kept = parts.held()
    assert len(kept) == 3, "only the QoS 1 message's copy is dropped: it comes again"
    assert readings(kept) == [{"Temp": 1.0}, {"n": 1.0}]


async def test_a_resent_sparkplug_message_keeps_the_names_it_had(parts: Parts) -> None:
    """Data pending at a reconnect, then a rebirth that gave its alias another
    name: the broker's resend is stored with the name of its own session."""
    parts.send(NODE, birth(1, {1: "Temp"}), mid=0, qos=0)
    parts.confirm_all()
    parts.send(DATA, data(1, 1, 42.0), mid=5, qos=1)
    parts.send(NODE, birth(1, {1: "Pressure", 2: "Temp"}), mid=0, qos=0)
    parts.reconnect()
    parts.send(DATA, data(1, 1, 42.0), mid=5, qos=1, dup=True)
    assert {"Temp": 42.0} in readings(parts.held())
    assert {"Pressure": 42.0} not in readings(parts.held())
    assert parts.rebirths == [], "a resend is no sequence gap"
    parts.confirm_all()
    assert Receipt(2, 5, 1) in parts.acker.acked


async def test_a_resent_ndeath_still_takes_the_node_offline(parts: Parts) -> None:
    """An NDEATH pending at a reconnect, then the node's next NBIRTH: the resend
    must not be judged stale against the newer session."""
    parts.send(NODE, birth(1, {1: "Temp"}), mid=0, qos=0)
    parts.confirm_all()
    death = NDeath(TS, Metric(TS, "bdSeq", DataType.INT64, value=1)).encode()
    parts.send(DEATH, death, mid=9, qos=1)
    parts.send(NODE, birth(2, {1: "Temp"}), mid=0, qos=0)
    parts.reconnect()
    parts.send(DEATH, death, mid=9, qos=1, dup=True)
    offline = [
        e
        for e in parts.held()
        if e.HasField("status") and e.status.state == events_pb2.DeviceStatus.STATE_OFFLINE
    ]
    assert [e.device_id for e in offline] == ["gw1"]


async def test_resends_ask_for_no_rebirth(parts: Parts) -> None:
    parts.send(NODE, birth(1, {1: "Temp"}), mid=0, qos=0)
    parts.send(DATA, data(1, 1, 1.0), mid=5, qos=1)
    parts.send(DATA, data(2, 1, 2.0), mid=6, qos=1)
    parts.reconnect()
    parts.send(DATA, data(1, 1, 1.0), mid=5, qos=1, dup=True)
    parts.send(DATA, data(2, 1, 2.0), mid=6, qos=1, dup=True)
    parts.send(DATA, data(3, 1, 3.0), mid=7, qos=1)  # and the sequence goes on
    assert parts.rebirths == []
    assert readings(parts.held()) == [{"Temp": 1.0}, {"Temp": 1.0}, {"Temp": 2.0}, {"Temp": 3.0}]


async def test_a_resend_of_a_message_all_stored_is_acked_at_once(parts: Parts) -> None:
    """Stored, but the connection dropped before the PUBACK: the resend is
    acknowledged without storing anything again."""
    parts.send(NODE, birth(1, {1: "Temp"}), mid=3, qos=1)
    parts.acker.epoch = 99  # the connection is gone when delivery confirms
    parts.confirm_all()
    parts.acker.epoch = 1
    parts.reconnect()
    parts.send(NODE, birth(1, {1: "Temp"}), mid=3, qos=1, dup=True)
    assert parts.held() == []
    assert parts.acker.acked == [Receipt(2, 3, 1)]


async def test_a_different_message_under_a_resent_packet_id_goes_to_the_host(
    parts: Parts,
) -> None:
    parts.send(NODE, birth(1, {1: "Temp"}), mid=0, qos=0)
    parts.send(DATA, data(1, 1, 1.0), mid=5, qos=1)
    parts.reconnect()
    parts.send(DATA, data(2, 1, 7.0), mid=5, qos=1, dup=True)
    assert {"Temp": 7.0} in readings(parts.held())


async def test_an_offline_state_on_our_own_topic_is_answered(parts: Parts) -> None:
    parts.send(OWN_STATE, b'{"online":false,"timestamp":1}', mid=0, qos=1)
    parts.send(OWN_STATE, b'{"online":true,"timestamp":1}', mid=0, qos=1)
    parts.send("spBv1.0/STATE/other", b'{"online":false,"timestamp":1}', mid=0, qos=1)
    parts.send(OWN_STATE, b'{"online":false,"timestamp":1}', mid=0, qos=1, retain=True)
    parts.send(OWN_STATE, b"not json", mid=0, qos=1)
    assert parts.presence_asserted == [1]


async def test_a_birth_too_large_to_read_still_voids_the_session() -> None:
    """The intake leaves the size to the host: an oversized NBIRTH must end the
    node's session, or its later data would be named by the previous birth."""
    rules = ParseRules(TopicLayout("es"), max_payload_bytes=200)
    channel = grpc.aio.insecure_channel("127.0.0.1:1")  # never used
    outbox = Outbox(batch_size=100, depth=8)
    forwarder = Forwarder(channel, "token", outbox, lambda batch: None)
    host = SparkplugHost(max_payload_bytes=rules.max_payload_bytes)
    acker = FakeAcker()
    intake = Intake(rules, forwarder, acker, max_in_flight=1000, sparkplug=host)
    parts = Parts(intake, outbox, acker, [], [])
    parts.send(NODE, birth(1, {1: "Temp"}), mid=0, qos=0)
    many = {n: f"Pressure-{n}" for n in range(1, 30)}
    big = birth(1, many)
    assert len(big) > rules.max_payload_bytes
    parts.send(NODE, big, mid=0, qos=0)
    parts.send(DATA, data(1, 1, 5.0), mid=0, qos=0)
    assert {"Temp": 5.0} not in readings(parts.held())
    assert host.node_count == 0
    await channel.close()


async def test_a_resend_still_expected_survives_a_second_reconnect(parts: Parts) -> None:
    """The link drops again before the broker's resends arrived: they are still
    recognised (the second connection's resend would otherwise look like a
    sequence gap and lose the data behind it)."""
    parts.send(NODE, birth(1, {1: "Temp"}), mid=0, qos=0)
    parts.confirm_all()
    parts.send(DATA, data(1, 1, 42.0), mid=5, qos=1)
    parts.send(NODE, birth(1, {1: "Pressure"}), mid=0, qos=0)
    parts.reconnect()
    parts.reconnect()
    parts.send(DATA, data(1, 1, 42.0), mid=5, qos=1, dup=True)
    assert {"Temp": 42.0} in readings(parts.held())
    assert parts.rebirths == []


async def test_a_resend_of_a_message_acked_before_the_drop_is_acked_again(parts: Parts) -> None:
    """Stored and acknowledged, but the PUBACK died in the socket: the broker
    resends it; decoding it again would see an old seq, end the session and
    lose the data queued behind it."""
    parts.send(NODE, birth(1, {1: "Temp"}), mid=0, qos=0)
    parts.send(DATA, data(1, 1, 1.0), mid=5, qos=1)
    parts.confirm_all()
    assert Receipt(1, 5, 1) in parts.acker.acked
    parts.reconnect()
    parts.send(DATA, data(1, 1, 1.0), mid=5, qos=1, dup=True)
    parts.send(DATA, data(2, 1, 2.0), mid=6, qos=1)  # queued while we were away
    assert Receipt(2, 5, 1) in parts.acker.acked, "the resend is acked at once"
    assert readings(parts.held()) == [{"Temp": 2.0}]
    assert parts.rebirths == []


async def test_a_resend_of_a_rejected_message_is_acked_again_not_judged_again(
    parts: Parts,
) -> None:
    """Data before any birth is rejected (and acked); the node's NBIRTH answers
    the rebirth request; then the broker resends the rejected data: it must not
    be named by that newer birth."""
    parts.send(DATA, data(1, 1, 7.0), mid=5, qos=1)
    assert len(parts.rebirths) == 1
    parts.send(NODE, birth(1, {1: "Pressure"}), mid=0, qos=0)
    parts.reconnect()
    parts.send(DATA, data(1, 1, 7.0), mid=5, qos=1, dup=True)
    assert Receipt(2, 5, 1) in parts.acker.acked
    assert {"Pressure": 7.0} not in readings(parts.held())


async def test_a_resend_of_a_partly_stored_message_stores_the_rest_and_acks_once(
    parts: Parts,
) -> None:
    """An NBIRTH (status and data) at QoS 1 with one of its events stored when
    the connection dropped: the resend stores both again (delivery keeps one
    copy of each) and is acked once, after the last."""
    parts.send(NODE, birth(1, {1: "Temp"}), mid=3, qos=1)
    first = parts.outbox.next_batch()
    first.items[1:] = []  # only the status event in this batch
    parts.intake.on_confirmed(parts.outbox.confirm(first.batch_id))
    parts.reconnect()
    parts.send(NODE, birth(1, {1: "Temp"}), mid=3, qos=1, dup=True)
    kinds = [e.WhichOneof("kind") for e in parts.held()]
    assert kinds == ["status", "readings"]
    parts.confirm_all()
    assert parts.acker.acked.count(Receipt(2, 3, 1)) == 1


async def test_a_new_session_forgets_the_held_messages(parts: Parts) -> None:
    parts.send(NODE, birth(1, {1: "Temp"}), mid=0, qos=0)
    parts.send(DATA, data(1, 1, 1.0), mid=5, qos=1)
    parts.acker.epoch += 1
    parts.intake.on_session(parts.acker.epoch, session_present=False)
    assert len(parts.outbox) == 3, "nothing comes again on a new session: all kept"
    parts.send(DATA, data(2, 1, 2.0), mid=5, qos=1, dup=True)  # a new message, same id
    assert {"Temp": 2.0} in readings(parts.held())


async def test_a_deeply_nested_state_is_no_crash(parts: Parts) -> None:
    parts.send(OWN_STATE, b"[" * 100_000, mid=0, qos=1)
    parts.send(OWN_STATE, b"[" * 1020, mid=0, qos=1)
    assert parts.presence_asserted == []
