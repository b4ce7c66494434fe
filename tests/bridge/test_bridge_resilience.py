"""No loss: kill -9 mid-burst, delivery down for 20 s, two bridges sharing the load.

The first two run `edgesense bridge` as a subprocess (a kill -9 must hit a real
process, and its memory is measured there); delivery is the recording test
double in this process, so every event that arrives is counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edgesense.common.config import Settings
from edgesense.v1 import events_pb2
from tests.bridge.conftest import (
    API_KEY,
    PROJECT,
    TOKEN,
    bridge_options,
    delivery_double,
    running_bridge,
)
from tests.bridge.delivery_double import FakeDelivery
from tests.bridge.process import BridgeProcess
from tests.support.broker import Gateway, Mosquitto
from tests.support.waiting import eventually


def seq_of(event: events_pb2.Event) -> object:
    if event.device_id.startswith("burst-"):
        return int(event.readings.values.fields["seq"].number_value)
    return event.device_id  # probes


def burst(prefix: str, count: int) -> list[tuple[str, bytes, None]]:
    return [
        (f"{prefix}/{PROJECT}/gw-1/burst-{n % 16}/data", json.dumps({"seq": n}).encode(), None)
        for n in range(count)
    ]


def delivered(delivery: FakeDelivery) -> int:
    return sum(1 for key in delivery.keys if isinstance(key, int))


@pytest.fixture
def bridge_process(
    mosquitto: Mosquitto, delivery: FakeDelivery, prefix: str, tmp_path: Path
) -> Iterator[BridgeProcess]:
    delivery.key = seq_of
    env = {
        "EDGESENSE_MQTT_URL": mosquitto.url,
        "EDGESENSE_MQTT_TOPIC_PREFIX": prefix,
        "EDGESENSE_MQTT_CLIENT_ID": f"bridge-{uuid.uuid4().hex[:8]}",
        "EDGESENSE_DELIVERY_ADDR": delivery.addr,
        "EDGESENSE_API_KEYS": f"{API_KEY}={PROJECT}",
        "EDGESENSE_INTERNAL_TOKEN": TOKEN,
        "EDGESENSE_BRIDGE_MAX_IN_FLIGHT": "500",
    }
    process = BridgeProcess(env, tmp_path / "bridge.log")
    try:
        yield process
    finally:
        process.stop()


async def until_ready(gateway: Gateway, delivery: FakeDelivery, prefix: str) -> None:
    """Probe until the bridge forwards (it is subscribed, with its session, from then on)."""

    async def forwarded() -> bool:
        if any(isinstance(key, str) for key in delivery.keys):
            return True
        await gateway.publish([(f"{prefix}/{PROJECT}/gw-1/probe/data", b"{}", None)])
        return False

    await eventually(forwarded, 20, "the bridge to forward a probe", interval=0.2)


async def test_kill_9_mid_burst_then_restart_delivers_all_5000(
    bridge_process: BridgeProcess, gateway: Gateway, delivery: FakeDelivery, prefix: str
) -> None:
    bridge_process.start()
    await until_ready(gateway, delivery, prefix)
    publishing = asyncio.create_task(gateway.publish(burst(prefix, 5000), pause_every=250))
    await delivery.wait_for(lambda: delivered(delivery) >= 1000, 30, "1000 events")
    bridge_process.kill()
    at_kill = delivered(delivery)
    await publishing
    assert at_kill < 5000, "the kill should land mid-burst"
    bridge_process.start()
    await delivery.wait_for(lambda: delivered(delivery) == 5000, 60, "all 5000 events")
    copies = sum(1 for event in delivery.received if event.device_id.startswith("burst-"))
    print(f"kill -9 after {at_kill} of 5000; {copies - 5000} delivered twice")


async def test_delivery_down_for_20_seconds_loses_nothing_and_memory_stays_bounded(
    bridge_process: BridgeProcess, gateway: Gateway, delivery: FakeDelivery, prefix: str
) -> None:
    bridge_process.start()
    await until_ready(gateway, delivery, prefix)
    rss_start = bridge_process.rss_kib()
    publishing = asyncio.create_task(gateway.publish(burst(prefix, 5000), pause_every=100))
    await delivery.wait_for(lambda: delivered(delivery) >= 500, 30, "500 events")
    await delivery.stop()
    outage_started = time.monotonic()
    most_in_flight, rss = 0.0, [bridge_process.rss_kib()]
    while time.monotonic() - outage_started < 20:
        await asyncio.sleep(0.5)
        most_in_flight = max(
            most_in_flight, await bridge_process.metric("edgesense_bridge_in_flight_messages")
        )
        rss.append(bridge_process.rss_kib())
    await publishing
    before_restart = delivered(delivery)
    await delivery.start()
    await delivery.wait_for(lambda: delivered(delivery) == 5000, 60, "all 5000 events")
    print(
        f"outage: {before_restart} of 5000 delivered before, in flight at most "
        f"{most_in_flight:.0f}, RSS {rss_start} KiB at start, {max(rss)} KiB at most"
    )
    assert before_restart < 5000
    assert 0 < most_in_flight <= 500, "the bridge holds at most its in-flight limit"
    assert max(rss) - rss[0] < 20 * 1024, "memory grew during the outage"
    assert bridge_process.stop() == 0, "SIGTERM stops the bridge cleanly"
    assert "bridge stopping" in bridge_process.log()


@pytest.fixture
async def second_delivery() -> AsyncIterator[FakeDelivery]:
    async with delivery_double() as double:
        yield double


async def test_two_bridges_in_one_shared_group_split_a_burst(
    mosquitto: Mosquitto,
    gateway: Gateway,
    delivery: FakeDelivery,
    second_delivery: FakeDelivery,
    settings: Settings,
    prefix: str,
) -> None:
    for double in (delivery, second_delivery):
        double.key = seq_of
    group = f"bridges-{uuid.uuid4().hex[:6]}"
    first = bridge_options(mosquitto.url, prefix, shared_group=group)
    second = dataclasses.replace(first, client_id=first.client_id + "-b")
    async with (
        running_bridge(settings, delivery, first),
        running_bridge(settings, second_delivery, second),
    ):
        await gateway.publish(burst(prefix, 2000))
        await delivery.wait_for(
            lambda: delivered(delivery) + delivered(second_delivery) >= 2000, 30, "2000 events"
        )
    a, b = delivery.keys, second_delivery.keys
    print(f"shared subscription: {len(a)} + {len(b)} events")
    assert a | b == set(range(2000))
    assert len(a) > 200, "the first bridge took a share"
    assert len(b) > 200, "the second bridge took a share"
