"""The forwarder against a real gRPC Delivery server: pipelined batches, confirmations,
resending after a broken stream, back-pressure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import pytest
from prometheus_client import REGISTRY

from edgesense.v1 import events_pb2
from edgesense_bridge.batching import Batch, Item, Outbox
from edgesense_bridge.forwarder import Forwarder, delivery_channel
from edgesense_bridge.inbound import Receipt
from tests.bridge.conftest import TOKEN
from tests.bridge.delivery_double import FakeDelivery


@dataclass
class Confirmations:
    batches: list[Batch] = field(default_factory=list)
    most_in_flight: int = 0

    @property
    def event_ids(self) -> list[str]:
        return [item.event.event_id for batch in self.batches for item in batch.items]


@asynccontextmanager
async def forwarding(
    delivery: FakeDelivery, token: str = TOKEN, batch_size: int = 10, depth: int = 4
) -> AsyncIterator[tuple[Forwarder, Confirmations]]:
    confirmations = Confirmations()
    channel = delivery_channel(delivery.addr)
    outbox = Outbox(batch_size, depth)

    def confirmed(batch: Batch) -> None:
        confirmations.batches.append(batch)
        in_flight = outbox.in_flight_batches + 1  # this one is no longer counted
        confirmations.most_in_flight = max(confirmations.most_in_flight, in_flight)

    forwarder = Forwarder(channel, token, outbox, confirmed, linger_seconds=0.001)
    task = asyncio.create_task(forwarder.run())
    try:
        yield forwarder, confirmations
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await channel.close()


def submit(forwarder: Forwarder, count: int, start: int = 0) -> list[str]:
    ids = [f"evt_{n:05d}" for n in range(start, start + count)]
    for n, event_id in enumerate(ids, start):
        event = events_pb2.Event(event_id=event_id, device_id="d")
        forwarder.submit(Item(event, Receipt(1, n % 65535 + 1, 1), time.monotonic()))
    return ids


def failures(code: str) -> float:
    value = REGISTRY.get_sample_value(
        "edgesense_bridge_delivery_stream_failures_total", {"code": code}
    )
    return value or 0.0


def all_failures() -> float:
    """Publish streams that ended, for any reason."""
    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "edgesense_bridge_delivery_stream_failures"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


async def test_batches_are_pipelined_and_confirmed_in_order(delivery: FakeDelivery) -> None:
    delivery.delay = 0.02
    async with forwarding(delivery, batch_size=10, depth=4) as (forwarder, confirmations):
        ids = submit(forwarder, 200)
        await delivery.wait_for(lambda: len(confirmations.event_ids) == 200, what="200 confirmed")
        assert confirmations.event_ids == ids
        assert set(delivery.stored) == set(ids)
        assert confirmations.most_in_flight > 1, "several batches should be in flight at once"
        assert all(len(batch.items) <= 10 for batch in confirmations.batches)
        assert [b.batch_id for b in confirmations.batches] == sorted(delivery.batches)
        assert await forwarder.drain(0.1)


async def test_a_lone_event_is_sent_at_once(delivery: FakeDelivery) -> None:
    async with forwarding(delivery, batch_size=200) as (forwarder, confirmations):
        started = time.monotonic()
        submit(forwarder, 1)
        await delivery.wait_for(lambda: len(confirmations.batches) == 1, what="a confirmation")
        assert time.monotonic() - started < 0.5
        assert len(confirmations.batches[0].items) == 1


async def test_nothing_is_confirmed_while_delivery_holds_back(delivery: FakeDelivery) -> None:
    delivery.pause()
    async with forwarding(delivery) as (forwarder, confirmations):
        submit(forwarder, 30)
        # All three batches are sent, and the first is at delivery, which holds it.
        await delivery.wait_for(lambda: forwarder.outbox.in_flight_batches == 3, what="3 sent")
        await delivery.wait_for(lambda: delivery.requests_read == 1, what="a batch at delivery")
        assert confirmations.batches == []
        assert not await forwarder.drain(0.05)
        assert len(forwarder.outbox) == 30
        delivery.resume()
        assert await forwarder.drain(5)
        assert len(confirmations.event_ids) == 30


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
async def test_a_broken_stream_resends_unconfirmed_batches(
    delivery: FakeDelivery, code: grpc.StatusCode
) -> None:
    before = failures(code.name)
    delivery.pause()
    delivery.fail_next = code
    async with forwarding(delivery, batch_size=5, depth=4) as (forwarder, confirmations):
        ids = submit(forwarder, 40)
        await delivery.wait_for(lambda: delivery.requests_read >= 1, what="a batch sent")
        delivery.resume()  # stores the first batch, then ends the stream unconfirmed
        assert await forwarder.drain(10)
        assert sorted(confirmations.event_ids) == ids
        assert set(delivery.stored) == set(ids)
        assert delivery.duplicates >= 5, "the unconfirmed batch came again, same event ids"
        assert len(delivery.received) == len(ids) + delivery.duplicates
    assert failures(code.name) == before + 1


async def test_delivery_restarting_loses_nothing(delivery: FakeDelivery) -> None:
    async with forwarding(delivery) as (forwarder, confirmations):
        first = submit(forwarder, 20)
        assert await forwarder.drain(5)
        ended = all_failures()
        await delivery.stop()
        await delivery.wait_for(lambda: all_failures() > ended, what="the stream's end")
        second = submit(forwarder, 20, start=20)  # held while delivery is away
        assert len(confirmations.event_ids) == 20
        await delivery.start()
        assert await forwarder.drain(10)
        assert sorted(confirmations.event_ids) == first + second


async def test_a_wrong_token_confirms_nothing(delivery: FakeDelivery) -> None:
    before = failures("UNAUTHENTICATED")
    async with forwarding(delivery, token="wrong") as (forwarder, confirmations):
        submit(forwarder, 3)
        await delivery.wait_for(lambda: failures("UNAUTHENTICATED") > before, what="a refusal")
        assert confirmations.batches == []
        assert delivery.stored == {}
