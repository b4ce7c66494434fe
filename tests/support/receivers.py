"""Real webhook receivers for tests: aiohttp servers on loopback (HTTP, or
HTTPS with a certificate from a trustme test CA) that record what arrives and
answer as told.

A `Receiver` records every request, on any path and with any method (so a
test sees a redirect that was followed, too), and every TCP connection that
carried one (so a test sees whether keep-alive connections were reused).
`Flaky` answers 500 or hangs now and then, from a seeded random draw.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web
from multidict import CIMultiDict

Behaviour = Callable[[web.Request, int], Awaitable[web.StreamResponse]]

# Names every test certificate is valid for.
CERT_NAMES = (
    "127.0.0.1",
    "::1",
    "localhost",
    "hooks.example.test",
    "xn--bcher-kva.example.test",  # bücher.example.test
)


async def ok(_request: web.Request, _n: int) -> web.StreamResponse:
    return web.Response(text="ok")


class Flaky:
    """A receiver that answers 500 or hangs now and then, else as `then` does.

    Each request draws from a random generator seeded with `seed`, so a run's
    sequence of answers can be replayed: with probability `error_rate` a 500,
    with `hang_rate` a hang of `hang_seconds` (longer than the sender's
    timeout, so the sender gives up) before `then` answers, as a slow
    receiver that did the work too late would. `errors` and `hangs` count them.
    """

    def __init__(
        self,
        then: Behaviour,
        seed: int,
        error_rate: float,
        hang_rate: float,
        hang_seconds: float,
    ) -> None:
        self.then = then
        self.random = random.Random(seed)
        self.error_rate = error_rate
        self.hang_rate = hang_rate
        self.hang_seconds = hang_seconds
        self.errors = 0
        self.hangs = 0

    async def __call__(self, request: web.Request, n: int) -> web.StreamResponse:
        draw = self.random.random()
        if draw < self.error_rate:
            self.errors += 1
            return web.Response(text="flaky", status=500)
        if draw < self.error_rate + self.hang_rate:
            self.hangs += 1
            await asyncio.sleep(self.hang_seconds)
        return await self.then(request, n)


class Switch:
    """A receiver's answer: `status` for every request until changed."""

    def __init__(self, status: int = 200) -> None:
        self.status = status

    async def __call__(self, _request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(text="ok" if self.status < 300 else "down", status=self.status)


# The integration guide's verify_signature snippet, verbatim: what receivers will run.
def verify_signature(secret, payload, signature):  # type: ignore[no-untyped-def]
    computed = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(computed, signature)


guide_verify_signature: Callable[[str, str, str], bool] = verify_signature


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: CIMultiDict[str]
    body: bytes
    at: float  # time.time() when it arrived

    @property
    def delivery_id(self) -> str:
        return self.headers["X-EdgeSense-Delivery"]


@dataclass
class Receiver:
    """Records every request; `behaviour(request, n)` answers the n-th (1-based).

    `start()` gives `url` (and `base`, its scheme, host and port); a handler
    that must hang waits on `release`, which `stop()` sets so shutdown is quick.
    """

    behaviour: Behaviour = ok
    received: list[Received] = field(default_factory=list)
    url: str = ""
    base: str = ""  # scheme, host and port
    port: int = 0
    in_progress: int = 0
    peers: set[tuple[str, int]] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _tls: bool = False
    _runner: web.AppRunner | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def start(
        self, ca: trustme.CA | None = None, path: str = "/hook", host: str = "127.0.0.1"
    ) -> str:
        """Listen on a free port of `host` (any 127.x.y.z is loopback), over
        HTTPS with a certificate from `ca` if given; `url` is `base` + `path`."""
        app = web.Application(client_max_size=8 * 1024 * 1024)  # aiohttp's default: 1 MiB
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.1
        )
        await self._runner.setup()
        context = server_tls(ca) if ca is not None else None
        site = web.TCPSite(self._runner, host, 0, ssl_context=context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._tls = ca is not None
        self.base = self.base_via(host)
        self.url = f"{self.base}{path}"
        return self.url

    def base_via(self, host: str) -> str:
        """The base URL under another name of this host (`localhost`, a `hosts` name)."""
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}"

    def url_via(self, host: str, path: str = "/hook") -> str:
        return f"{self.base_via(host)}{path}"

    @property
    def connections(self) -> int:
        """Distinct TCP connections that carried at least one request."""
        return len(self.peers)

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        peer = request.transport.get_extra_info("peername")
        self.peers.add((peer[0], peer[1]))
        body = await request.read()
        headers = CIMultiDict(request.headers)
        async with self._changed:
            self.received.append(Received(request.method, request.path, headers, body, time.time()))
            n = len(self.received)
            self._changed.notify_all()
        self.in_progress += 1
        try:
            return await self.behaviour(request, n)
        finally:
            self.in_progress -= 1

    async def wait_for(self, count: int, seconds: float = 20.0) -> list[Received]:
        """Wait until `count` requests arrived; fail the test after `seconds`."""
        async with asyncio.timeout(seconds), self._changed:
            await self._changed.wait_for(lambda: len(self.received) >= count)
        return list(self.received)

    def deliveries(self) -> set[str]:
        return {r.delivery_id for r in self.received}


StartReceiver = Callable[..., Awaitable[Receiver]]


@contextlib.asynccontextmanager
async def started_receivers(ca: trustme.CA | None = None) -> AsyncIterator[StartReceiver]:
    """`start(behaviour, **start_arguments)` starts a Receiver (HTTPS from
    `ca` unless another `ca` is given); every one is stopped on leaving."""
    started: list[Receiver] = []

    async def start(behaviour: Behaviour = ok, **arguments: Any) -> Receiver:
        arguments.setdefault("ca", ca)
        receiver = Receiver(behaviour)
        started.append(receiver)
        await receiver.start(**arguments)
        return receiver

    try:
        yield start
    finally:
        for receiver in started:
            await receiver.stop()


def server_tls(ca: trustme.CA, names: tuple[str, ...] = CERT_NAMES) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def write_ca_bundle(ca: trustme.CA, directory: Path) -> str:
    path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)
