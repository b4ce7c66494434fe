"""The bridge's gRPC health follows its MQTT connection: NOT_SERVING until it
is connected and subscribed, and again while the broker is away (so that
`edgesense up` and Kubernetes' readiness probe see a bridge that delivers
nothing)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgesense.common.config import Settings
from edgesense_bridge.server import Bridge
from tests.bridge.conftest import bridge_options, sample
from tests.bridge.delivery_double import FakeDelivery
from tests.support.broker import Mosquitto
from tests.support.ports import free_port
from tests.support.waiting import eventually

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=2
        )
    return int(answer.status)


async def health_becomes(port: int, status: int, within: float = 15.0) -> None:
    async def reached() -> bool:
        return await health(port) == status

    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    await eventually(reached, within, f"health {name}", interval=0.05)


def failed_attempts() -> float:
    return sample("edgesense_bridge_mqtt_connect_attempts_total", result="failed")


async def test_not_serving_while_the_broker_is_unreachable(
    settings: Settings,
    delivery: FakeDelivery,
    prefix: str,
    broker_factory: Callable[..., Mosquitto],
) -> None:
    port = free_port()  # nothing listens there yet
    options = bridge_options(f"mqtt://127.0.0.1:{port}", prefix, reconnect_max_seconds=1)
    bridge = Bridge(dataclasses.replace(settings, delivery_addr=delivery.addr), options)
    stop = asyncio.Event()
    failed_before = failed_attempts()
    task = asyncio.create_task(bridge.run(stop, addr="127.0.0.1:0"))
    try:
        await eventually(lambda: failed_attempts() >= failed_before + 2, what="two failed tries")
        assert await health(bridge.port) == NOT_SERVING

        broker = broker_factory(port=port)
        await health_becomes(bridge.port, SERVING)
        assert bridge.connection.subscribed.is_set()

        broker.stop()
        await health_becomes(bridge.port, NOT_SERVING)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
