"""Fair sharing between projects (issue 10), with registry and delivery as
real processes and receivers over real sockets.

Project B registers 300 webhooks to a receiver that holds every request for a
minute (past the default 3 s attempt timeout, which the test keeps: B's
attempts hold their slots for the whole time A is measured) and publishes 50
events: 15,000 deliveries. Project A's healthy webhook gets 300 events alone,
then 300 more while B's attempts hang; its time beside B must stay within 3x
its time alone, measured in the same test. B's receiver is on another
address (127.0.0.2) in one case, and on A's host and port (other paths) in
the other: webhooks sharing a host must not share a connection pool.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from aiohttp import web

from edgesense.common.auth import bearer_metadata
from edgesense.common.config import Settings
from edgesense.v1 import registry_pb2, registry_pb2_grpc
from tests.conftest import key_of
from tests.integration.cluster import reading
from tests.support.processes import (
    Processes,
    ServiceProcess,
    arrived,
    publish,
    wait_routed,
)
from tests.support.receivers import Receiver
from tests.support.waiting import eventually

HOOKS_OF_B, EVENTS_OF_B, EVENTS_OF_A = 300, 50, 300
HANG_SECONDS = 60.0
PER_PROJECT = 192  # the default: 256 slots less one webhook's 64
MAX_RATIO = 3.0


async def hang(_request: web.Request, _n: int) -> web.StreamResponse:
    await asyncio.sleep(HANG_SECONDS)
    return web.Response(status=503)


async def ok_or_hang(request: web.Request, n: int) -> web.StreamResponse:
    """One server for both projects: A's path answers, B's paths hang."""
    if request.path == "/a":
        return web.Response(text="ok")
    return await hang(request, n)


async def register_many(
    registry: ServiceProcess, api_key: str, urls: list[str], chunk: int = 50
) -> list[str]:
    """Register a webhook per URL over one channel, `chunk` at a time."""
    ids: list[str] = []
    async with grpc.aio.insecure_channel(registry.address) as channel:
        stub = registry_pb2_grpc.WebhookRegistryStub(channel)
        for start in range(0, len(urls), chunk):
            answers = await asyncio.gather(
                *(
                    stub.RegisterWebhook(
                        registry_pb2.RegisterWebhookRequest(
                            url=url, events=["device.data"], secret="b-secret"
                        ),
                        metadata=bearer_metadata(api_key),
                        timeout=20,
                    )
                    for url in urls[start : start + chunk]
                )
            )
            ids += [answer.webhook_id for answer in answers]
    return ids


async def time_to_arrive(
    delivery: ServiceProcess, token: str, receiver: Receiver, webhook_id: str
) -> float:
    """Seconds from publishing A's events to the last one's arrival."""
    events = [reading(project="project-a", device=f"a-{n}") for n in range(EVENTS_OF_A)]
    began = time.monotonic()
    await publish(delivery, token, events)
    await eventually(
        arrived(receiver, webhook_id, [e.event_id for e in events]),
        60,
        f"{EVENTS_OF_A} events of project A",
    )
    return time.monotonic() - began


@pytest.mark.parametrize("shared_host", [False, True], ids=["other-host", "same-host-and-port"])
async def test_a_project_keeps_its_pace_beside_one_whose_receivers_hang(
    service_processes: Processes,
    tmp_path: Path,
    api_keys: dict[str, str],
    secret_key: str,
    shared_host: bool,
) -> None:
    env = {
        "EDGESENSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'edgesense.db'}",
        "EDGESENSE_API_KEYS": ",".join(f"{k}={p}" for k, p in api_keys.items()),
        "EDGESENSE_SECRET_KEY": secret_key,
        "EDGESENSE_ALLOW_INSECURE_URLS": "1",
        "EDGESENSE_ALLOW_PRIVATE_NETWORKS": "1",
        # B's 300 webhooks are three times the default limit of a project.
        "EDGESENSE_MAX_WEBHOOKS_PER_PROJECT": "0",
    }  # otherwise the defaults: 256 slots, 64 per webhook, 3 s timeout, retries after 30 s
    token = Settings.from_env(env).service_token()
    healthy = Receiver(ok_or_hang) if shared_host else Receiver()
    hanging = healthy if shared_host else Receiver(hang)
    receivers = [healthy] if shared_host else [healthy, hanging]
    try:
        if shared_host:
            await healthy.start()  # a receiver answers on every path
            a_url, b_base = f"{healthy.base}/a", healthy.base
        else:
            a_url = await healthy.start(path="/a")
            await hanging.start(host="127.0.0.2")
            b_base = hanging.base
        registry = await service_processes.start("registry", env)
        [a_hook] = await register_many(registry, key_of(api_keys, "project-a"), [a_url])
        b_urls = [f"{b_base}/b/{n}" for n in range(HOOKS_OF_B)]
        await register_many(registry, key_of(api_keys, "project-b"), b_urls)
        delivery = await service_processes.start(
            "delivery", {**env, "EDGESENSE_REGISTRY_ADDR": registry.address}
        )
        await wait_routed(delivery, token, healthy, a_hook)

        alone = await time_to_arrive(delivery, token, healthy, a_hook)

        b_events = [reading(project="project-b", device=f"b-{n}") for n in range(EVENTS_OF_B)]
        await publish(delivery, token, b_events)
        await eventually(
            lambda: hanging.in_progress >= PER_PROJECT, 20, "B's attempts holding their slots"
        )
        beside = await time_to_arrive(delivery, token, healthy, a_hook)
        held = hanging.in_progress
    finally:
        for receiver in receivers:
            await receiver.stop()

    print(f"A's {EVENTS_OF_A} events: {alone:.2f} s alone, {beside:.2f} s beside B")
    # B's attempts were still hanging, as many as one project may hold: the
    # scenario held for the whole measurement.
    assert held >= PER_PROJECT, held
    assert beside <= MAX_RATIO * alone, (
        f"A's {EVENTS_OF_A} events took {beside:.2f} s beside B, {alone:.2f} s alone "
        f"({beside / alone:.1f}x, at most {MAX_RATIO:g}x allowed)"
    )
