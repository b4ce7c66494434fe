"""A small HTTP endpoint serving Prometheus metrics (and a liveness probe).

Each non-HTTP process (registry, delivery, bridge) runs one on its own address
(`EDGESENSE_<SERVICE>_METRICS_ADDR`); the gateway serves `/metrics` itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


async def metrics_handler(_request: web.Request) -> web.Response:
    body = generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _live(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def split_addr(addr: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {addr!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass
class MetricsServer:
    runner: web.AppRunner
    address: str

    @classmethod
    async def start(cls, addr: str) -> MetricsServer:
        app = web.Application()
        app.router.add_get("/metrics", metrics_handler)
        app.router.add_get("/healthz", _live)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = split_addr(addr)
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0] if runner.addresses else (host, port)
        return cls(runner, f"{bound[0]}:{bound[1]}")

    async def stop(self) -> None:
        await self.runner.cleanup()
