"""An ordered webhook at a real receiver, on SQLite and PostgreSQL: one
device's deliveries arrive one at a time in event order, a failing one holds
back that device's later ones and no other device's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import zlib
from collections import defaultdict

import pytest
from aiohttp import web

from edgesense.v1 import events_pb2
from tests.integration.cluster import Cluster, reading
from tests.support.receivers import Received, Receiver


def device_and_number(body: bytes) -> tuple[str, int]:
    """The device of a delivery's event, and the number the test gave it."""
    event = json.loads(body)
    return str(event["deviceId"]), int(event["payload"]["n"])


def numbered(device: str, n: int) -> events_pb2.Event:
    return reading(device=device, values={"n": float(n)})


@pytest.fixture
def cluster_env(cluster_env: dict[str, str]) -> dict[str, str]:
    """Retries enough for a delivery failing while another device's go on."""
    return {**cluster_env, "EDGESENSE_MAX_RETRIES": "20", "EDGESENSE_RETRY_MAX_SECONDS": "0.5"}


async def test_a_failing_delivery_holds_back_its_devices_later_ones_only(
    cluster: Cluster, receiver: Receiver
) -> None:
    """A's second event fails until all of B's have arrived: A's third waits
    for it, B's are not held back meanwhile."""
    b_done = asyncio.Event()
    a1_failed = asyncio.Event()
    b_count = 6

    async def fail_a1_until_b_is_done(request: web.Request, _n: int) -> web.StreamResponse:
        device, number = device_and_number(await request.read())
        if (device, number) == ("B", 0):
            # B's first answer waits for A's second to have failed once, so
            # that all of B's go while A's second is failing, however the
            # machine schedules them (within the 1 s attempt timeout).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(a1_failed.wait(), 0.8)
        if device == "B" and number == b_count - 1:
            b_done.set()
        if (device, number) == ("A", 1) and not b_done.is_set():
            a1_failed.set()
            return web.Response(status=500)
        return web.Response(text="ok")

    receiver.behaviour = fail_a1_until_b_is_done
    webhook_id = await cluster.register(receiver.url, ordered=True)
    events = [numbered("A", n) for n in range(3)] + [numbered("B", n) for n in range(b_count)]
    await cluster.publish(events)

    await cluster.wait_deliveries(webhook_id, "succeeded", len(events), seconds=30)
    arrivals = [device_and_number(r.body) for r in receiver.received]
    a = [number for device, number in arrivals if device == "A"]
    b = [number for device, number in arrivals if device == "B"]
    # A's second failed at least once, and was sent again before A's third.
    assert (a[0], a[-1]) == (0, 2), a
    assert a.count(1) >= 2, a
    assert a.index(2) == len(a) - 1, a
    assert a == sorted(a)
    # In order (B's first is sent again if its held answer timed out).
    assert b == sorted(b)
    assert sorted(set(b)) == list(range(b_count))
    # B's last arrived while A's second was still failing (it succeeded after).
    last_b = arrivals.index(("B", b_count - 1))
    a1_succeeded = len(arrivals) - 1 - arrivals[::-1].index(("A", 1))
    assert last_b < a1_succeeded


async def test_every_devices_arrivals_are_in_event_order_one_at_a_time(
    cluster: Cluster, receiver: Receiver
) -> None:
    """A few hundred events over several devices, a fifth of the requests
    answered 500 (chosen by their body, so the same delivery may fail again):
    per device, requests never overlap and arrive in event order (a retry
    repeats the one before, never jumps ahead)."""
    devices, per_device = 6, 50
    in_flight: dict[str, int] = defaultdict(int)
    overlaps: list[str] = []

    async def slow_and_sometimes_failing(request: web.Request, n: int) -> web.StreamResponse:
        body = await request.read()
        device, _ = device_and_number(body)
        in_flight[device] += 1
        if in_flight[device] > 1:
            overlaps.append(device)
        try:
            await asyncio.sleep(0.002)  # a receiver's work: gives an overlap room to show
            fail = zlib.crc32(body + str(n).encode()) % 5 == 0
            return web.Response(status=500 if fail else 200)
        finally:
            in_flight[device] -= 1

    receiver.behaviour = slow_and_sometimes_failing
    webhook_id = await cluster.register(receiver.url, ordered=True)
    events = [numbered(f"dev-{n % devices}", n // devices) for n in range(devices * per_device)]
    await cluster.publish(events)

    await cluster.wait_deliveries(webhook_id, "succeeded", len(events), seconds=60)
    assert overlaps == []
    by_device: dict[str, list[Received]] = defaultdict(list)
    for r in receiver.received:
        by_device[device_and_number(r.body)[0]].append(r)
    assert len(by_device) == devices
    for device, received in by_device.items():
        numbers = [device_and_number(r.body)[1] for r in received]
        assert numbers == sorted(numbers), device
        assert sorted(set(numbers)) == list(range(per_device)), device
    assert len(receiver.received) > len(events)  # some were retried
