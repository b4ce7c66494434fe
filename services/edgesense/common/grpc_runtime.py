"""What every EdgeSense gRPC server shares: error mapping, metrics, health,
reflection and graceful shutdown.

Servicers stay thin and raise `edgesense.common.errors` exceptions; `ErrorInterceptor`
is the one place those become gRPC statuses (by `grpc_status`'s mapping).
`GrpcServer` owns a grpc.aio server: it binds (port 0 for tests; TLS when
configured, see `grpc_tls`), serves `grpc.health.v1.Health` and, when enabled,
reflection, and on stop flips health to NOT_SERVING before the grace period so
load balancers drain it first. A server may start NOT_SERVING and report its own readiness
(`set_serving`: the bridge, while it has no MQTT connection). An address that
is taken is a `CannotListen` naming it (see `edgesense.common.listen`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection as grpc_reflection
from prometheus_client import Counter, Histogram

from edgesense.common.auth import Authenticator
from edgesense.common.errors import CannotListen, EdgesenseError
from edgesense.common.grpc_gate import AuthGate
from edgesense.common.grpc_status import status_code, status_trailers
from edgesense.common.grpc_tls import listen
from edgesense.common.listen import ensure_free
from edgesense.common.log_throttle import ThrottledLog
from edgesense.common.message_limits import GRPC_DEFAULT_MAX_RECEIVE, max_receive
from edgesense.common.runtime import stop_on_signals
from edgesense.common.textcheck import check_message_text
from edgesense.common.tls import GrpcTls

if TYPE_CHECKING:
    from edgesense.common.config import Settings

log = logging.getLogger(__name__)
# A bug that every call runs into logs one traceback, then a line a minute.
_internal_errors = ThrottledLog(log)

GRPC_REQUESTS = Counter("edgesense_grpc_requests_total", "gRPC calls handled", ["method", "code"])
GRPC_LATENCY = Histogram(
    "edgesense_grpc_request_seconds",
    "Time to handle a gRPC call (unary) or to open it (streams)",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

# Calls to a method no service has share one label: the path is the client's
# choice, and a label per path would let anyone grow the metrics for ever.
UNKNOWN_METHOD = "unknown"

# Internal methods whose strings come from our own services, not from users;
# the servicer cleans them itself (a refused disable report would be retried
# for ever).
TEXT_UNCHECKED = frozenset({"/edgesense.v1.WebhookRegistry/ReportDeliveryFailure"})


def _record(method: str, started: float, code: grpc.StatusCode) -> None:
    GRPC_REQUESTS.labels(method, code.name).inc()
    GRPC_LATENCY.labels(method).observe(time.perf_counter() - started)


@contextlib.asynccontextmanager
async def _guard(method: str, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
    """Map errors raised by a handler to statuses, and record the call."""
    started = time.perf_counter()
    code = grpc.StatusCode.OK
    try:
        yield
    except EdgesenseError as exc:
        code = status_code(exc)
        await context.abort(code, exc.message, trailing_metadata=status_trailers(exc))
    except (asyncio.CancelledError, grpc.aio.AbortError):
        code = grpc.StatusCode.CANCELLED
        raise
    except Exception as exc:
        code = grpc.StatusCode.INTERNAL
        _internal_errors.exception((method, type(exc)), "unexpected error in %s", method)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")
    finally:
        _record(method, started, code)


def _wrap_unary(inner: Any, method: str, check_text: bool = False) -> Any:
    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async with _guard(method, context):
            if check_text:
                check_message_text(request)
            return await inner(request, context)

    return unary


def _wrap_stream(inner: Any, method: str) -> Any:
    async def stream(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        async with _guard(method, context):
            async for item in inner(request, context):
                yield item

    return stream


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns EdgesenseError into its status, anything else into INTERNAL (logged)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler: Any = await continuation(handler_call_details)
        if handler is None:  # gRPC answers UNIMPLEMENTED itself
            GRPC_REQUESTS.labels(UNKNOWN_METHOD, grpc.StatusCode.UNIMPLEMENTED.name).inc()
            return None
        method = handler_call_details.method
        common = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            # Every string of every unary request, before any servicer sees it.
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method, method not in TEXT_UNCHECKED), **common
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, method), **common
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method), **common
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(handler.stream_stream, method), **common
        )


Registrar = Callable[[grpc.aio.Server], None]


def server_options(max_receive: int, bdp_probe: bool = True) -> list[tuple[str, int]]:
    """Options of every server; `max_receive` is the largest request message it reads.

    Without `bdp_probe` each call's receive window stays at 64 KiB: the most
    a call the gate refused unread can leave buffered (with it, the window
    grows on a fast link and 1,048 refused 250 KiB calls still grew the
    registry by 33-169 MiB; without it 6-13 MiB). Only for servers whose
    requests are small: big uploads over a slow link need the larger window.
    """
    return [
        ("grpc.max_receive_message_length", max_receive),
        ("grpc.http2.bdp_probe", int(bdp_probe)),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.so_reuseport", 0),  # a second server on our port must fail, not share it
    ]


class GrpcServer:
    """A grpc.aio server with health, optional reflection and the error interceptor."""

    def __init__(
        self,
        registrars: Sequence[Registrar],
        service_names: Iterable[str],
        *,
        tls: GrpcTls | None = None,
        reflection: bool = False,
        max_receive: int = GRPC_DEFAULT_MAX_RECEIVE,
        gate: Authenticator | None = None,
        bdp_probe: bool = True,
    ) -> None:
        self._names = list(service_names)
        self._tls = tls or GrpcTls()
        self.health = health.aio.HealthServicer()
        # The gate runs inside the error interceptor, so its refusals are counted too.
        gates = [AuthGate(gate)] if gate is not None else []
        self.server = grpc.aio.server(
            interceptors=[ErrorInterceptor(), *gates],
            options=server_options(max_receive, bdp_probe),
        )
        for register in registrars:
            register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if reflection:  # it lists the internal methods too: a setting, off in production
            names = [*self._names, health.SERVICE_NAME, grpc_reflection.SERVICE_NAME]
            grpc_reflection.enable_server_reflection(names, self.server)
        self.port = 0

    @classmethod
    def for_service(
        cls,
        registrar: Registrar,
        service_name: str,
        settings: Settings,
        gate: Authenticator,
        *,
        bdp_probe: bool = True,
    ) -> GrpcServer:
        """One of our services' servers, as the settings say: TLS, reflection,
        the service's receive limit, and the gate in front of its methods."""
        return cls.for_services([registrar], [service_name], settings, gate, bdp_probe=bdp_probe)

    @classmethod
    def for_services(
        cls,
        registrars: Sequence[Registrar],
        service_names: Sequence[str],
        settings: Settings,
        gate: Authenticator,
        *,
        bdp_probe: bool = True,
    ) -> GrpcServer:
        """A server of several of our services (the registry serves webhooks
        and alert rules): as `for_service`, with the largest of their receive
        limits, since a server has one."""
        return cls(
            registrars,
            service_names,
            tls=settings.grpc_tls,
            reflection=settings.grpc_reflection,
            max_receive=max(max_receive(name) for name in service_names),
            gate=gate,
            bdp_probe=bdp_probe,
        )

    async def start(self, addr: str, serving: bool = True) -> int:
        """Listen on `addr` (port 0: a free one, returned); health SERVING unless told not."""
        ensure_free(addr)
        try:
            self.port = listen(self.server, addr, self._tls)
        except RuntimeError:  # taken since ensure_free looked (older grpcio: returns 0)
            self.port = 0
        if self.port == 0:
            raise CannotListen(addr, "the address is in use or not available")
        await self.server.start()
        await self.set_serving(serving)
        return self.port

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self._names]:
            await self.health.set(name, status)

    async def stop(self, grace: float = 5.0) -> None:
        with contextlib.suppress(Exception):
            await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def wait_for_signal(stop: asyncio.Event | None = None) -> None:
    """Wait until SIGTERM/SIGINT (or `stop` is set)."""
    event = stop or asyncio.Event()
    with stop_on_signals(event) if stop is None else contextlib.nullcontext():
        await event.wait()
