"""A small HTTP endpoint serving Prometheus metrics (and a liveness probe).

Each non-HTTP process (registry, delivery, bridge) runs one on its own address
(`EDGESENSE_<SERVICE>_METRICS_ADDR`); the REST API serves `/metrics` itself.
An address that cannot be bound is a `CannotListen` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgesense.common.listen import cannot_listen, split_address


async def metrics_handler(_request: web.Request) -> web.Response:
    body = generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _live(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


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
        host, port = split_address(addr)
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise cannot_listen(addr, exc) from exc
        bound = runner.addresses[0] if runner.addresses else (host, port)
        return cls(runner, f"{bound[0]}:{bound[1]}")

    async def stop(self) -> None:
        await self.runner.cleanup()
