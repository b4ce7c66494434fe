"""The gRPC side of the REST API: one channel per backend address, generic unary calls.

Calls go through `channel.unary_unary("/pkg.Service/Method")` with the
request and response classes built from the descriptors, so the API
needs no generated stubs. Each call carries the forwarded metadata and a
deadline; a failed call leaves this module as a TranscodeError.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.protobuf import message_factory
from google.protobuf.message import Message

from edgesense.api.metadata import Metadata
from edgesense.api.rules import Route
from edgesense.api.status import from_rpc_error
from edgesense.common.errors import ConfigurationError
from edgesense.common.grpc_tls import open_channel
from edgesense.common.tls import GrpcTls

DEFAULT_TIMEOUT_SECONDS = 10.0

UnaryCall = grpc.aio.UnaryUnaryMultiCallable[Message, Message]


class Backends:
    """gRPC service full name -> channel; channels live between open() and close()."""

    def __init__(
        self,
        targets: Mapping[str, str],
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        tls: GrpcTls | None = None,
    ) -> None:
        if timeout <= 0:
            raise ConfigurationError(f"api: the call timeout must be positive, not {timeout}")
        self.targets = dict(targets)
        self.timeout = timeout
        self.tls = tls or GrpcTls()
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._calls: dict[str, UnaryCall] = {}

    async def open(self) -> None:
        """One channel per distinct address, TLS when configured (needs the running loop)."""
        for target in sorted(set(self.targets.values())):
            if target not in self._channels:
                self._channels[target] = open_channel(target, self.tls)

    async def close(self, grace: float | None = None) -> None:
        channels, self._channels = self._channels, {}
        self._calls.clear()
        for channel in channels.values():
            await channel.close(grace)

    async def call(self, route: Route, request: Message, metadata: Metadata) -> Message:
        """Call the route's RPC; raises TranscodeError with the backend's status."""
        try:
            return await self._callable(route)(request, metadata=metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, route.service) from exc

    def _callable(self, route: Route) -> UnaryCall:
        call = self._calls.get(route.grpc_path)
        if call is None:
            channel = self._channels.get(self.targets.get(route.service, ""))
            if channel is None:
                raise ConfigurationError(f"api: no open channel for {route.service}")
            response_class = message_factory.GetMessageClass(route.output)
            call = channel.unary_unary(
                route.grpc_path,
                request_serializer=_serialize,
                response_deserializer=response_class.FromString,
            )
            self._calls[route.grpc_path] = call
        return call


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
