"""The JSON body of a webhook request (contract section 5), rendered from an Event.

    {"event", "timestamp", "deviceId", "payload", "eventId", "gatewayId", "webhookId"}

This runs once per event on the hot path (`render`; each webhook's body is
the rendered head plus its `webhookId`), so the `google.protobuf.Struct`
payload is walked directly rather than through `json_format.MessageToDict`
(1.5-2x faster here, measured, and it does the number fix-up below in the same
pass). The payload is the event kind's message as `protos/edgesense/v1/body.proto`'s
options shape it (`message_renderer`), which are also what the schemas of
GET /api/event-types are generated from (edgesense.common.event_types); the
envelope is written out in `render`, for its order, and
tests/delivery/test_body_schema.py holds it to the generated schema. Rules:

- Struct stores every number as a double; integral values within +-2**53 are
  rendered as JSON integers (`5`, not `5.0`), others as floats. NaN and
  infinities have no JSON form and become `null`.
- Object keys are sorted: a Struct is a map without order, and the same event
  must render to the same bytes on every retry.
- A test send's event (`Event.test`) has `"test": true` after `gatewayId`, and its
  requests the header `X-EdgeSense-Test: 1` (TEST_HEADER); other bodies
  have no `test` member.
- An operational event (`webhook.disabled`, `webhook.enabled`) is about a
  webhook, not a device: its body has no `deviceId` and no `gatewayId`.
- A device status's payload is `status` ("online", "offline") and the
  members of its details beside it (a `status` among them is dropped).
- `timestamp` is RFC 3339 in UTC with `Z`: seconds precision, or milliseconds
  when the event time has a sub-second part of at least one millisecond.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from edgesense.common.event_body import enum_names, members, message_of
from edgesense.common.events import KIND_TO_EVENT, OPERATIONAL_EVENT_NAMES
from edgesense.common.signing import unsigned_headers
from edgesense.v1 import events_pb2

TEST_HEADER = "X-EdgeSense-Test"
_MAX_EXACT = 2**53
_EPOCH = datetime(1970, 1, 1)  # naive UTC: isoformat() then has no offset to strip


def event_name(event: events_pb2.Event) -> str:
    """The webhook event name of `event` (`device.data`, ...); ValueError without a kind."""
    kind = event.WhichOneof("kind")
    if kind is None:
        raise ValueError(f"event {event.event_id!r} has no kind (readings, alert, status, ...)")
    return KIND_TO_EVENT[kind]


@dataclass(frozen=True, slots=True)
class RenderedEvent:
    """An event rendered once for all its webhooks: the body up to `webhookId`.

    Every member but the last is the same for each webhook, so an event fanned
    out to many webhooks is parsed and rendered once (`render`), and each body
    is that head plus its own `webhookId`.
    """

    name: str  # the webhook event name, `device.data`, ...
    head: bytes  # the body without `,"webhookId":...}`
    test: bool = False  # a test send's sample event

    def body(self, webhook_id: str) -> bytes:
        """The exact bytes POSTed (and signed) to webhook `webhook_id`."""
        return b'%s,"webhookId":%s}' % (self.head, _json(webhook_id))


def render(event: events_pb2.Event) -> RenderedEvent:
    name = event_name(event)
    body: dict[str, Any] = {
        "event": name,
        "timestamp": rfc3339(event.timestamp if event.HasField("timestamp") else event.received_at),
        "deviceId": event.device_id,
        "payload": event_payload(event),
        "eventId": event.event_id,
        "gatewayId": event.gateway_id,
    }
    if name in OPERATIONAL_EVENT_NAMES:
        del body["deviceId"], body["gatewayId"]
    if event.test:
        body["test"] = True
        return RenderedEvent(name, _json(body)[:-1], True)
    return RenderedEvent(name, _json(body)[:-1])


def unsigned_request_headers(rendered: RenderedEvent, delivery_id: str) -> dict[str, str]:
    """The headers the senders put on every attempt of `delivery_id` that are
    neither signatures, nor its time, nor the webhook's custom headers (see
    signing.unsigned_headers), with TEST_HEADER on a test send's, as the
    dispatcher adds it."""
    headers = unsigned_headers(delivery_id, rendered.name)
    if rendered.test:
        headers[TEST_HEADER] = "1"
    return headers


def webhook_body(event: events_pb2.Event, webhook_id: str) -> bytes:
    """The exact bytes POSTed (and signed) for `event` to webhook `webhook_id`."""
    return render(event).body(webhook_id)


# One encoder for every body: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _json(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()


def event_payload(event: events_pb2.Event) -> dict[str, Any]:
    """The `payload` object: the kind's message as body.proto's options shape it."""
    kind = event.WhichOneof("kind")
    if kind is None:
        raise ValueError(f"event {event.event_id!r} has no kind (readings, alert, status, ...)")
    return _KIND_RENDERERS[kind](getattr(event, kind))


Render = Callable[[Any], Any]


@cache
def message_renderer(message: Descriptor) -> Callable[[Message], dict[str, Any]]:
    """How a message of type `message` becomes a JSON object of the body, made
    once per type: its members (event_body.members) in declaration order, each
    as proto3 JSON has it (a Timestamp by `rfc3339`, a Struct by
    `struct_to_dict`), an inline Struct's members after them (never replacing
    one). A message whose one member is an inline Struct is that Struct, so a
    reading's payload costs what `struct_to_dict` does."""
    parts = members(message)
    if len(parts) == 1 and parts[0].inline:
        only = parts[0].field.name
        return lambda value: struct_to_dict(getattr(value, only))
    named = [
        (p.field.name, p.name, p.always, p.unless_default, _renderer(p.field))
        for p in parts
        if not p.inline
    ]
    inline = [p.field.name for p in parts if p.inline]

    def render_message(value: Message) -> dict[str, Any]:
        rendered: dict[str, Any] = {}
        for field, name, always, unless_default, render_value in named:
            if always or (bool(getattr(value, field)) if unless_default else value.HasField(field)):
                rendered[name] = render_value(getattr(value, field))
        for field in inline:
            for key, item in struct_to_dict(getattr(value, field)).items():
                rendered.setdefault(key, item)
        return rendered

    return render_message


