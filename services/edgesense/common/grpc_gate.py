"""A gRPC interceptor that keeps strangers' bytes out: no API key, no request read.

grpc hands interceptors a call's metadata before its request message, but a
unary handler gets the request only once the whole message has arrived: 64
concurrent 15 MiB calls without an API key (under the 16 MiB limit of then)
grew the registry from 96 to 1,251 MiB, and under a 4 MiB limit 64 calls of
3 MB still grew it to 310 MiB, refused as UNAUTHENTICATED only once read.
`AuthGate` checks the bearer token from the metadata and answers a call
whose token is no API key nor the internal token with a handler that never
reads its request (a streaming handler whose request iterator is left
alone), so the transport discards the message instead of assembling it.
Which caller may call which method stays the servicers' business; the gate
only refuses unknown tokens.

Health checks and reflection stay open, as load balancers and grpcurl expect.
A method no service has is left to gRPC (UNIMPLEMENTED, nothing read) before
the token is looked at: refused here, it would be counted under the path the
client chose, and random paths would grow the metrics without limit.
The receive limits themselves are in `edgesense.common.message_limits`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from edgesense.common.auth import Authenticator
from edgesense.common.errors import Unauthenticated

OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _refusal(problem: Unauthenticated) -> grpc.RpcMethodHandler[Any, Any]:
    async def refuse(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        raise problem
        yield b""  # pragma: no cover - makes this an async generator

    return grpc.stream_stream_rpc_method_handler(refuse)


class AuthGate(grpc.aio.ServerInterceptor):
    """Refuses a call whose bearer token is no API key nor the internal token, unread."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: gRPC answers UNIMPLEMENTED, unread
            return None
        if not handler_call_details.method.startswith(OPEN_SERVICES):
            try:
                self._authenticator.caller(handler_call_details.invocation_metadata)
            except Unauthenticated as problem:
                return _refusal(problem)
        return handler
