"""Publish refuses events it could not store or send (InvalidArgument naming
the field) instead of failing later; the stream's other batches and the
service carry on."""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc
import pytest

from edgesense.v1 import events_pb2
from tests.integration.cluster import Cluster, reading
from tests.support.receivers import Receiver

# Protobuf's Timestamp range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
FIRST_SECOND = -62_135_596_800
LAST_SECOND = 253_402_300_799


def set_seconds(field: str, seconds: int, nanos: int = 0) -> Callable[[events_pb2.Event], None]:
    def change(event: events_pb2.Event) -> None:
        stamp = getattr(event, field)
        stamp.seconds, stamp.nanos = seconds, nanos

    return change


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (set_seconds("timestamp", LAST_SECOND + 1), "events[1].timestamp"),
        (set_seconds("timestamp", FIRST_SECOND - 1), "events[1].timestamp"),
        (set_seconds("timestamp", 1_753_353_317, nanos=1_000_000_000), "events[1].timestamp"),
        (set_seconds("timestamp", 1_753_353_317, nanos=-1), "events[1].timestamp"),
        (set_seconds("received_at", 10**15), "events[1].receivedAt"),
    ],
)
async def test_a_timestamp_out_of_range_is_invalid_argument_naming_the_field(
    cluster: Cluster,
    receiver: Receiver,
    change: Callable[[events_pb2.Event], None],
    field: str,
) -> None:
    webhook_id = await cluster.register(receiver.url)
    good, bad = reading(), reading()
    change(bad)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await cluster.publish([good, bad])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(refused.value.details()).startswith(f"{field}: is out of range"), (
        refused.value.details()
    )
    # Nothing of the refused batch was stored; the next one is delivered.
    after = reading()
    [confirmed] = await cluster.publish([after])
    assert confirmed.accepted == 1
    [got] = await receiver.wait_for(1)
    assert json.loads(got.body)["eventId"] == after.event_id
    [record] = await cluster.deliveries(webhook_id)
    assert record["eventId"] == after.event_id


async def test_the_edges_of_the_range_are_delivered(cluster: Cluster, receiver: Receiver) -> None:
    await cluster.register(receiver.url)
    first, last = reading(), reading()
    set_seconds("timestamp", FIRST_SECOND)(first)
    set_seconds("timestamp", LAST_SECOND, nanos=999_999_999)(last)
    await cluster.publish([first, last])
    stamps = {json.loads(r.body)["timestamp"] for r in await receiver.wait_for(2)}
    assert stamps == {"0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z"}