def _renderer(field: FieldDescriptor) -> Render:
    """How one value of `field` is rendered; a repeated field or map as a list or object."""
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        key, value = message.fields_by_name["key"], _value_renderer(message.fields_by_name["value"])
        to_key: Render = _json_map_key if key.type == FieldDescriptor.TYPE_BOOL else str
        return lambda items: {to_key(k): value(items[k]) for k in sorted(items)}
    one = _value_renderer(field)
    if field.is_repeated:
        return lambda items: [one(item) for item in items]
    return one


def _json_map_key(key: bool) -> str:
    return "true" if key else "false"


def _value_renderer(field: FieldDescriptor) -> Render:
    if field.type == FieldDescriptor.TYPE_ENUM:
        names = enum_names(field.enum_type)
        # A number this build does not know renders as the zero value, which
        # proto3 requires every enum to have (DeviceStatus: "unknown").
        return lambda number: names.get(number, names[0])
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        message = message_of(field)
        well_known = _WELL_KNOWN.get(message.full_name)
        if well_known is not None:
            return well_known
        if message.full_name.startswith("google.protobuf."):
            raise ValueError(f"{field.full_name}: {message.full_name} has no body form")
        return message_renderer(message)
    if field.cpp_type in (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64):
        return str  # proto3 JSON: 64-bit integers are strings
    if field.cpp_type in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return _float
    if field.type == FieldDescriptor.TYPE_BYTES:
        return lambda data: base64.b64encode(data).decode()
    return _same  # string, bool, 32-bit integers


def _same(value: Any) -> Any:
    return value


def _float(number: float) -> float | str:
    """proto3 JSON: a number, or "NaN", "Infinity", "-Infinity"."""
    if math.isfinite(number):
        return number
    return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")


def rfc3339(ts: timestamp_pb2.Timestamp) -> str:
    """`2025-07-24T10:35:17Z`, or `2025-07-24T10:35:17.250Z` with a sub-second part."""
    millis = ts.nanos // 1_000_000
    moment = _EPOCH + timedelta(seconds=ts.seconds, milliseconds=millis)
    return moment.isoformat(timespec="milliseconds" if millis else "seconds") + "Z"


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    fields = struct.fields
    return {key: _value(fields[key]) for key in sorted(fields)}


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return _number(value.number_value)
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_value(item) for item in value.list_value.values]
    return None  # null_value, or no kind set


def _number(number: float) -> int | float | None:
    if number.is_integer():
        return int(number) if -_MAX_EXACT <= number <= _MAX_EXACT else number
    return number if math.isfinite(number) else None


_WELL_KNOWN: dict[str, Render] = {
    "google.protobuf.Timestamp": lambda ts: rfc3339(ts),
    "google.protobuf.Struct": lambda struct: struct_to_dict(struct),
    "google.protobuf.Value": lambda value: _value(value),
    "google.protobuf.ListValue": lambda items: [_value(item) for item in items.values],
}

# Event.kind's field -> how its message becomes the payload.
_KIND_RENDERERS: dict[str, Callable[[Message], dict[str, Any]]] = {
    field.name: message_renderer(message_of(field))
    for field in events_pb2.Event.DESCRIPTOR.oneofs_by_name["kind"].fields
}
