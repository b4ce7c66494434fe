"""What every EdgeSense gRPC server shares: error mapping, metrics, health,
reflection and graceful shutdown.

Servicers stay thin and raise `edgesense.errors` exceptions; `ErrorInterceptor`
is the one place those become gRPC statuses. `GrpcServer` owns a grpc.aio
server: it binds (port 0 for tests), serves `grpc.health.v1.Health` and
reflection, and on stop flips health to NOT_SERVING before the grace period so
load balancers drain it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram

from edgesense.errors import EdgesenseError, InvalidArgument
from edgesense.log_throttle import ThrottledLog

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

DETAILS_KEY = "grpc-status-details-bin"


def status_trailers(error: EdgesenseError) -> tuple[tuple[str, bytes], ...]:
    """`google.rpc.Status` details for an error (a BadRequest naming the field)."""
    if not isinstance(error, InvalidArgument):
        return ()
    violation = error_details_pb2.BadRequest.FieldViolation(
        field=error.field, description=error.problem
    )
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    status = status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message=error.message, details=[detail]
    )
    return ((DETAILS_KEY, status.SerializeToString()),)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: EdgesenseError) -> None:
    await context.abort(error.code, error.message, trailing_metadata=status_trailers(error))


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
        code = exc.code
        await _abort(context, exc)
    except (asyncio.CancelledError, grpc.aio.AbortError):
        code = grpc.StatusCode.CANCELLED
        raise
    except Exception as exc:
        code = grpc.StatusCode.INTERNAL
        _internal_errors.exception((method, type(exc)), "unexpected error in %s", method)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")
    finally:
        _record(method, started, code)


def _wrap_unary(inner: Any, method: str) -> Any:
    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async with _guard(method, context):
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
        if handler is None:
            return None
        method = handler_call_details.method
        common = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method), **common
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


class GrpcServer:
    """A grpc.aio server with health, reflection and the error interceptor."""

    def __init__(self, registrars: Sequence[Registrar], service_names: Iterable[str]) -> None:
        self._names = list(service_names)
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(
            interceptors=[ErrorInterceptor()],
            options=[
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        for register in registrars:
            register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self._names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.port = 0

    async def start(self, addr: str) -> int:
        self.port = self.server.add_insecure_port(addr)
        if self.port == 0:
            raise OSError(f"cannot listen on {addr}")
        await self.server.start()
        for name in ["", *self._names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        with contextlib.suppress(Exception):
            await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def wait_for_signal(stop: asyncio.Event | None = None) -> None:
    """Wait until SIGTERM/SIGINT (or `stop` is set)."""
    import signal

    event = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if stop is None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, event.set)
    try:
        await event.wait()
    finally:
        if stop is None:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
