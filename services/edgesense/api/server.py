"""The REST API's HTTP server (aiohttp): the application, its connections, its lifecycle.

`create_app` builds the application from the descriptors (routes, OpenAPI)
at once, so a broken http rule stops the start, and opens the gRPC channels
on startup, closing them on cleanup. `start_api` serves it on a port (0
picks a free one) through a `ConnectionGuard` (connection cap, header
timeout; the body has its own timeout here, answered 408), `run_api`
serves `settings.http_addr` until stopped by the event or SIGTERM/SIGINT,
then finishes in-flight requests first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware
from google.protobuf.descriptor_pool import DescriptorPool
from prometheus_client import CollectorRegistry

from edgesense.api.backends import DEFAULT_TIMEOUT_SECONDS, Backends
from edgesense.api.connections import ConnectionGuard, HttpLimits
from edgesense.api.console import add_console_routes
from edgesense.api.handlers import ApiHandlers
from edgesense.api.metrics import ApiMetrics
from edgesense.api.router import Router
from edgesense.api.rules import load_routes
from edgesense.api.transcode import MAX_BODY_BYTES
from edgesense.common.config import Settings
from edgesense.common.errors import ConfigurationError
from edgesense.common.listen import cannot_listen, join_address, split_address
from edgesense.common.runtime import stop_on_signals
from edgesense.common.tls import GrpcTls

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_SECONDS = DEFAULT_TIMEOUT_SECONDS + 5.0
LINGERING_SECONDS = 10.0  # aiohttp's default

DEFAULT_LIMITS = HttpLimits()
HANDLERS_KEY = web.AppKey("edgesense_api_handlers", ApiHandlers)
GUARD_KEY = web.AppKey("edgesense_connection_guard", ConnectionGuard)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _tracking(guard: ConnectionGuard) -> Middleware:
    """A middleware telling the guard when a connection has a request in hand.

    The request is done once its answer is written: aiohttp writes a returned
    response only after the middlewares, so it is written here (aiohttp then
    finds it prepared and ended, and writes nothing more), else a client
    reading a large answer slowly would look idle and could be evicted.
    """

    @web.middleware
    async def track(request: web.Request, handler: Handler) -> web.StreamResponse:
        guard.request_started(request.transport)
        try:
            response = await handler(request)
            await response.prepare(request)
            await response.write_eof()
            return response
        finally:
            guard.request_done(request.transport)

    return track


def create_app(
    backends: Mapping[str, str],
    *,
    call_timeout: float = DEFAULT_TIMEOUT_SECONDS,
    metrics_registry: CollectorRegistry | None = None,
    pool: DescriptorPool | None = None,
    limits: HttpLimits = DEFAULT_LIMITS,
    tls: GrpcTls | None = None,
) -> web.Application:
    """The REST API for `backends` (gRPC service full name -> address)."""
    channels = Backends(backends, timeout=call_timeout, tls=tls)
    metrics = ApiMetrics(metrics_registry)
    router = Router(load_routes(backends, pool))
    handlers = ApiHandlers(router, channels, metrics, limits.body_timeout)
    guard = ConnectionGuard(
        max_connections=limits.connection_cap(),
        header_timeout=limits.header_timeout,
        on_closed=metrics.connection_closed,
    )
    metrics.track_connections(guard)
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_tracking(guard)])
    app[HANDLERS_KEY] = handlers
    app[GUARD_KEY] = guard

    async def open_channels(app: web.Application) -> AsyncIterator[None]:
        await channels.open()
        try:
            yield
        finally:
            await channels.close(grace=1.0)

    app.cleanup_ctx.append(open_channels)
    app.router.add_get("/healthz", handlers.healthz, allow_head=False)
    app.router.add_get("/metrics", handlers.metrics_text, allow_head=False)
    app.router.add_get("/openapi.json", handlers.openapi_json, allow_head=False)
    add_console_routes(app)  # the web console's files, before the catch-all
    app.router.add_route("*", "/{tail:.*}", handlers.transcode)
    return app


def default_backends(settings: Settings) -> dict[str, str]:
    return {
        "edgesense.v1.WebhookRegistry": settings.registry_addr,
        "edgesense.v1.AlertRules": settings.registry_addr,
        "edgesense.v1.Delivery": settings.delivery_addr,
        "edgesense.v1.Devices": settings.delivery_addr,
        "edgesense.v1.DeviceConfig": settings.bridge_addr,
    }


@dataclass
class RunningApi:
    runner: web.AppRunner
    listener: asyncio.Server
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{join_address(self.host, self.port)}"

    async def stop(self) -> None:
        """Stop listening, finish in-flight requests, close the channels."""
        self.listener.close()
        await self.runner.cleanup()


async def start_api(
    backends: Mapping[str, str],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    call_timeout: float = DEFAULT_TIMEOUT_SECONDS,
    metrics_registry: CollectorRegistry | None = None,
    pool: DescriptorPool | None = None,
    limits: HttpLimits = DEFAULT_LIMITS,
    tls: GrpcTls | None = None,
) -> RunningApi:
    """Serve a new REST API on host:port (0: a free port, see `.port`)."""
    app = create_app(
        backends,
        call_timeout=call_timeout,
        metrics_registry=metrics_registry,
        pool=pool,
        limits=limits,
        tls=tls,
    )
    # After an early answer (408, 413) aiohttp reads and drops the rest of the
    # body for `lingering_time` before closing: that is body reading too.
    lingering = min(LINGERING_SECONDS, limits.body_timeout)
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS, lingering_time=lingering)
    await runner.setup()
    guard = app[GUARD_KEY]
    guard.factory = runner.server
    try:
        # Our own listener instead of web.TCPSite, so every connection goes
        # through the guard; aiohttp still tracks and drains them on cleanup.
        listener = await asyncio.get_running_loop().create_server(guard.protocol, host, port)
    except OSError as exc:
        await runner.cleanup()
        raise cannot_listen(join_address(host, port), exc) from exc
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = int(listener.sockets[0].getsockname()[1])
    return RunningApi(runner, listener, host, bound_port)


async def run_api(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    on_started: Callable[[RunningApi], None] | None = None,
) -> None:
    """Serve settings.http_addr until `stop` is set (or SIGTERM/SIGINT without one).

    `on_started` learns the bound address (useful with port 0).
    """
    try:  # the parser every service's listen address goes through: ':8080' is every address
        host, port = split_address(settings.http_addr)
    except ValueError:
        message = f"EDGESENSE_HTTP_ADDR must be host:port, not {settings.http_addr!r}"
        raise ConfigurationError(message) from None
    stop_event = stop or asyncio.Event()
    with stop_on_signals(stop_event) if stop is None else contextlib.nullcontext():
        running = await start_api(
            default_backends(settings),
            host,
            port,
            limits=http_limits(settings),
            tls=settings.grpc_tls,
        )
        try:
            guard = running.runner.app[GUARD_KEY]
            log.info(
                "api listening on %s (at most %d connections)",
                running.url,
                guard.max_connections,
            )
            if on_started is not None:
                on_started(running)
            await stop_event.wait()
        finally:
            log.info("api stopping")
            await running.stop()


def http_limits(settings: Settings) -> HttpLimits:
    return HttpLimits(
        header_timeout=settings.http_header_timeout_seconds,
        body_timeout=settings.http_body_timeout_seconds,
        max_connections=settings.http_max_connections,
    )
