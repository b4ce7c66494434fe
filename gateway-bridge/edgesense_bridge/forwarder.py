"""Events to the delivery service: one long-lived, pipelined `Delivery.Publish` stream.

Many events travel in one message (gRPC handles ~40x more events per second
that way than one per message), and up to `depth` batches are in flight at
once, so a durable write at delivery overlaps the next batches' travel. A
batch leaves at once when the stream is idle, so light traffic is not delayed;
under load, batches fill while earlier ones are being stored.

Delivery confirms batches in the order sent, each once it is durably stored;
only then does `on_confirmed` run (and the bridge PUBACKs those MQTT messages).
When the stream ends (delivery down or restarting: UNAVAILABLE; saturated:
RESOURCE_EXHAUSTED; anything else), the unconfirmed batches are sent again,
first and with the same event ids, on a new stream after a backoff. This works
with any server of `edgesense.v1.Delivery`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from edgesense.common.auth import bearer_metadata
from edgesense.common.backoff import backoff_delay
from edgesense.common.grpc_tls import open_channel
from edgesense.common.tls import GrpcTls
from edgesense.v1 import delivery_pb2, delivery_pb2_grpc
from edgesense_bridge import metrics
from edgesense_bridge.batching import Batch, Item, Outbox, UnknownBatch
from edgesense_bridge.errors import DeliveryStreamError

log = logging.getLogger(__name__)
PublishCall = grpc.aio.StreamStreamCall[delivery_pb2.PublishRequest, delivery_pb2.PublishResponse]

RETRY_BASE_SECONDS = 0.1
RETRY_MAX_SECONDS = 5.0
CHANNEL_OPTIONS = (
    # Notice a dead delivery service on an idle stream, and come back fast when it returns.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


def delivery_channel(addr: str, tls: GrpcTls | None = None) -> grpc.aio.Channel:
    return open_channel(addr, tls or GrpcTls(), CHANNEL_OPTIONS)


class Forwarder:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        token: str,
        outbox: Outbox,
        on_confirmed: Callable[[Batch], None],
        linger_seconds: float = 0.002,
    ) -> None:
        self._stub: delivery_pb2_grpc.DeliveryAsyncStub = delivery_pb2_grpc.DeliveryStub(channel)
        self._metadata = bearer_metadata(token)
        self.outbox = outbox
        self._on_confirmed = on_confirmed
        self._linger = linger_seconds
        self._changed = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._confirmed = 0

    def submit(self, item: Item) -> None:
        self.outbox.add(item)
        self._empty.clear()
        self._changed.set()

    def changed(self) -> None:
        """The outbox changed outside submit/confirm (items dropped): re-check."""
        if not self.outbox:
            self._empty.set()
        self._changed.set()

    async def drain(self, grace: float) -> bool:
        """Wait until every event held is confirmed; False if some are left."""
        try:
            await asyncio.wait_for(self._empty.wait(), grace)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Keep a Publish stream open and busy, forever (cancel to stop)."""
        failures = 0
        while True:
            confirmed_before = self._confirmed
            try:
                await self._stream()
            except Exception as exc:
                failure = exc if isinstance(exc, DeliveryStreamError) else None
                if failure is None:
                    log.exception("delivery: unexpected error on the Publish stream")
                    failure = DeliveryStreamError(grpc.StatusCode.INTERNAL, repr(exc))
                metrics.STREAM_RESTARTS.labels(failure.status.name).inc()
                if self._confirmed > confirmed_before:
                    failures = 0  # the stream worked for a while: start the backoff over
                failures += 1
                base = RETRY_BASE_SECONDS * (5 if failure.backpressure else 1)
                delay = backoff_delay(failures, base, RETRY_MAX_SECONDS)
                log.warning(
                    "delivery: Publish stream ended (%s); %d events held, retrying in %.2f s",
                    failure.message,
                    len(self.outbox),
                    delay,
                )
                await asyncio.sleep(delay)

    async def _stream(self) -> None:
        call: PublishCall = self._stub.Publish(metadata=self._metadata, wait_for_ready=True)
        failure: DeliveryStreamError | None = None
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._write(call))
                tasks.create_task(self._read(call))
        except* DeliveryStreamError as group:
            failure = group.exceptions[0]  # type: ignore[assignment]
        finally:
            call.cancel()
            self.outbox.requeue_sent()
            self._changed.set()
        if failure is not None:
            raise failure

    async def _write(self, call: PublishCall) -> None:
        while True:
            while not self.outbox.sendable():
                self._changed.clear()
                await self._changed.wait()
            if self._linger and self.outbox.should_linger():
                await asyncio.sleep(self._linger)
                if not self.outbox.sendable():
                    continue
            batch = self.outbox.next_batch()
            metrics.BATCH_EVENTS.observe(len(batch.items))
            try:
                await call.write(batch.request())
            except grpc.aio.AioRpcError as exc:
                raise DeliveryStreamError(exc.code(), exc.details() or "write failed") from exc
            except asyncio.InvalidStateError as exc:
                raise DeliveryStreamError(grpc.StatusCode.UNAVAILABLE, str(exc)) from exc

    async def _read(self, call: PublishCall) -> None:
        try:
            async for response in call:
                self._confirm(response.batch_id, response.accepted, response.duplicates)
        except grpc.aio.AioRpcError as exc:
            raise DeliveryStreamError(exc.code(), exc.details() or "stream failed") from exc
        raise DeliveryStreamError(grpc.StatusCode.OK, "delivery closed the stream")

    def _confirm(self, batch_id: int, accepted: int, duplicates: int) -> None:
        try:
            batch = self.outbox.confirm(batch_id)
        except UnknownBatch:
            raise DeliveryStreamError(
                grpc.StatusCode.INTERNAL, f"delivery confirmed unknown batch {batch_id}"
            ) from None
        if accepted + duplicates != len(batch.items):
            log.warning(
                "delivery: batch %d of %d events confirmed %d accepted + %d duplicates",
                batch_id,
                len(batch.items),
                accepted,
                duplicates,
            )
        now = time.monotonic()
        for item in batch.items:
            metrics.FORWARD_LATENCY.observe(now - item.received)
        metrics.FORWARDED.inc(len(batch.items))
        self._confirmed += 1
        self._on_confirmed(batch)
        if not self.outbox:
            self._empty.set()
        self._changed.set()
