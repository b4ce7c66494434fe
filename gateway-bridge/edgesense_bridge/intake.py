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
data): ignored, like ours. An offline STATE on our own host's topic (a late
Will of an older connection, another process with our host id) is answered
with our online STATE again (`own_state`), as Sparkplug 3.0 requires.

Reconnects: when the broker resumes our session it resends every QoS 1
message we had not acknowledged, under the same packet id with the DUP flag.
Queued QoS 1 items of the old connection are dropped (their copies are
coming); QoS 0 ones stay and are stored (nothing resends them). A resent copy
of one of our topics' messages still on its way, or confirmed but not
acknowledged, gets the same event id as the original, so that delivery
deduplicates it. A resent Sparkplug message is not handed to the host again:
the host's sessions have moved on since (a rebirth may have given its aliases
other names, a later NBIRTH made its NDEATH look stale), so the events made
the first time are submitted again instead (or, all stored already, the copy
is acknowledged at once); a resend the bridge never saw goes to the host.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from edgesense.common.log_throttle import LogThrottle, ThrottledLog
from edgesense.v1 import events_pb2
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
from edgesense_bridge.sparkplug.control import state_says_offline
from edgesense_bridge.sparkplug.host import Rebirth, SparkplugHost, SparkplugOutcome
from edgesense_bridge.sparkplug.topics import NAMESPACE

log = logging.getLogger(__name__)

# A rejection is logged once per reason and topic in this interval, and the
# log takes at most LOG_BUDGET lines a minute of rejections (and as many of
# internal errors): a broken gateway, or a thousand, cannot flood it.
LOG_INTERVAL_SECONDS: Final = 600.0
LOG_BUDGET: Final = 20
SPARKPLUG_TOPICS: Final = f"{NAMESPACE}/".encode()


@dataclass
class _Held:
    """A QoS 1 Sparkplug message's events on their way, to submit again
    should the broker resend the message (see the module docstring)."""

    fingerprint: int
    events: tuple[events_pb2.Event, ...]
    sizes: tuple[int, ...]  # each event's serialized bytes
    left: int  # not yet confirmed; 0: all stored, the PUBACK did not go out


