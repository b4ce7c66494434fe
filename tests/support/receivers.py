"""Real webhook receivers for tests: aiohttp servers on loopback (HTTP, or
HTTPS with a trustme CA) that record what arrives and answer as told."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trustme
from aiohttp import web

Behaviour = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


async def ok(_request: web.Request, _n: int) -> web.StreamResponse:
    return web.Response(text="ok")


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def delivery_id(self) -> str:
        return self.headers["X-EdgeSense-Delivery"]


@dataclass
class Receiver:
    """Records every request; `behaviour(request, n)` answers the n-th (1-based)."""

    behaviour: Behaviour = ok
    received: list[Received] = field(default_factory=list)
    url: str = ""
    base: str = ""  # scheme, host and port
    in_progress: int = 0
    _runner: web.AppRunner | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def start(
        self, ca: trustme.CA | None = None, path: str = "/hook", host: str = "127.0.0.1"
    ) -> str:
        """Listen on a free port of `host` (any 127.x.y.z is loopback); `path`
        may be an aiohttp pattern (then `base` plus a path is a URL)."""
        app = web.Application()
        app.router.add_post(path, self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        context = None
        if ca is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
        site = web.TCPSite(self._runner, host, 0, ssl_context=context)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base = f"{'https' if ca else 'http'}://{host}:{port}"
        self.url = f"{self.base}{path}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with self._changed:
            self.received.append(Received(dict(request.headers), body, time.time()))
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
