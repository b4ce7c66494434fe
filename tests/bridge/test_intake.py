"""The intake on its own: what is acked when, the in-flight bound, reconnects."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from pysparkplug import DataType, Metric, NBirth

from edgesense_bridge import intake as intake_module
from edgesense_bridge.batching import Outbox
from edgesense_bridge.forwarder import Forwarder
from edgesense_bridge.inbound import InboundMessage, Receipt
from edgesense_bridge.intake import Intake
from edgesense_bridge.parsing import ParseRules, RawMessage
from edgesense_bridge.sparkplug.host import SparkplugHost
from edgesense_bridge.topics import TopicLayout
from tests.bridge.conftest import sample

RULES = ParseRules(TopicLayout("es"), max_payload_bytes=1000)


@dataclass
class FakeAcker:
    epoch: int = 1
    acked: list[Receipt] = field(default_factory=list)
    paused: bool = False

    def ack(self, receipt: Receipt) -> bool:
        if receipt.epoch != self.epoch:
            return False
        self.acked.append(receipt)
        return True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


@pytest.fixture
async def parts() -> AsyncIterator[tuple[Intake, Forwarder, FakeAcker]]:
    channel = grpc.aio.insecure_channel("127.0.0.1:1")  # never used: nothing runs the stream
    forwarder = Forwarder(channel, "token", Outbox(batch_size=2, depth=2), lambda batch: None)
    acker = FakeAcker()
    yield Intake(RULES, forwarder, acker, max_in_flight=4), forwarder, acker
    await channel.close()


def message(
    mid: int,
    payload: bytes = b"{}",
    epoch: int = 1,
    dup: bool = False,
    topic: str = "es/p/g/d/data",
) -> InboundMessage:
    raw = RawMessage(topic.encode(), payload, time.time_ns())
    return InboundMessage(raw, Receipt(epoch, mid, 1), dup)


async def test_good_messages_wait_for_confirmation_bad_ones_are_acked_at_once(
    parts: tuple[Intake, Forwarder, FakeAcker], caplog: pytest.LogCaptureFixture
) -> None:
    intake, forwarder, acker = parts
    before = sample("edgesense_bridge_messages_rejected_total", reason="bad_json")
    intake.on_message(message(1))
    intake.on_message(message(2, b"{oops"))
    intake.on_message(message(3, b"{oops"))
    assert [r.mid for r in acker.acked] == [2, 3]
    assert sample("edgesense_bridge_messages_rejected_total", reason="bad_json") == before + 2
    assert caplog.text.count("rejected MQTT message on es/p/g/d/data: bad_json") == 1
    batch = forwarder.outbox.next_batch()
    intake.on_confirmed(forwarder.outbox.confirm(batch.batch_id))
    assert [r.mid for r in acker.acked] == [2, 3, 1]
    assert sample("edgesense_bridge_in_flight_messages") == 0


async def test_reading_pauses_at_the_in_flight_limit_and_resumes_below_it(
    parts: tuple[Intake, Forwarder, FakeAcker],
) -> None:
    intake, forwarder, acker = parts
    for mid in range(1, 5):
        intake.on_message(message(mid))
    assert acker.paused
    batch = forwarder.outbox.next_batch()
    intake.on_confirmed(forwarder.outbox.confirm(batch.batch_id))  # 2 held: 3/4 of 4 is 3
    assert not acker.paused


async def test_a_resumed_session_drops_queued_copies_and_reuses_event_ids(
    parts: tuple[Intake, Forwarder, FakeAcker],
) -> None:
    intake, forwarder, acker = parts
    for mid in (1, 2, 3):
        intake.on_message(message(mid, b'{"n": %d}' % mid))
    sent = forwarder.outbox.next_batch()  # mids 1 and 2 in flight; 3 queued
    ids = {item.receipt.mid: item.event.event_id for item in sent.items}
    queued_id = next(iter(forwarder.outbox)).event.event_id

    acker.epoch = 2
    intake.on_session(2, session_present=True)
    assert len(forwarder.outbox) == 2, "the queued copy is dropped: the broker resends it"
    intake.on_message(message(1, b'{"n": 1}', epoch=2, dup=True))
    intake.on_message(message(3, b'{"n": 3}', epoch=2, dup=True))
    intake.on_message(message(2, b'{"other": 1}', epoch=2, dup=True))
    resent = {i.receipt.mid: i.event.event_id for i in forwarder.outbox if i.receipt.epoch == 2}
    assert resent[1] == ids[1], "a resent copy keeps the event id: delivery deduplicates it"
    assert resent[3] == queued_id
    assert resent[2] != ids[2], "different content under a reused packet id is a new event"

    intake.on_confirmed(forwarder.outbox.confirm(sent.batch_id))
    assert acker.acked == [], "acks of the old connection are dropped"


async def test_confirmed_while_disconnected_is_recognised_after_the_reconnect(
    parts: tuple[Intake, Forwarder, FakeAcker],
) -> None:
    intake, forwarder, acker = parts
    intake.on_message(message(7, b'{"n": 7}'))
    batch = forwarder.outbox.next_batch()
    acker.epoch = 99  # the connection is gone
    intake.on_confirmed(forwarder.outbox.confirm(batch.batch_id))
    acker.epoch = 2
    intake.on_session(2, session_present=True)
    intake.on_message(message(7, b'{"n": 7}', epoch=2, dup=True))
    (item,) = list(forwarder.outbox)
    assert item.event.event_id == batch.items[0].event.event_id


async def test_a_new_session_forgets_everything(
    parts: tuple[Intake, Forwarder, FakeAcker],
) -> None:
    intake, forwarder, _ = parts
    intake.on_message(message(1, b'{"n": 1}'))
    original = next(iter(forwarder.outbox)).event.event_id
    intake.on_session(2, session_present=False)
    assert len(forwarder.outbox) == 1, "nothing comes again on a new session: keep it"
    intake.on_message(message(1, b'{"n": 1}', epoch=2, dup=True))
    (copy,) = [i for i in forwarder.outbox if i.receipt.epoch == 2]
    assert copy.event.event_id != original


async def test_a_parser_crash_is_a_rejection_not_a_crash(
    parts: tuple[Intake, Forwarder, FakeAcker],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    intake, forwarder, acker = parts

    def broken(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(intake_module, "parse_message", broken)
    with caplog.at_level(logging.ERROR):
        intake.on_message(message(5))
    assert [r.mid for r in acker.acked] == [5]
    assert len(forwarder.outbox) == 0
    assert "parsing a message failed" in caplog.text


async def test_a_sparkplug_message_of_several_events_is_acked_after_the_last_one() -> None:
    """An NBIRTH makes the node's online status and its values: one PUBACK, at the end."""
    channel = grpc.aio.insecure_channel("127.0.0.1:1")  # never used
    outbox = Outbox(batch_size=1, depth=8)
    forwarder = Forwarder(channel, "token", outbox, lambda batch: None)
    acker = FakeAcker()
    intake = Intake(RULES, forwarder, acker, max_in_flight=100, sparkplug=SparkplugHost())
    ts = time.time_ns() // 1_000_000
    born = (
        Metric(ts, "bdSeq", DataType.INT64, value=0),
        Metric(ts, "Temperature", DataType.DOUBLE, value=20.5, alias=1),
    )
    raw = RawMessage(b"spBv1.0/g1/NBIRTH/e1", NBirth(ts, 0, born).encode(), time.time_ns())
    intake.on_message(InboundMessage(raw, Receipt(1, 7, 1)))
    batches = [outbox.next_batch() for _ in range(len(outbox))]
    assert len(batches) >= 2, "status and data, one event per batch here"
    for batch in batches[:-1]:
        intake.on_confirmed(outbox.confirm(batch.batch_id))
        assert acker.acked == [], "acknowledged before all its events were stored"
    intake.on_confirmed(outbox.confirm(batches[-1].batch_id))
    assert acker.acked == [Receipt(1, 7, 1)]
    await channel.close()
