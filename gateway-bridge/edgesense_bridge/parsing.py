"""One MQTT message -> a typed `edgesense.v1.Event`, or why not (pure functions,
and a bounded memory of the topics read: `ParseRules.read_topic`).

`parse_message` answers one of three outcomes:
- `Accepted(event)`: forward it to delivery;
- `Rejected(reason, detail)`: malformed (bad topic or id, unknown kind, too
  large, empty, invalid UTF-8, JSON that is not an object, broken protobuf…):
  acknowledge it, count it by `reason`, log it;
- `Ignored(reason)`: not an event, nothing wrong: our own `config/set`
  publications, and retained messages the broker replays when we subscribe
  (a message published while we are subscribed arrives with retain=0, so a
  retained one is old state, such as a gateway's Last Will from long ago).

Event ids: a gateway may name its event with the MQTT 5 user property
`event-id`; the event id is then derived from it (and the project and
gateway), so that a gateway re-publishing the same event is deduplicated by
delivery. Otherwise the id is random ("evt_" + 20 characters).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from google.protobuf import timestamp_pb2

from edgesense.common.events import EVENT_ID_PROPERTY
from edgesense.common.ids import new_id
from edgesense.common.message_limits import MAX_EVENT_BYTES
from edgesense.v1 import events_pb2
from edgesense_bridge.payloads import PayloadError, decode_payload
from edgesense_bridge.topics import TopicAddress, TopicError, TopicLayout, is_valid_id

# Kind of topic -> the Event oneof field it fills.
KIND_FIELDS: Final = {
    "data": "readings",
    "alert": "alert",
    "status": "status",
    "config": "configuration",
}


class RawMessage(NamedTuple):
    """What the broker handed us, before any interpretation."""

    topic: bytes
    payload: bytes
    received_ns: int
    content_type: str | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    retain: bool = False


class Accepted(NamedTuple):
    event: events_pb2.Event
    size: int = 0  # event.ByteSize(), measured once


@dataclass(frozen=True)
class Rejected:
    reason: str
    detail: str
    topic: str = field(default="")


@dataclass(frozen=True)
class Ignored:
    reason: str


Outcome = Accepted | Rejected | Ignored


# Topics read (checked, split into an address) and remembered: a gateway
# publishes on the same few topics again and again. Past this many the
# memory is emptied, so a flood of distinct topics costs no more than
# reading each once; and only topics of at most REMEMBERED_TOPIC_BYTES (a
# valid one is under 600 bytes with a prefix of up to 200 characters: three
# ids of at most 128; a longer one is read each time), so the memory stays
# under about 30 MB whatever topics arrive (MQTT allows 65,535 bytes).
TOPICS_REMEMBERED: Final = 10_000
REMEMBERED_TOPIC_BYTES: Final = 1024


@dataclass(frozen=True)
class TopicReading:
    """What a topic says, before the message's other checks: `text` None if it
    is not UTF-8; else our own config push, or an address, or why it is none."""

    text: str | None
    config_set: bool = False
    address: TopicAddress | None = None
    error: TopicError | None = None


@dataclass(frozen=True)
class ParseRules:
    layout: TopicLayout
    max_payload_bytes: int = 256 * 1024
    # As protobuf an event may be larger than its JSON payload (a Struct
    # number is 9 bytes), and it must fit a Publish batch.
    max_event_bytes: int = MAX_EVENT_BYTES
    _topics: dict[bytes, TopicReading] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def read_topic(self, topic: bytes) -> TopicReading:
        """What `topic` says (remembered, see TOPICS_REMEMBERED)."""
        reading = self._topics.get(topic)
        if reading is None:
            reading = _read_topic(self.layout, topic)
            if len(topic) <= REMEMBERED_TOPIC_BYTES:
                if len(self._topics) >= TOPICS_REMEMBERED:
                    self._topics.clear()
                self._topics[topic] = reading
        return reading


def _read_topic(layout: TopicLayout, topic: bytes) -> TopicReading:
    try:
        text = topic.decode("utf-8")
    except UnicodeDecodeError:
        return TopicReading(None)
    if layout.is_config_set(text):
        return TopicReading(text, config_set=True)
    try:
        return TopicReading(text, address=layout.parse(text))
    except TopicError as exc:
        return TopicReading(text, error=exc)


def digest_event_id(*parts: bytes) -> str:
    """An event id derived from `parts` (joined by NUL): the same parts, the same id."""
    digest = hashlib.sha256(b"\0".join(parts)).digest()[:15]
    return "evt_" + base64.b32encode(digest).decode().lower()


def gateway_event_id(address: TopicAddress, name: str) -> str:
    """The event id for a gateway-chosen name, scoped to its project and gateway."""
    return digest_event_id(address.project_id.encode(), address.gateway_id.encode(), name.encode())


def choose_event_id(address: TopicAddress, user_properties: tuple[tuple[str, str], ...]) -> str:
    for key, value in user_properties:
        if key == EVENT_ID_PROPERTY and is_valid_id(value):
            return gateway_event_id(address, value)
    return new_id("evt")


def parse_message(raw: RawMessage, rules: ParseRules, event_id: str | None = None) -> Outcome:
    """Interpret one message; `event_id` overrides the id it would get."""
    reading = rules.read_topic(raw.topic)
    topic = reading.text
    if topic is None:
        return Rejected("bad_topic", "topic is not UTF-8", repr(raw.topic[:200]))
    if reading.config_set:
        return Ignored("own_config_push")
    if raw.retain:
        return Ignored("retained")
    if len(raw.payload) > rules.max_payload_bytes:
        detail = f"payload of {len(raw.payload)} bytes exceeds {rules.max_payload_bytes}"
        return Rejected("too_large", detail, topic)
    address = reading.address
    if address is None:
        error = reading.error
        assert error is not None
        return Rejected(error.reason, error.detail, topic)
    if not raw.payload:
        return Rejected("empty", "payload is empty", topic)
    try:
        payload = decode_payload(address.kind, raw.payload, raw.content_type)
    except PayloadError as exc:
        return Rejected(exc.reason, exc.detail, topic)
    received_at = timestamp_pb2.Timestamp()
    received_at.FromNanoseconds(raw.received_ns)
    event = events_pb2.Event(
        event_id=event_id or choose_event_id(address, raw.user_properties),
        project_id=address.project_id,
        gateway_id=address.gateway_id,
        device_id=address.device_id,
        timestamp=payload.timestamp or received_at,
        received_at=received_at,
    )
    getattr(event, KIND_FIELDS[address.kind]).CopyFrom(payload.message)
    size = event.ByteSize()
    if size > rules.max_event_bytes:
        detail = f"event of {size} bytes as protobuf exceeds {rules.max_event_bytes}"
        return Rejected("too_large", detail, topic)
    return Accepted(event, size)
