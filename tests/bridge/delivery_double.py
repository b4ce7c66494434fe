"""A real gRPC `edgesense.v1.Delivery` server for the bridge tests.

It records every event of every `Publish` batch, confirms batches in order,
checks the internal token, and can be paused (stops confirming), slowed,
made to end streams with a status, stopped and started again on its port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from edgesense.common.message_limits import DELIVERY_MAX_RECEIVE
from edgesense.v1 import delivery_pb2, delivery_pb2_grpc, events_pb2
from tests.support.waiting import eventually

Context = grpc.aio.ServicerContext[Any, Any]


class FakeDelivery(delivery_pb2_grpc.DeliveryServicer):
    def __init__(self, token: str) -> None:
        self.token = token
        self.stored: dict[str, events_pb2.Event] = {}  # by event id, first copy
        self.received: list[events_pb2.Event] = []  # every copy, in arrival order
        self.batches: list[int] = []  # batch ids, in arrival order
        self.requests_read = 0  # Publish requests read, confirmed or not (paused)
        self.duplicates = 0
        self.delay = 0.0
        self.fail_next: grpc.StatusCode | None = None  # end the next stream after a batch
        self.key: Callable[[events_pb2.Event], object] | None = None
        self.keys: set[object] = set()  # key(event) of every event received
        self._confirming = asyncio.Event()
        self._confirming.set()
        self.server: grpc.aio.Server | None = None
        self.port = 0

    def pause(self) -> None:
        self._confirming.clear()

    def resume(self) -> None:
        self._confirming.set()

    async def Publish(
        self, request_iterator: AsyncIterator[delivery_pb2.PublishRequest], context: Context
    ) -> AsyncIterator[delivery_pb2.PublishResponse]:
        if ("authorization", f"Bearer {self.token}") not in (context.invocation_metadata() or ()):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad internal token")
        async for request in request_iterator:
            self.requests_read += 1
            await self._confirming.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            accepted = 0
            for event in request.events:
                self.received.append(event)
                if self.key is not None:
                    self.keys.add(self.key(event))
                if event.event_id in self.stored:
                    self.duplicates += 1
                else:
                    self.stored[event.event_id] = event
                    accepted += 1
            self.batches.append(request.batch_id)
            if self.fail_next is not None:
                code, self.fail_next = self.fail_next, None
                await context.abort(code, "test double ends the stream")
            yield delivery_pb2.PublishResponse(
                batch_id=request.batch_id,
                accepted=accepted,
                duplicates=len(request.events) - accepted,
            )

    async def _not_here(self, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the test double")
        raise AssertionError("unreachable")

    ListDeliveries = _not_here
    Redeliver = _not_here
    SendTestEvent = _not_here
    RecoverDeliveries = _not_here
    GetWebhookStats = _not_here
    GetDelivery = _not_here
    GetProjectStats = _not_here
    ListAlerts = _not_here

    async def start(self) -> int:
        """Serve on 127.0.0.1 (the same port again after a stop)."""
        # delivery's own receive limit, so batches too large for it fail here too
        limit = ("grpc.max_receive_message_length", DELIVERY_MAX_RECEIVE)
        self.server = grpc.aio.server(options=[limit])
        delivery_pb2_grpc.add_DeliveryServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.server.start()
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
            self.server = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def events_where(self, predicate: Callable[[events_pb2.Event], bool]) -> list[events_pb2.Event]:
        return [event for event in self.stored.values() if predicate(event)]

    async def wait_for(
        self, predicate: Callable[[], bool], within: float = 10.0, what: str = "condition"
    ) -> None:
        await eventually(predicate, within, what)
