"""Slow and surplus clients against the REST API over real sockets: header and body
timeouts, the connection cap and who makes room at it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx
import pytest

from edgesense.api import RunningApi, start_api
from edgesense.api.connections import HttpLimits, default_max_connections
from edgesense.api.server import GUARD_KEY
from edgesense.v1 import registry_pb2
from tests.support.waiting import eventually

if TYPE_CHECKING:
    from tests.api.conftest import Backend

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


@asynccontextmanager
async def serving(backend: Backend, limits: HttpLimits) -> AsyncIterator[RunningApi]:
    running = await start_api({"edgesense.v1.WebhookRegistry": backend.address}, limits=limits)
    try:
        yield running
    finally:
        await running.stop()


async def closed_total(running: RunningApi, reason: str) -> str:
    """The REST API's count of connections it closed for `reason`, as /metrics shows it."""
    async with httpx.AsyncClient(base_url=running.url, trust_env=False) as client:
        text = (await client.get("/metrics")).text
    name = f'edgesense_api_connections_closed_total{{reason="{reason}"}} '
    return next(line for line in text.splitlines() if line.startswith(name)).split()[-1]


class Clients:
    """Raw client connections, all closed when the test ends."""

    def __init__(self) -> None:
        self.opened: list[Stream] = []

    async def connect(self, running: RunningApi) -> Stream:
        stream = await asyncio.open_connection("127.0.0.1", running.port)
        self.opened.append(stream)
        return stream


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    made = Clients()
    try:
        yield made
    finally:
        for _, writer in made.opened:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def closed_by_server(stream: Stream, seconds: float = 5.0) -> bytes:
    """Everything the server sent before it closed the connection (fails if it does not)."""
    reader, _ = stream
    received = b""
    async with asyncio.timeout(seconds):
        try:
            while chunk := await reader.read(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


async def answer(stream: Stream, request: bytes = HEALTHZ) -> bytes:
    """One request on a kept-alive connection, and the head of its answer."""
    reader, writer = stream
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    return head


async def trickle(stream: Stream) -> None:
    """Headers one line every 50 ms, never finished (cancel to stop)."""
    _, writer = stream
    writer.write(b"GET /healthz HTTP/1.1\r\n")
    number = 0
    while True:
        writer.write(f"X-Slow-{number}: 1\r\n".encode())
        number += 1
        await asyncio.sleep(0.05)


async def test_trickled_headers_are_cut_at_the_header_timeout_but_idle_keep_alive_is_not(
    registry_backend: Backend, clients: Clients
) -> None:
    async with serving(registry_backend, HttpLimits(header_timeout=0.3)) as running:
        kept_alive = await clients.connect(running)
        assert (await answer(kept_alive)).startswith(b"HTTP/1.1 200")
        # Timed from before the connection: the server's timer starts once it is open.
        loop = asyncio.get_running_loop()
        started = loop.time()
        slow = await clients.connect(running)
        trickling = asyncio.create_task(trickle(slow))
        try:
            assert await closed_by_server(slow) == b""
        finally:
            trickling.cancel()
        assert loop.time() - started >= 0.3
        # idle longer than the header timeout, the first connection still answers
        assert (await answer(kept_alive)).startswith(b"HTTP/1.1 200")
        assert await closed_total(running, "header_timeout") == "1.0"


async def test_at_the_cap_a_new_client_evicts_the_longest_waiting(
    registry_backend: Backend, clients: Clients
) -> None:
    async with serving(registry_backend, HttpLimits(max_connections=3)) as running:
        guard = running.runner.app[GUARD_KEY]
        silent = [await clients.connect(running) for _ in range(3)]
        await eventually(lambda: len(guard) == 3, 5, "three connections open")
        async with httpx.AsyncClient(base_url=running.url, trust_env=False) as client:
            assert (await client.get("/healthz")).status_code == 200
        assert await closed_by_server(silent[0]) == b""
        assert await closed_total(running, "evicted") == "1.0"
        for stream in silent[1:]:
            assert (await answer(stream)).startswith(b"HTTP/1.1 200")


async def test_at_the_cap_with_every_connection_busy_a_new_one_is_refused(
    registry_backend: Backend, clients: Clients
) -> None:
    registry_backend.servicer.hold_list = True
    async with serving(registry_backend, HttpLimits(max_connections=2)) as running:
        busy = [await clients.connect(running) for _ in range(2)]
        for _, writer in busy:
            writer.write(b"GET /api/webhooks HTTP/1.1\r\nHost: t\r\n\r\n")
        held = registry_backend.servicer.requests
        await eventually(lambda: len(held) == 2, 5, "both requests reached the backend")
        refused = await clients.connect(running)
        refused[1].write(HEALTHZ)
        assert await closed_by_server(refused) == b""
        registry_backend.servicer.release.set()
        for reader, _ in busy:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            assert head.startswith(b"HTTP/1.1 200")
        assert await closed_total(running, "over_capacity") == "1.0"


async def test_a_body_slower_than_the_body_timeout_is_408_and_closed(
    registry_backend: Backend, clients: Clients
) -> None:
    async with serving(registry_backend, HttpLimits(body_timeout=0.3)) as running:
        stream = await clients.connect(running)
        stream[1].write(
            b"POST /api/webhooks/register HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n"
            b'Content-Type: application/json\r\n\r\n{"url": '
        )
        received = await closed_by_server(stream)
        assert received.startswith(b"HTTP/1.1 408"), received
        assert b"did not arrive within 0.3 s" in received
        assert registry_backend.servicer.requests == []


def test_the_connection_cap_stays_below_the_open_file_limit() -> None:
    ceiling = default_max_connections()
    assert ceiling < resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert HttpLimits().connection_cap() == ceiling
    assert HttpLimits(max_connections=ceiling * 2).connection_cap() == ceiling
    assert HttpLimits(max_connections=5).connection_cap() == 5


async def test_at_the_cap_a_client_reading_a_large_answer_slowly_gets_all_of_it(
    registry_backend: Backend, clients: Clients
) -> None:
    # ~3 MB of JSON: more than the kernel's socket buffers hold for a reader
    # with a 4 KiB receive buffer, so most of it is still in the REST API while
    # new clients arrive and make room at the cap.
    hook = registry_pb2.Webhook(webhook_id="w", url="https://example.com/" + "a" * 3000)
    registry_backend.servicer.list_answer.webhooks.extend([hook] * 1000)
    async with serving(registry_backend, HttpLimits(max_connections=2)) as running:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", running.port))
        slow = await asyncio.open_connection(sock=sock)
        clients.opened.append(slow)
        reader, writer = slow
        writer.write(b"GET /api/webhooks HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        # Two newcomers: the second makes room by evicting the first, not the reader.
        first = await clients.connect(running)
        await clients.connect(running)
        assert await closed_by_server(first) == b""
        body = await asyncio.wait_for(reader.readexactly(length), 10.0)
        assert len(json.loads(body)["webhooks"]) == 1000
        assert (await answer(slow)).startswith(b"HTTP/1.1 200")