class Intake:
    def __init__(
        self,
        rules: ParseRules,
        forwarder: Forwarder,
        acker: Acknowledger,
        max_in_flight: int,
        sparkplug: SparkplugHost | None = None,
        request_rebirth: Callable[[Rebirth], None] | None = None,
        own_state: tuple[str, Callable[[], None]] | None = None,
    ) -> None:
        """`own_state`: our STATE topic, and what publishes our online STATE again."""
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
        # Compared with the topic as received (bytes, whole: a host id may be long).
        self._own_state = None if own_state is None else (own_state[0].encode(), own_state[1])
        # QoS 1 Sparkplug messages whose events are on their way: (epoch, mid)
        # -> what they made (mids repeat across connections). Bounded by the
        # in-flight limit: a message stays only until its PUBACK goes out, or
        # until the broker's resend of it on the next connection.
        self._held: dict[tuple[int, int], _Held] = {}
        # Expected Sparkplug resends: mid -> _Held, kept across reconnects of a
        # resumed session until the resend comes (bounded by the packet ids).
        self._sparkplug_resends: dict[int, _Held] = {}
        # Sparkplug QoS 1 messages acked on this connection, newest last, as
        # resends to expect (all stored: left 0), at most max_in_flight. A
        # PUBACK still in the socket when the connection dies is lost with it,
        # and the broker resends the message: acked again, not decoded again.
        self._acked: OrderedDict[int, _Held] = OrderedDict()
        # Read when scraped, not set per message (the gauge of the newest intake).
        metrics.IN_FLIGHT.set_function(self._outbox.__len__)

    def on_session(self, epoch: int, session_present: bool) -> None:
        """A new connection; with a resumed session, the QoS 1 messages we did not
        ack are coming again (QoS 0 ones never do: theirs stay queued)."""
        # Held from older connections, oldest first: the PUBACKs of these can no
        # longer go out (acks of an older connection fail), their resends may come.
        older = sorted((key, held) for key, held in self._held.items() if key[0] < epoch)
        self._held = {key: held for key, held in self._held.items() if key[0] >= epoch}
        acked, self._acked = self._acked, OrderedDict()
        if not session_present:  # nothing comes again
            self._resends, self._sparkplug_resends = {}, {}
        else:
            # What was expected and has not come yet still may (a second
            # reconnect before the resends arrived): kept, newer entries win.
            self._sparkplug_resends.update(acked)
            self._sparkplug_resends.update({mid: held for (_, mid), held in older})
            for item in self._outbox:
                receipt = item.receipt
                if receipt.epoch < epoch and receipt.qos > 0:
                    self._resends[receipt.mid] = (item.fingerprint, item.event.event_id)
            self._resends.update(self._unacked)
            dropped = self._outbox.drop_pending(
                lambda item: item.receipt.epoch < epoch and item.receipt.qos > 0
            )
            if dropped:
                log.info(
                    "mqtt: %d queued messages will come again on the resumed session", len(dropped)
                )
                self._forwarder.changed()
        self._unacked = {}
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
        fingerprint = hash((raw.topic, raw.payload))
        if message.dup and receipt.mid in self._sparkplug_resends:
            held = self._sparkplug_resends.pop(receipt.mid)
            if held.fingerprint == fingerprint:
                self._resubmit(held, receipt)
                return
        own = self._own_state
        if own and raw.topic == own[0] and not raw.retain and state_says_offline(raw.payload):
            own[1]()
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
            self._remember_ack(receipt, fingerprint)
        elif not outcome.events:
            self._settle(Ignored(outcome.ignored or "no_events"), receipt)
            self._remember_ack(receipt, fingerprint)
        else:
            self._submit(_Held(fingerprint, outcome.events, outcome.sizes, 0), receipt)

    def _submit(self, held: _Held, receipt: Receipt) -> None:
        """Forward a Sparkplug message's events; a QoS 1 message is held until
        its PUBACK goes out (acked once the last of its events is confirmed)."""
        events = held.events
        if receipt.qos > 0:
            self._held[(receipt.epoch, receipt.mid)] = _Held(
                held.fingerprint, events, held.sizes, len(events)
            )
        received, fingerprint = time.monotonic(), held.fingerprint
        for event, size in zip(events, held.sizes, strict=True):
            self._forwarder.submit(Item(event, receipt, received, fingerprint, size))
        self._update_in_flight()

    def _resubmit(self, held: _Held, receipt: Receipt) -> None:
        """The broker resent a Sparkplug message we handled already."""
        if held.left == 0:  # all stored (or nothing to store): only the PUBACK was lost
            self._acker.ack(receipt)
            self._remember_ack(receipt, held.fingerprint)
        else:  # delivery keeps one copy of each by its id
            self._submit(held, receipt)

    def _remember_ack(self, receipt: Receipt, fingerprint: int) -> None:
        """A Sparkplug QoS 1 message acked on this connection (see `_acked`)."""
        if receipt.qos > 0:
            acked = self._acked
            acked[receipt.mid] = _Held(fingerprint, (), (), 0)
            acked.move_to_end(receipt.mid)
            if len(acked) > self._max_in_flight:
                acked.popitem(last=False)

    def _sparkplug_outcome(
        self, host: SparkplugHost, raw: RawMessage, topic: str
    ) -> SparkplugOutcome:
        # Not the size: the host checks it, since a birth too large to read
        # must still void the node's session (its aliases are no longer known).
        if raw.retain:
            return SparkplugOutcome(ignored="retained")
        try:
            topic_text = raw.topic.decode("utf-8")
        except UnicodeDecodeError:
            return SparkplugOutcome(rejected=("sparkplug_bad_topic", "topic is not UTF-8"))
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
            held = self._held.get((receipt.epoch, receipt.mid)) if receipt.qos > 0 else None
            if held is not None:
                held.left -= 1
                if held.left > 0:
                    continue
                if self._acker.ack(receipt):
                    del self._held[(receipt.epoch, receipt.mid)]
                    self._remember_ack(receipt, held.fingerprint)
                # else: kept, all stored, for the resend on the next connection
                continue
            if not self._acker.ack(receipt) and receipt.qos > 0:
                self._unacked[receipt.mid] = (item.fingerprint, item.event.event_id)
        self._update_in_flight()

    def _update_in_flight(self) -> None:
        held = len(self._outbox)
        if held >= self._max_in_flight:
            self._acker.pause_reading()
        elif held <= self._resume_at:
            self._acker.resume_reading()
