"""The forwarder's window: events queued, sent in batches, and held until confirmed.

    submit ─> pending ──next_batch()──> sent (≤ depth batches) ──confirm(id)──> done
                  ^                        │ stream failed: requeue_sent()
                  └──── resend (first) <───┘

Pure bookkeeping, no I/O: `forwarder` drives it over the gRPC stream. A batch
keeps its id and its events when resent, so the delivery service sees the same
event ids again and deduplicates them. A batch is closed at `batch_size`
events or before its PublishRequest would pass `max_bytes` (delivery's
receive limit, `edgesense.common.message_limits`): 200 events with 256 KiB payloads
would otherwise be one 51 MiB message that delivery refuses every time.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from edgesense.common.message_limits import PUBLISH_BATCH_MAX_BYTES, PUBLISH_EVENT_OVERHEAD
from edgesense.v1 import delivery_pb2, events_pb2
from edgesense_bridge.inbound import Receipt


class Item(NamedTuple):
    """One event on its way, with what acknowledges its MQTT message."""

    event: events_pb2.Event
    receipt: Receipt
    received: float  # time.monotonic() at receipt, for the latency metric
    fingerprint: int = 0  # of topic and payload, to recognise the broker resending it
    size: int = 0  # the event's serialized bytes


@dataclass
class Batch:
    batch_id: int
    items: list[Item] = field(default_factory=list)

    def request(self) -> delivery_pb2.PublishRequest:
        return delivery_pb2.PublishRequest(
            batch_id=self.batch_id, events=[item.event for item in self.items]
        )


class UnknownBatch(KeyError):
    """Delivery confirmed a batch id that is not in flight."""


class Outbox:
    def __init__(
        self, batch_size: int, depth: int, max_bytes: int = PUBLISH_BATCH_MAX_BYTES
    ) -> None:
        self.batch_size = batch_size
        self.depth = depth
        self.max_bytes = max_bytes
        self._pending: deque[Item] = deque()
        self._resend: deque[Batch] = deque()
        self._sent: OrderedDict[int, Batch] = OrderedDict()
        self._next_id = 1
        self._held = 0

    def __len__(self) -> int:
        """Events held: queued, waiting to be resent, or sent and unconfirmed."""
        return self._held

    def __iter__(self) -> Iterator[Item]:
        yield from self._pending
        for batch in (*self._resend, *self._sent.values()):
            yield from batch.items

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def in_flight_batches(self) -> int:
        return len(self._sent)

    def add(self, item: Item) -> None:
        self._pending.append(item)
        self._held += 1

    def sendable(self) -> bool:
        return len(self._sent) < self.depth and bool(self._resend or self._pending)

    def should_linger(self) -> bool:
        """A small new batch may wait to fill while others are in flight."""
        return bool(self._sent) and not self._resend and len(self._pending) < self.batch_size

    def next_batch(self) -> Batch:
        """The next batch to send (a failed stream's batches first); marks it sent."""
        if self._resend:
            batch = self._resend.popleft()
        else:
            batch = Batch(self._next_id, self._take())
            self._next_id += 1
        self._sent[batch.batch_id] = batch
        return batch

    def _take(self) -> list[Item]:
        """The next pending items that fit one batch (always at least one)."""
        pending = self._pending
        items = [pending.popleft()]
        used = items[0].size + PUBLISH_EVENT_OVERHEAD
        while pending and len(items) < self.batch_size:
            used += pending[0].size + PUBLISH_EVENT_OVERHEAD
            if used > self.max_bytes:
                break
            items.append(pending.popleft())
        return items

    def confirm(self, batch_id: int) -> Batch:
        """The batch delivery confirmed, no longer held; raises UnknownBatch."""
        try:
            batch = self._sent.pop(batch_id)
        except KeyError:
            raise UnknownBatch(batch_id) from None
        self._held -= len(batch.items)
        return batch

    def requeue_sent(self) -> int:
        """The stream failed: its unconfirmed batches go first, in order. Returns how many."""
        count = len(self._sent)
        self._resend.extendleft(reversed(self._sent.values()))
        self._sent.clear()
        return count

    def drop_pending(self, stale: Callable[[Item], bool]) -> list[Item]:
        """Remove queued (never sent) items for which `stale` is true."""
        kept: deque[Item] = deque()
        dropped: list[Item] = []
        for item in self._pending:
            (dropped if stale(item) else kept).append(item)
        self._pending = kept
        self._held -= len(dropped)
        return dropped
