"""Graceful shutdown forwards what the bridge holds, or leaves it unacknowledged."""

from __future__ import annotations

import asyncio
import logging

import pytest

from edgesense.common.config import Settings
from tests.bridge.conftest import PROJECT, bridge_options, running_bridge
from tests.bridge.delivery_double import FakeDelivery
from tests.support.broker import Gateway, Mosquitto
from tests.support.waiting import eventually


def readings(prefix: str, count: int, start: int = 0) -> list[tuple[str, bytes, None]]:
    topic = f"{prefix}/{PROJECT}/gw/dev/data"
    return [(topic, b'{"n": %d}' % n, None) for n in range(start, start + count)]


async def test_stopping_forwards_and_acknowledges_what_it_holds(
    mosquitto: Mosquitto, gateway: Gateway, delivery: FakeDelivery, settings: Settings, prefix: str
) -> None:
    options = bridge_options(mosquitto.url, prefix)
    delivery.pause()
    async with running_bridge(settings, delivery, options) as bridge:
        await gateway.publish(readings(prefix, 50))
        await eventually(lambda: len(bridge.forwarder.outbox) == 50, 5, "50 held events")
        asyncio.get_running_loop().call_later(0.5, delivery.resume)
    assert len(delivery.stored) == 50  # the stop waited for delivery
    async with running_bridge(settings, delivery, options):
        await gateway.publish(readings(prefix, 1, start=50))
        await delivery.wait_for(lambda: len(delivery.stored) == 51, what="the 51st event")
    assert len(delivery.received) == 51, "all 50 were acknowledged before the disconnect"


async def test_stopping_leaves_unconfirmed_messages_to_the_broker(
    mosquitto: Mosquitto, gateway: Gateway, delivery: FakeDelivery, settings: Settings, prefix: str
) -> None:
    options = bridge_options(mosquitto.url, prefix)
    delivery.pause()
    async with running_bridge(settings, delivery, options) as bridge:
        bridge.drain_seconds = 0.3
        await gateway.publish(readings(prefix, 20))
        await eventually(lambda: len(bridge.forwarder.outbox) == 20, 5, "20 held events")
    assert delivery.stored == {}
    delivery.key = lambda event: event.readings.values.fields["n"].number_value
    delivery.resume()  # (the cut stream's first batch may be stored now: a harmless copy)
    async with running_bridge(settings, delivery, options):
        await delivery.wait_for(lambda: len(delivery.keys) == 20, what="the 20 events again")


async def test_a_clean_stop_logs_no_warning(
    mosquitto: Mosquitto,
    delivery: FakeDelivery,
    settings: Settings,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Our own DISCONNECT is not a lost connection: no WARNING "Normal disconnection"."""
    caplog.set_level(logging.INFO, logger="edgesense_bridge")
    async with running_bridge(settings, delivery, bridge_options(mosquitto.url, prefix)):
        pass
    assert "mqtt: disconnected from" in caplog.text  # the disconnect was seen ...
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
