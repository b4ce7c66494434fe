"""The gateway's HTTP server (aiohttp): transcoding handler, built-in routes, lifecycle.

`create_app` builds the application from the descriptors (routes, OpenAPI)
at once, so a broken http rule stops the start, and opens the gRPC channels
on startup, closing them on cleanup. `start_gateway` serves it on a port (0
picks a free one), `run_gateway` serves `settings.http_addr` until stopped
by the event or SIGTERM/SIGINT, then finishes in-flight requests first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import grpc
from aiohttp import web
from google.protobuf.descriptor_pool import DescriptorPool
from prometheus_client import CollectorRegistry

from edgesense.config import Settings
from edgesense.errors import ConfigurationError
from edgesense.gateway.backends import DEFAULT_TIMEOUT_SECONDS, Backends
from edgesense.gateway.comments import load_comments
from edgesense.gateway.metadata import outgoing_metadata
from edgesense.gateway.metrics import CONTENT_TYPE, UNMATCHED_ROUTE, GatewayMetrics
from edgesense.gateway.openapi import openapi_document
from edgesense.gateway.router import RouteMatch, Router
from edgesense.gateway.rules import load_routes
from edgesense.gateway.status import GatewayError
from edgesense.gateway.transcode import MAX_BODY_BYTES, build_request, render_response
from edgesense.listen import cannot_listen, join_address
from edgesense.runtime import stop_on_signals

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_SECONDS = DEFAULT_TIMEOUT_SECONDS + 5.0


class Gateway:
    """The request handlers, over a router, the backends and the metrics."""

    def __init__(self, router: Router, backends: Backends, metrics: GatewayMetrics) -> None:
        self.router = router
        self.backends = backends
        self.metrics = metrics
        comments = load_comments()
        document = openapi_document(router.routes, comments=comments)
        self.openapi = json.dumps(document, indent=2).encode()

    async def transcode(self, request: web.Request) -> web.Response:
        started, label = time.perf_counter(), UNMATCHED_ROUTE
        with self.metrics.in_flight.track_inprogress():
            try:
                match = self.router.match(request.method, request.rel_url.raw_path)
                label = match.route.template.source
                response = _json_response(await self._forward(match, request))
            except GatewayError as exc:
                response = error_response(exc)
            except Exception:
                log.exception(
                    "gateway: unexpected error answering %s %s", request.method, request.path
                )
                response = error_response(
                    GatewayError(grpc.StatusCode.INTERNAL, "internal error in the gateway")
                )
        self.metrics.observe(label, request.method, response.status, time.perf_counter() - started)
        return response

    async def _forward(self, match: RouteMatch, request: web.Request) -> bytes:
        route = match.route
        body = await _read_body(request) if route.body else b""
        message = build_request(match, body, request.rel_url.query.items())
        metadata = outgoing_metadata(
            request.headers.items(), peer=request.remote, host=request.headers.get("Host")
        )
        try:
            answer = await self.backends.call(route, message, metadata)
        except GatewayError as exc:
            self.metrics.backend_call(route.grpc_path, exc.code.name)
            raise
        self.metrics.backend_call(route.grpc_path, grpc.StatusCode.OK.name)
        return render_response(route, answer)

    async def openapi_json(self, request: web.Request) -> web.Response:
        return self._builtin("/openapi.json", request, _json_response(self.openapi))

    async def healthz(self, request: web.Request) -> web.Response:
        return self._builtin("/healthz", request, _json_response(b'{"status": "ok"}'))

    async def metrics_text(self, request: web.Request) -> web.Response:
        response = web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})
        return self._builtin("/metrics", request, response)

    def _builtin(self, label: str, request: web.Request, response: web.Response) -> web.Response:
        self.metrics.observe(label, request.method, response.status, 0.0)
        return response


GATEWAY_KEY = web.AppKey("edgesense_gateway", Gateway)


def create_app(
    backends: Mapping[str, str],
    *,
    call_timeout: float = DEFAULT_TIMEOUT_SECONDS,
    metrics_registry: CollectorRegistry | None = None,
    pool: DescriptorPool | None = None,
) -> web.Application:
    """The gateway for `backends` (gRPC service full name -> address)."""
    channels = Backends(backends, timeout=call_timeout)
    gateway = Gateway(
        Router(load_routes(backends, pool)), channels, GatewayMetrics(metrics_registry)
    )
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[GATEWAY_KEY] = gateway

    async def open_channels(app: web.Application) -> AsyncIterator[None]:
        await channels.open()
        try:
            yield
        finally:
            await channels.close(grace=1.0)

    app.cleanup_ctx.append(open_channels)
    app.router.add_get("/healthz", gateway.healthz, allow_head=False)
    app.router.add_get("/metrics", gateway.metrics_text, allow_head=False)
    app.router.add_get("/openapi.json", gateway.openapi_json, allow_head=False)
    app.router.add_route("*", "/{tail:.*}", gateway.transcode)
    return app


def default_backends(settings: Settings) -> dict[str, str]:
    return {
        "edgesense.v1.WebhookRegistry": settings.registry_addr,
        "edgesense.v1.Delivery": settings.delivery_addr,
        "edgesense.v1.DeviceConfig": settings.bridge_addr,
    }


@dataclass
class RunningGateway:
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop listening, finish in-flight requests, close the channels."""
        await self.runner.cleanup()


async def start_gateway(
    backends: Mapping[str, str],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    call_timeout: float = DEFAULT_TIMEOUT_SECONDS,
    metrics_registry: CollectorRegistry | None = None,
    pool: DescriptorPool | None = None,
) -> RunningGateway:
    """Serve a new gateway on host:port (0: a free port, see `.port`)."""
    app = create_app(
        backends, call_timeout=call_timeout, metrics_registry=metrics_registry, pool=pool
    )
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise cannot_listen(join_address(host, port), exc) from exc
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = int(runner.addresses[0][1])
    return RunningGateway(runner, host, bound_port)


async def run_gateway(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    on_started: Callable[[RunningGateway], None] | None = None,
) -> None:
    """Serve settings.http_addr until `stop` is set (or SIGTERM/SIGINT without one).

    `on_started` learns the bound address (useful with port 0).
    """
    host, port = parse_address(settings.http_addr)
    stop_event = stop or asyncio.Event()
    with stop_on_signals(stop_event) if stop is None else contextlib.nullcontext():
        running = await start_gateway(default_backends(settings), host, port)
        try:
            log.info("gateway listening on %s", running.url)
            if on_started is not None:
                on_started(running)
            await stop_event.wait()
        finally:
            log.info("gateway stopping")
            await running.stop()


def parse_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigurationError(f"EDGESENSE_HTTP_ADDR must be host:port, not {address!r}")
    return host.strip("[]"), int(port)


def error_response(error: GatewayError) -> web.Response:
    return web.Response(
        status=error.status,
        body=error.body(),
        content_type="application/json",
        headers=error.headers,
    )


def _json_response(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


async def _read_body(request: web.Request) -> bytes:
    too_large = GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"request body is larger than {MAX_BODY_BYTES} bytes",
        status=413,
    )
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise too_large
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
