"""Real webhook receivers for tests: aiohttp.web servers on loopback, port 0.

A `Receiver` records every request (headers and raw body) and every TCP
connection it accepted, so tests can check what arrived and whether
keep-alive connections were reused. TLS certificates come from a `trustme`
test CA; `FakeDNS` makes made-up names resolve to chosen addresses.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Names every test certificate is valid for.
CERT_NAMES = ("127.0.0.1", "::1", "localhost", "hooks.example.test")


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


@dataclass
class Receiver:
    """One server; `handler` answers (default: 200 "ok"); `url(path)` addresses it."""

    handler: Handler | None = None
    tls: ssl.SSLContext | None = None
    host: str = "127.0.0.1"
    requests: list[Received] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)
    # Handlers that must hang wait on this; stop() sets it so shutdown is quick.
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def connections(self) -> int:
        """Distinct TCP connections that carried at least one request."""
        return len(self.peers)

    def url(self, path: str = "/hook", host: str | None = None) -> str:
        host = host or self.host
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    async def _record(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        peer = request.transport.get_extra_info("peername")
        self.peers.add((peer[0], peer[1]))
        body = await request.read()
        self.requests.append(
            Received(request.method, request.path, CIMultiDict(request.headers), body)
        )
        if self.handler is None:
            return web.Response(text="ok")
        return await self.handler(request)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._record)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=self.tls)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()


def server_tls(ca: trustme.CA, names: tuple[str, ...] = CERT_NAMES) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def write_ca_bundle(ca: trustme.CA, directory: Path) -> str:
    path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


class FakeDNS(AbstractResolver):
    """Resolves only the names it was given; anything else fails like NXDOMAIN."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in self.names[host]
        ]

    async def close(self) -> None:
        pass
