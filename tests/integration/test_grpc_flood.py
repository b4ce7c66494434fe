"""Floods of large unauthenticated gRPC calls against real service processes.

Before: 64 concurrent 15 MiB calls without an API key were all refused, but
the registry grew from 96 to 1,251 MiB and stayed there (every request was
read whole before its key was checked, under a 16 MiB limit). Now unknown
tokens are refused before the request is read (`grpc_gate.AuthGate`) and
each server's receive limit is what its API needs (`message_limits`). The
flood's calls fit those limits, so only the gate keeps memory down here.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from bench.procstats import memory_kb
from edgesense.common.auth import bearer_metadata
from edgesense.common.events import EVENT_NAMES
from edgesense.common.message_limits import DELIVERY_MAX_RECEIVE, REGISTRY_MAX_RECEIVE
from edgesense.common.netpolicy import MAX_URL_LENGTH
from edgesense.registry.validation import (
    MAX_DESCRIPTION_CHARS,
    MAX_DEVICE_IDS,
    MAX_SECRET_BYTES,
)
from edgesense.v1 import delivery_pb2, delivery_pb2_grpc, registry_pb2, registry_pb2_grpc
from tests.conftest import key_of
from tests.support.ports import free_port
from tests.support.processes import Processes

# Each call is just under its server's receive limit, so the limit cannot be
# what refuses it: only the gate can answer before the request is read.
# FLOOD bytes in all over CHANNELS connections. Without the gate the registry
# grew by 150-275 MiB and delivery by 450-630 MiB (peak RSS); with it 6-22
# and 17-108: delivery's receive windows grow (BDP probing, kept for the
# bridge's 4 MiB batches), so a call may be partly buffered before its
# refusal runs, more so on a loaded machine.
FLOOD = 256 * 1024 * 1024
CHANNELS = 8
MiB = 1024 * 1024
Call = Callable[[grpc.aio.Channel, str], Awaitable[Any]]


@pytest.fixture
def env(tmp_path: Path, api_keys: dict[str, str], secret_key: str) -> dict[str, str]:
    return {
        "EDGESENSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'flood.db'}",
        "EDGESENSE_API_KEYS": ",".join(f"{k}={p}" for k, p in api_keys.items()),
        "EDGESENSE_SECRET_KEY": secret_key,
        "EDGESENSE_REGISTRY_ADDR": f"127.0.0.1:{free_port()}",
        "EDGESENSE_DELIVERY_SENDERS": "0",
    }


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[Processes]:
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        await running.close()


async def flood(address: str, call: Call, size: int) -> Counter[str]:
    """FLOOD bytes of concurrent calls with `size`-byte fillers over CHANNELS connections."""
    channels = [grpc.aio.insecure_channel(address) for _ in range(CHANNELS)]
    filler = "x" * size

    async def one(number: int) -> str:
        try:
            await call(channels[number % CHANNELS], filler)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        return "OK"

    try:
        codes = Counter(await asyncio.gather(*(one(n) for n in range(FLOOD // size))))
    finally:
        for channel in channels:
            await channel.close()
    return codes


async def _register(channel: grpc.aio.Channel, filler: str) -> Any:
    stub = registry_pb2_grpc.WebhookRegistryStub(channel)
    request = registry_pb2.RegisterWebhookRequest(
        url="https://r.test/h", events=["device.data"], secret="s", description=filler
    )
    return await stub.RegisterWebhook(request, timeout=30)


async def _list_deliveries(channel: grpc.aio.Channel, filler: str) -> Any:
    stub = delivery_pb2_grpc.DeliveryStub(channel)
    request = delivery_pb2.ListDeliveriesRequest(webhook_id=filler)
    return await stub.ListDeliveries(request, timeout=30)


@pytest.mark.parametrize(
    ("service", "call", "size", "max_growth"),
    [
        ("registry", _register, REGISTRY_MAX_RECEIVE - 6 * 1024, 64 * MiB),  # 378 KiB calls
        ("delivery", _list_deliveries, DELIVERY_MAX_RECEIVE - 100 * 1024, 200 * MiB),  # 3.9 MiB
    ],
)
async def test_memory_stays_bounded_under_large_unauthenticated_calls(
    processes: Processes,
    env: dict[str, str],
    service: str,
    call: Call,
    size: int,
    max_growth: int,
) -> None:
    running = await processes.start(service, env)
    pid = running.process.pid
    rss, peak = memory_kb(pid)
    codes = await flood(running.address, call, size)
    rss_after, peak_after = memory_kb(pid)
    growth = max(rss_after - rss, peak_after - peak) * 1024
    assert set(codes) == {"UNAUTHENTICATED"}, codes
    assert growth < max_growth, f"{service} grew by {growth / MiB:.0f} MiB"


def largest_registration() -> registry_pb2.RegisterWebhookRequest:
    """The largest RegisterWebhook the registry's validation accepts."""
    wide = "\U0001f600"  # 4 bytes in UTF-8
    prefix = "https://r.test/"
    return registry_pb2.RegisterWebhookRequest(
        url=prefix + wide * (MAX_URL_LENGTH - len(prefix)),
        events=list(EVENT_NAMES),
        secret="s" * MAX_SECRET_BYTES,
        description=wide * MAX_DESCRIPTION_CHARS,
        device_ids=[f"{n}".rjust(128, "d") for n in range(MAX_DEVICE_IDS)],
    )


async def test_the_largest_valid_registration_fits_the_registry_limit(
    processes: Processes, env: dict[str, str], api_keys: dict[str, str]
) -> None:
    request = largest_registration()
    assert request.ByteSize() < REGISTRY_MAX_RECEIVE * 0.75  # with room to grow
    registry = await processes.start("registry", {**env, "EDGESENSE_ALLOW_PRIVATE_NETWORKS": "1"})
    async with grpc.aio.insecure_channel(registry.address) as channel:
        stub = registry_pb2_grpc.WebhookRegistryStub(channel)
        metadata = bearer_metadata(key_of(api_keys, "project-a"))
        answer = await stub.RegisterWebhook(request, metadata=metadata, timeout=10)
        assert answer.webhook_id.startswith("wh_")
        oversized = registry_pb2.RegisterWebhookRequest(description="x" * REGISTRY_MAX_RECEIVE)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RegisterWebhook(oversized, metadata=metadata, timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
