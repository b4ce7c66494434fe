"""Publish batches bounded by bytes: large MQTT payloads still reach delivery.

Before, a batch was up to 200 events whatever their size: 200 payloads of
256 KiB were one 51 MiB PublishRequest, which delivery refuses
(RESOURCE_EXHAUSTED) every time the bridge sends it again.
"""

from __future__ import annotations

import json
import time

from edgesense.common.message_limits import DELIVERY_MAX_RECEIVE, MAX_EVENT_BYTES
from edgesense_bridge.batching import Item, Outbox
from edgesense_bridge.inbound import Receipt
from edgesense_bridge.parsing import Accepted, ParseRules, RawMessage, Rejected, parse_message
from edgesense_bridge.topics import TopicLayout
from tests.bridge.delivery_double import FakeDelivery
from tests.bridge.test_forwarder import forwarding

RULES = ParseRules(TopicLayout("es"))
LARGEST = RULES.max_payload_bytes


def large_item(number: int) -> Item:
    """An event from a payload of just under the 256 KiB MQTT limit."""
    text = "x" * (LARGEST - 40)
    payload = json.dumps({"n": number, "blob": text}).encode()
    assert len(payload) <= LARGEST
    raw = RawMessage(b"es/p/gw/dev/data", payload, time.time_ns())
    outcome = parse_message(raw, RULES, event_id=f"evt_{number:05d}")
    assert isinstance(outcome, Accepted)
    assert outcome.size == outcome.event.ByteSize()
    return Item(outcome.event, Receipt(1, number + 1, 1), time.monotonic(), 0, outcome.size)


def test_batches_of_large_events_fit_delivery_s_receive_limit() -> None:
    outbox = Outbox(batch_size=200, depth=1000)
    items = [large_item(n) for n in range(200)]
    for item in items:
        outbox.add(item)
    batches = []
    while outbox.sendable():
        batches.append(outbox.next_batch())
    assert [i.event.event_id for b in batches for i in b.items] == [i.event.event_id for i in items]
    sizes = [b.request().ByteSize() for b in batches]
    assert max(sizes) <= DELIVERY_MAX_RECEIVE
    assert min(len(b.items) for b in batches[:-1]) >= 15  # full batches, not one per message


def test_an_event_larger_than_any_batch_is_rejected_as_too_large() -> None:
    # Small numbers cost 2 bytes each in JSON but 11 as protobuf (a Struct ListValue).
    payload = json.dumps({"v": [1] * 500_000}).encode()
    rules = ParseRules(TopicLayout("es"), max_payload_bytes=len(payload))
    raw = RawMessage(b"es/p/gw/dev/data", payload, time.time_ns())
    outcome = parse_message(raw, rules)
    assert isinstance(outcome, Rejected)
    assert outcome.reason == "too_large"
    assert f"exceeds {MAX_EVENT_BYTES}" in outcome.detail


async def test_large_events_reach_a_delivery_server_with_its_receive_limit(
    delivery: FakeDelivery,
) -> None:
    items = [large_item(n) for n in range(40)]
    async with forwarding(delivery, batch_size=200, depth=4) as (forwarder, confirmations):
        for item in items:
            forwarder.submit(item)
        assert await forwarder.drain(20)
    assert set(delivery.stored) == {item.event.event_id for item in items}
    assert len(confirmations.batches) >= 3
