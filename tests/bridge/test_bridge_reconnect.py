"""The broker connection drops while events wait for delivery: the broker resends
them on the resumed session, and delivery sees the same event ids again."""

from __future__ import annotations

import socket

from edgesense.common.config import Settings
from tests.bridge.conftest import PROJECT, bridge_options, running_bridge
from tests.bridge.delivery_double import FakeDelivery
from tests.support.broker import Gateway, Mosquitto
from tests.support.waiting import eventually


async def test_resent_messages_keep_their_event_ids(
    mosquitto: Mosquitto, gateway: Gateway, delivery: FakeDelivery, settings: Settings, prefix: str
) -> None:
    delivery.key = lambda event: event.readings.values.fields["n"].number_value
    topic = f"{prefix}/{PROJECT}/gw/dev/data"
    options = bridge_options(mosquitto.url, prefix, batch_size=1, pipeline_depth=1)
    async with running_bridge(settings, delivery, options) as bridge:
        delivery.pause()
        await gateway.publish([(topic, b'{"n": %d}' % n, None) for n in range(10)])
        await eventually(lambda: len(bridge.forwarder.outbox) == 10, 5, "10 held events")
        held = {item.event.event_id for item in bridge.forwarder.outbox}
        sock = bridge.connection._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)  # the network drops the broker connection
        await eventually(lambda: not bridge.connection.subscribed.is_set(), 5, "the drop")
        await eventually(bridge.connection.subscribed.is_set, 10, "the reconnect")
        outbox = bridge.forwarder.outbox

        def resent() -> list[str]:
            return [item.event.event_id for item in outbox if item.receipt.epoch == 2]

        await eventually(lambda: len(resent()) == 10, 5, "the resent copies")
        assert set(resent()) == held
        assert len(outbox) == 11, "queued copies were dropped; the one in flight stays"
        delivery.resume()
        await delivery.wait_for(lambda: len(delivery.keys) == 10, what="10 events")
        await eventually(lambda: len(bridge.forwarder.outbox) == 0, 5, "all acknowledged")
    assert set(delivery.stored) == held, "no event was stored twice under another id"
