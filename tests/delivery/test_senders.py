"""Sender processes: POSTs made by child processes, and what happens when one dies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from edgesense.common.config import Settings
from edgesense.common.errors import ConfigurationError
from edgesense.common.signing import signature_headers
from edgesense.delivery.send.attempt import AttemptResult
from edgesense.delivery.send.sender_wire import Frames, frame, result_message, result_of
from edgesense.delivery.send.senders import SenderPool
from tests.support.receivers import StartReceiver, started_receivers, write_ca_bundle
from tests.support.waiting import eventually

BODY = b'{"event":"device.data","payload":{"temperature":75.3}}'


def test_frames_survive_any_split() -> None:
    messages = [
        (1, "https://a.test/x", BODY, {"h": "v"}),
        (2, "u", b"", {}),
        (3, "ü", b"\0" * 70_000, {}),
    ]
    stream = b"".join(frame(m) for m in messages)
    for _ in range(20):
        frames = Frames()
        got: list[Any] = []
        position = 0
        while position < len(stream):
            step = random.randint(1, 9000)
            got += frames.feed(stream[position : position + step])
            position += step
        assert got == messages


def test_results_cross_unchanged() -> None:
    result = AttemptResult(
        started_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        duration_ms=12,
        status_code=503,
        error=None,
        response_excerpt="busy ü",
        retry_after=30.0,
    )
    assert result_of(result_message(7, result)) == result


@pytest.mark.parametrize(("raw", "expected"), [("0", 0), ("3", 3)])
def test_senders_setting(raw: str, expected: int) -> None:
    assert Settings.from_env({"EDGESENSE_DELIVERY_SENDERS": raw}).delivery_senders == expected


@pytest.mark.parametrize("raw", ["-1", "33", "many"])
def test_senders_setting_is_checked(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="EDGESENSE_DELIVERY_SENDERS"):
        Settings.from_env({"EDGESENSE_DELIVERY_SENDERS": raw})


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def receivers(ca: trustme.CA) -> AsyncIterator[StartReceiver]:
    async with started_receivers(ca) as start:
        yield start


PoolFactory = Callable[..., Awaitable[SenderPool]]


@pytest.fixture
async def pools(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[PoolFactory]:
    started: list[SenderPool] = []
    bundle = write_ca_bundle(ca, tmp_path)

    async def make(processes: int = 1, grace: float = 10.0, **options: Any) -> SenderPool:
        options = {
            "timeout_seconds": 3.0,
            "allow_private_networks": True,
            "ca_bundle": bundle,
            **options,
        }
        pool = SenderPool(processes, options, options["timeout_seconds"], grace)
        await pool.start()
        started.append(pool)
        return pool

    yield make
    for pool in started:
        await pool.close()


async def test_a_child_process_posts_the_exact_request(
    receivers: StartReceiver, pools: PoolFactory
) -> None:
    server = await receivers()
    pool = await pools(2)
    assert len(pool.pids) == 2
    assert os.getpid() not in pool.pids
    headers = signature_headers("s3cret", "dlv_1", "device.data", BODY, int(time.time()))
    results = await asyncio.gather(*(pool.post(server.url, BODY, headers) for _ in range(20)))
    assert all(r.ok and r.status_code == 200 and r.response_excerpt == "ok" for r in results)
    assert len(server.received) == 20
    arrived = server.received[0]
    assert arrived.body == BODY
    assert {k: arrived.headers[k] for k in headers} == headers


async def test_failures_come_back_as_attempt_results(
    receivers: StartReceiver, pools: PoolFactory
) -> None:
    async def busy(_request: web.Request, _n: int) -> web.Response:
        return web.Response(status=503, text="later", headers={"Retry-After": "7"})

    server = await receivers(busy)
    pool = await pools()
    answered = await pool.post(server.url, BODY, {})
    assert (answered.status_code, answered.response_excerpt, answered.retry_after) == (
        503,
        "later",
        7.0,
    )
    closed = await receivers()
    port = closed.port
    await closed.stop()
    refused = await pool.post(f"https://127.0.0.1:{port}/hook", BODY, {})
    assert refused.status_code is None
    assert refused.error == "connection refused"
    assert not refused.internal_failure  # the receiver's failure


async def test_the_private_network_rule_holds_in_the_child(
    receivers: StartReceiver, pools: PoolFactory
) -> None:
    server = await receivers()
    pool = await pools(allow_private_networks=False)
    result = await pool.post(server.url, BODY, {})
    assert result.error is not None
    assert "private address" in result.error
    assert server.received == []


async def test_a_killed_child_fails_its_attempts_and_is_started_again(
    receivers: StartReceiver, pools: PoolFactory
) -> None:
    hanging = asyncio.Event()

    async def hang(_request: web.Request, _n: int) -> web.Response:
        hanging.set()
        await asyncio.sleep(30)
        return web.Response()

    slow = await receivers(hang)
    fine = await receivers()
    pool = await pools(timeout_seconds=20.0)
    [pid] = pool.pids
    attempt = asyncio.create_task(pool.post(slow.url, BODY, {}))
    await asyncio.wait_for(hanging.wait(), 10)
    os.kill(pid, signal.SIGKILL)
    result = await asyncio.wait_for(attempt, 10)
    assert not result.ok
    assert result.error == "the sender process exited during the attempt"
    assert result.internal_failure  # not counted against the receiver
    await eventually(lambda: pool.pids not in ([], [pid]), 10, "a new sender process")
    assert (await pool.post(fine.url, BODY, {})).ok


async def test_close_lets_attempts_in_flight_finish(
    receivers: StartReceiver, pools: PoolFactory
) -> None:
    async def slowly(_request: web.Request, _n: int) -> web.Response:
        await asyncio.sleep(0.5)
        return web.Response(status=204)

    server = await receivers(slowly)
    pool = await pools()
    [pid] = pool.pids
    attempts = [asyncio.create_task(pool.post(server.url, BODY, {})) for _ in range(5)]
    # all five are at the receiver, being answered
    await eventually(lambda: len(server.received) == 5, 10, "the attempts at the receiver")
    await pool.close()
    assert [a.result().status_code for a in attempts] == [204] * 5
    assert pool.pids == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert (await pool.post(server.url, BODY, {})).error == "no sender process is running"


async def test_a_hung_child_is_killed_and_its_attempts_fail(
    receivers: StartReceiver, pools: PoolFactory
) -> None:
    server = await receivers()
    pool = await pools(timeout_seconds=0.5, grace=0.5)
    [pid] = pool.pids
    os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing
    try:
        result = await asyncio.wait_for(pool.post(server.url, BODY, {}), 10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert result.error == "the sender process exited during the attempt"
    assert result.internal_failure
    await eventually(lambda: pool.pids not in ([], [pid]), 10, "a new sender process")
    assert (await pool.post(server.url, BODY, {})).ok
