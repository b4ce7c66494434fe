"""Publishes the registry's operational events to delivery.

A disable or enable writes its event to `operational_events` in its own
transaction (store.set_status); this task sends the rows not yet confirmed,
oldest first, over delivery's Publish stream with the internal token, and
deletes them once delivery has confirmed them stored. Nothing committed is
lost: a row stays until delivery has it, across crashes and restarts (a
registry starting with rows left sends them), and while delivery is down the
task retries with backoff.

A row can be published more than once: when the registry dies between
delivery's confirmation and the delete, or when several registry replicas
read the same rows at the same time (nothing stops them: each publishes and
deletes). That is harmless: the event id is made once, when the row is
written, and delivery stores an event id once (a second Publish of it counts
as a duplicate and creates no deliveries), so each event is sent to each
subscriber once.

A row no delivery could store must not hold back every later one. When
delivery refuses a batch (INVALID_ARGUMENT), its rows are published one at a
time; a row refused on its own is dropped (logged, throttled, by its row
and kind, never its body; counted in
`edgesense_operational_events_dropped_total`) only if this registry's own
check (common/event_check.py, the one delivery applies) refuses it too, or
its bytes do not decode. Otherwise the refusal is a delivery older than this
registry that does not know the event yet (a rolling upgrade): the row
stays, and is published again with backoff until delivery takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from google.protobuf.message import DecodeError

from edgesense.common.auth import bearer_metadata
from edgesense.common.backoff import backoff_delay
from edgesense.common.errors import InvalidArgument, Unavailable
from edgesense.common.event_check import check_event
from edgesense.common.grpc_tls import open_channel
from edgesense.common.log_throttle import ThrottledLog
from edgesense.common.tls import GrpcTls
from edgesense.registry import metrics
from edgesense.registry.store import Unpublished, WebhookStore
from edgesense.v1 import delivery_pb2, delivery_pb2_grpc, events_pb2

log = logging.getLogger(__name__)
_dropped = ThrottledLog(log)

# Rows written by another replica (whose writes do not wake this one) are
# found this often; a write in this process wakes the forwarder at once.
POLL_SECONDS = 2.0
BATCH = 100
PUBLISH_TIMEOUT_SECONDS = 30.0
RETRY_MIN_SECONDS = 0.2
RETRY_MAX_SECONDS = 10.0


class OperationalForwarder:
    def __init__(
        self, store: WebhookStore, delivery_addr: str, token: str, tls: GrpcTls | None = None
    ) -> None:
        self.store = store
        # Read at every connect, so it can be set after start (tests start
        # delivery after the registry, on a port known only then).
        self.delivery_addr = delivery_addr
        self._tls = tls or GrpcTls()
        self._metadata = bearer_metadata(token)
        self.published_total = 0  # events delivery confirmed to this process

    async def run(self) -> None:
        """Publish unsent operational events until cancelled."""
        channel: grpc.aio.Channel | None = None
        address = ""
        failures = 0
        try:
            while True:
                try:
                    rows = await self._unpublished()
                    if channel is None or address != self.delivery_addr:
                        if channel is not None:
                            await channel.close()
                        address = self.delivery_addr
                        channel = open_channel(address, self._tls)
                    rows = await self._dropping_broken(rows)
                    if not rows:
                        continue
                    try:
                        await self._publish(channel, rows)
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                            raise
                        rows = await self._publish_singly(channel, rows)
                    await self._confirmed(rows)
                    failures = 0
                except (grpc.aio.AioRpcError, Unavailable) as exc:
                    failures += 1
                    delay = backoff_delay(failures, RETRY_MIN_SECONDS, RETRY_MAX_SECONDS)
                    why = exc.message if isinstance(exc, Unavailable) else exc.code().name
                    log.warning(
                        "cannot publish operational events to delivery %s (%s); retrying in %.1f s",
                        address or self.delivery_addr,
                        why,
                        delay,
                    )
                    await asyncio.sleep(delay)
                except Exception:  # a bug: keep publishing, never stop silently
                    failures += 1
                    delay = backoff_delay(failures, RETRY_MIN_SECONDS, RETRY_MAX_SECONDS)
                    log.exception("publishing operational events failed; retrying in %.1f s", delay)
                    await asyncio.sleep(delay)
        finally:
            if channel is not None:
                await channel.close()

    async def _publish_singly(
        self, channel: grpc.aio.Channel, rows: list[Unpublished]
    ) -> list[Unpublished]:
        """Publish each row alone; returns those delivery confirmed. A row it
        refuses is one our own check passes (broken ones were dropped before):
        delivery is older than this registry, so this raises, for the rows
        left to be published again after a backoff."""
        confirmed: list[Unpublished] = []
        for row in rows:
            try:
                await self._publish(channel, [row])
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.INVALID_ARGUMENT or not confirmed:
                    raise
                await self._confirmed(confirmed)
                raise
            confirmed.append(row)
        return confirmed

    async def _confirmed(self, rows: list[Unpublished]) -> None:
        """Delivery has stored these rows' events: forget the rows, count them."""
        await self.store.published([r.seq for r in rows])
        self.published_total += len(rows)
        metrics.OPERATIONAL_PUBLISHED.inc(len(rows))

    async def _dropping_broken(self, rows: list[Unpublished]) -> list[Unpublished]:
        """`rows` but those no delivery could store (our own check refuses
        them, or their bytes do not decode): those are dropped, logged and
        counted."""
        kept: list[Unpublished] = []
        broken: list[tuple[Unpublished, str]] = []
        for row in rows:
            try:
                event = events_pb2.Event.FromString(row.event)
                check_event(event, 0)
            except DecodeError as exc:
                broken.append((row, f"it does not decode ({exc})"))
            except InvalidArgument as exc:
                kind = event.WhichOneof("kind")
                broken.append((row, f"{kind or 'no kind'}: {exc.message}"))
            else:
                kept.append(row)
        for row, why in broken:
            _dropped.error(
                "dropped",
                "operational event row %d dropped: no delivery can store it: %s",
                row.seq,
                why,
            )
            metrics.OPERATIONAL_DROPPED.inc()
        if broken:
            await self.store.published([row.seq for row, _ in broken])
        return kept

    async def _unpublished(self) -> list[Unpublished]:
        """The next rows to publish; waits until there are some."""
        while True:
            # Taken before the read: a write after the read still wakes this wait.
            written = self.store.operational_written.next()
            rows = await self.store.unpublished(BATCH)
            if rows:
                return rows
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(written.wait(), POLL_SECONDS)

    async def _publish(self, channel: grpc.aio.Channel, rows: list[Unpublished]) -> None:
        """One Publish batch of `rows`; returns once delivery confirmed it stored."""
        stub = delivery_pb2_grpc.DeliveryStub(channel)
        request = delivery_pb2.PublishRequest(
            batch_id=rows[0].seq, events=[events_pb2.Event.FromString(r.event) for r in rows]
        )
        call = stub.Publish(
            iter([request]), metadata=self._metadata, timeout=PUBLISH_TIMEOUT_SECONDS
        )
        answers = [answer async for answer in call]
        if not any(a.batch_id == request.batch_id for a in answers):
            raise Unavailable("delivery ended the Publish stream without confirming the batch")
        log.info("published %d operational events", len(rows))
