"""The bridge's core loop: each MQTT message is forwarded, or counted and acknowledged.

- A good message becomes an `Item` for the forwarder and is acknowledged
  (PUBACK) only when delivery confirms its batch (`on_confirmed`).
- A malformed one is counted by reason, logged (once per reason and topic in
  `LOG_INTERVAL_SECONDS`, at most `LOG_BUDGET` lines a minute: see
  `edgesense.common.log_throttle`) and acknowledged at once, so that the broker does
  not resend it forever. A bug in parsing is a rejection too (`internal_error`),
  its traceback logged once per exception type and interval.
- The bridge holds at most `max_in_flight` unacknowledged messages: beyond
  that it stops reading from the broker until confirmations bring it down.

Sparkplug B (a topic under `spBv1.0/`, when the bridge takes Sparkplug): the
message goes to `SparkplugHost.handle` instead of `parse_message`. One message
may make several events (an NBIRTH: the node online and the values it was born
with; an NDEATH: the node and each device offline); it is acknowledged once
all of them are confirmed. A rebirth request the host asks for is handed to
`request_rebirth` (the server publishes it). Retained Sparkplug messages are
old state replayed on subscribing (Sparkplug forbids retaining births and
data): ignored, like ours.

Reconnects: when the broker resumes our session it resends every message we
had not acknowledged, under the same packet id with the DUP flag. Queued
items of the old connection are dropped (their copies are coming), and a
resent copy of a message still on its way, or confirmed but not acknowledged,
gets the same event id as the original, so that delivery deduplicates it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from edgesense.common.log_throttle import LogThrottle, ThrottledLog
from edgesense_bridge import metrics
from edgesense_bridge.batching import Batch, Item
from edgesense_bridge.forwarder import Forwarder
from edgesense_bridge.inbound import Acknowledger, InboundMessage, Receipt
from edgesense_bridge.parsing import (
    Accepted,
    Ignored,
    Outcome,
    ParseRules,
    RawMessage,
    Rejected,
    parse_message,
)
from edgesense_bridge.sparkplug.host import Rebirth, SparkplugHost, SparkplugOutcome
from edgesense_bridge.sparkplug.topics import NAMESPACE

log = logging.getLogger(__name__)

# A rejection is logged once per reason and topic in this interval, and the
# log takes at most LOG_BUDGET lines a minute of rejections (and as many of
# internal errors): a broken gateway, or a thousand, cannot flood it.
LOG_INTERVAL_SECONDS: Final = 600.0
LOG_BUDGET: Final = 20
SPARKPLUG_TOPICS: Final = f"{NAMESPACE}/".encode()


class Intake:
    def __init__(
        self,
        rules: ParseRules,
        forwarder: Forwarder,
        acker: Acknowledger,
        max_in_flight: int,
        sparkplug: SparkplugHost | None = None,
        request_rebirth: Callable[[Rebirth], None] | None = None,
    ) -> None:
        self._rules = rules
        self._forwarder = forwarder
        self._outbox = forwarder.outbox
        self._acker = acker
        self._max_in_flight = max_in_flight
        self._resume_at = max_in_flight * 3 // 4
        self._rejections = ThrottledLog(log, LogThrottle(LOG_INTERVAL_SECONDS, LOG_BUDGET))
        self._internal_errors = ThrottledLog(log, LogThrottle(budget=LOG_BUDGET))
        # Confirmed, but the connection was gone before the PUBACK: mid -> (fingerprint, id).
        self._unacked: dict[int, tuple[int, str]] = {}
        # Expected resends on the current connection: mid -> (fingerprint, event id).
        self._resends: dict[int, tuple[int, str]] = {}
        self._sparkplug = sparkplug
        self._request_rebirth = request_rebirth
        # QoS 1 messages that made several events: (epoch, mid) -> events not yet
        # confirmed (mids repeat across connections). Bounded by the in-flight limit.
        self._parts: dict[tuple[int, int], int] = {}

    def on_session(self, epoch: int, session_present: bool) -> None:
        """A new connection; with a resumed session, what we did not ack is coming again."""
        self._resends = {}
        if session_present:
            for item in self._outbox:
                if item.receipt.epoch < epoch:
                    self._resends[item.receipt.mid] = (item.fingerprint, item.event.event_id)
            self._resends.update(self._unacked)
            dropped = self._outbox.drop_pending(lambda item: item.receipt.epoch < epoch)
            if dropped:
                log.info(
                    "mqtt: %d queued messages will come again on the resumed session", len(dropped)
                )
                self._forwarder.changed()
        self._unacked = {}
        # Acks of older connections fail anyway: their messages come again whole.
        self._parts = {}
        self._update_in_flight()

    def on_message(self, message: InboundMessage) -> None:
        metrics.RECEIVED.inc()
        raw = message.raw
        if self._sparkplug is not None and raw.topic.startswith(SPARKPLUG_TOPICS):
            self._on_sparkplug(self._sparkplug, message)
            return
        fingerprint = hash((raw.topic, raw.payload))
        event_id = None
        if message.dup and message.receipt.mid in self._resends:
            expected, original_id = self._resends.pop(message.receipt.mid)
            event_id = original_id if expected == fingerprint else None
        try:
            outcome: Outcome = parse_message(raw, self._rules, event_id)
        except Exception as exc:  # a parser bug must not turn one message into a crash loop
            self._internal_errors.exception(type(exc).__name__, "bridge: parsing a message failed")
            outcome = Rejected("internal_error", repr(exc), repr(raw.topic[:200]))
        if isinstance(outcome, Accepted):
            item = Item(outcome.event, message.receipt, time.monotonic(), fingerprint, outcome.size)
            self._forwarder.submit(item)
            self._update_in_flight()
            return
        self._settle(outcome, message.receipt)

    def _settle(self, outcome: Rejected | Ignored, receipt: Receipt) -> None:
        """Count a message that makes no event, and acknowledge it at once."""
        if isinstance(outcome, Rejected):
            metrics.REJECTED.labels(outcome.reason).inc()
            self._rejections.warning(
                (outcome.reason, outcome.topic),
                "rejected MQTT message on %s: %s (%s)",
                outcome.topic,
                outcome.reason,
                outcome.detail,
            )
        else:
            metrics.IGNORED.labels(outcome.reason).inc()
        self._acker.ack(receipt)

    def _on_sparkplug(self, host: SparkplugHost, message: InboundMessage) -> None:
        raw, receipt = message.raw, message.receipt
        topic = raw.topic.decode("utf-8", "replace")[:200]
        outcome = self._sparkplug_outcome(host, raw, topic)
        if outcome.rebirth is not None:
            metrics.SPARKPLUG_REBIRTH_REQUESTS.labels(outcome.rebirth.reason).inc()
            if self._request_rebirth is not None:
                self._request_rebirth(outcome.rebirth)
        if outcome.seq_gap:
            metrics.SPARKPLUG_SEQ_GAPS.inc()
        for reason, count in outcome.metrics_left_out.items():
            metrics.SPARKPLUG_METRICS_LEFT_OUT.labels(reason).inc(count)
        if outcome.rejected is not None:
            reason, detail = outcome.rejected
            self._settle(Rejected(reason, detail, topic), receipt)
        elif not outcome.events:
            self._settle(Ignored(outcome.ignored or "no_events"), receipt)
        else:
            if len(outcome.events) > 1 and receipt.qos > 0:
                self._parts[(receipt.epoch, receipt.mid)] = len(outcome.events)
            received, fingerprint = time.monotonic(), hash((raw.topic, raw.payload))
            for event in outcome.events:
                size = event.ByteSize()
                self._forwarder.submit(Item(event, receipt, received, fingerprint, size))
            self._update_in_flight()

    def _sparkplug_outcome(
        self, host: SparkplugHost, raw: RawMessage, topic: str
    ) -> SparkplugOutcome:
        if raw.retain:
            return SparkplugOutcome(ignored="retained")
        if len(raw.payload) > self._rules.max_payload_bytes:
            detail = f"payload of {len(raw.payload)} bytes exceeds {self._rules.max_payload_bytes}"
            return SparkplugOutcome(rejected=("too_large", detail))
        try:
            topic_text = raw.topic.decode("utf-8")
        except UnicodeDecodeError:
            return SparkplugOutcome(rejected=("bad_topic", "topic is not UTF-8"))
        try:
            return host.handle(topic_text, raw.payload, raw.received_ns, time.monotonic())
        except Exception as exc:  # a decoder bug must not turn one message into a crash loop
            self._internal_errors.exception(
                type(exc).__name__, "bridge: a Sparkplug message on %s failed", topic
            )
            return SparkplugOutcome(rejected=("internal_error", repr(exc)))

    def on_confirmed(self, batch: Batch) -> None:
        """Delivery stored these events: acknowledge their messages, one by one
        (a message of several events once the last of them is confirmed)."""
        for item in batch.items:
            receipt = item.receipt
            key = (receipt.epoch, receipt.mid)
            left = self._parts.get(key)
            if left is not None:
                if left > 1:
                    self._parts[key] = left - 1
                    continue
                del self._parts[key]
            if not self._acker.ack(receipt) and receipt.qos > 0:
                self._unacked[receipt.mid] = (item.fingerprint, item.event.event_id)
        self._update_in_flight()

    def _update_in_flight(self) -> None:
        held = len(self._outbox)
        metrics.IN_FLIGHT.set(held)
        if held >= self._max_in_flight:
            self._acker.pause_reading()
        elif held <= self._resume_at:
            self._acker.resume_reading()
