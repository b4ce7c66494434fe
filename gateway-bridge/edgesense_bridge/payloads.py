"""MQTT payloads -> the kind's protobuf message (pure functions).

A payload is one of:
- JSON: an object (`data`, `alert`, `config`; for `status` an object with a
  `"status"` field), or for `status` the bare strings `online` / `offline`;
- the envelope `{"timestamp": RFC 3339, "payload": …}` around any of those,
  whose timestamp becomes the event's (it must lie within the years 1 to
  9999 once converted to UTC, the range of protobuf's Timestamp);
- protobuf (MQTT 5 content type `application/x-protobuf`): the kind's message
  (Readings, Alert, DeviceStatus, Configuration) serialized.

Anything else raises `PayloadError` with the reason the metrics count it by.
JSON is limited to `MAX_DEPTH` levels of nesting: a `Struct` nested much deeper
would exceed protobuf's decoding limit (100 messages) at the delivery service
and poison the whole batch it travels in.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any, Final, NamedTuple

from google.protobuf import message as protobuf_message
from google.protobuf import struct_pb2, timestamp_pb2

from edgesense.v1 import events_pb2

PROTOBUF_CONTENT_TYPE: Final = "application/x-protobuf"
MAX_DEPTH: Final = 20
ENVELOPE_KEYS: Final = frozenset({"timestamp", "payload"})
# RFC 3339 date-time's grammar, to tell a malformed timestamp from one that is
# well formed but names no representable time.
RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
STATES: Final = {
    "online": events_pb2.DeviceStatus.STATE_ONLINE,
    "offline": events_pb2.DeviceStatus.STATE_OFFLINE,
}

KindMessage = (
    events_pb2.Readings | events_pb2.Alert | events_pb2.DeviceStatus | events_pb2.Configuration
)
PROTOBUF_TYPES: Final[dict[str, type[KindMessage]]] = {
    "data": events_pb2.Readings,
    "alert": events_pb2.Alert,
    "status": events_pb2.DeviceStatus,
    "config": events_pb2.Configuration,
}


class PayloadError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Payload(NamedTuple):
    """A decoded payload: the kind's message and the envelope's time, if any."""

    message: KindMessage
    timestamp: timestamp_pb2.Timestamp | None = None


def decode_payload(kind: str, payload: bytes, content_type: str | None) -> Payload:
    if content_type is not None and content_type.split(";")[0].strip() == PROTOBUF_CONTENT_TYPE:
        return Payload(_from_protobuf(kind, payload))
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("bad_utf8", f"payload is not UTF-8 (byte {exc.start})") from None
    if kind == "status" and text.strip().lower() in STATES:
        return Payload(_status(text.strip().lower()))
    value = _load_json(text)
    timestamp = None
    if isinstance(value, dict) and value.keys() == ENVELOPE_KEYS:
        timestamp = _rfc3339(value["timestamp"])
        value = value["payload"]
    return Payload(_from_json(kind, value), timestamp)


def _reject_constant(name: str) -> None:
    raise PayloadError("bad_json", f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise PayloadError("bad_json", f"{text[:40]} is out of range")
    return value


# One decoder for every payload: json.loads with options builds a new one per call.
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite)


def _load_json(text: str) -> Any:
    if text.startswith("\ufeff"):  # json.loads says so; JSONDecoder.decode does not check
        raise PayloadError("bad_json", "payload is not JSON: it starts with a UTF-8 BOM")
    try:
        return _DECODER.decode(text)
    except PayloadError:
        raise
    except RecursionError:
        raise PayloadError("too_deep", f"JSON nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise PayloadError("bad_json", f"payload is not JSON: {exc}") from None


def _rfc3339(value: object) -> timestamp_pb2.Timestamp:
    problem = "envelope timestamp must be an RFC 3339 string with a time zone"
    if not isinstance(value, str):
        raise PayloadError("bad_envelope", problem)
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None or "T" not in value.upper():
            raise ValueError(value)
        stamp = timestamp_pb2.Timestamp()
        # Raises OverflowError when the time leaves the years 1 to 9999 once
        # converted to UTC (9999-12-31T23:59:59-01:00).
        stamp.FromDatetime(moment)
    except (ValueError, OverflowError):
        if RFC3339.fullmatch(value):
            # Well formed, but no time that datetime and protobuf's Timestamp can
            # hold: year 0, month 13, an offset of 24 h, past 9999 in UTC...
            raise PayloadError(
                "bad_timestamp",
                f"envelope timestamp {value[:40]!r} is out of range: a time from "
                "0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z in UTC",
            ) from None
        raise PayloadError("bad_envelope", f"{problem}, not {value[:40]!r}") from None
    return stamp


def _depth(value: Any) -> int:
    """Levels of object/array nesting (a scalar is 0), without recursion."""
    if type(value) is dict and not any(type(v) in _NESTING for v in value.values()):
        return 1  # the usual reading: one object of scalars
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= MAX_DEPTH:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


_NESTING: Final = (dict, list)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    if _depth(value) > MAX_DEPTH:
        raise PayloadError("too_deep", f"JSON nests deeper than {MAX_DEPTH} levels")
    struct = struct_pb2.Struct()
    try:
        struct.update(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise PayloadError("bad_json", f"payload has a value protobuf cannot hold: {exc}") from None
    return struct


def _status(state: str, details: dict[str, Any] | None = None) -> events_pb2.DeviceStatus:
    status = events_pb2.DeviceStatus(state=STATES[state])
    if details:
        status.details.CopyFrom(_struct(details))
    return status


def _from_json(kind: str, value: Any) -> KindMessage:
    if kind == "status":
        if isinstance(value, str) and value.strip().lower() in STATES:
            return _status(value.strip().lower())
        if not isinstance(value, dict):
            raise PayloadError("not_an_object", "status must be online, offline or an object")
        details = dict(value)
        state = details.pop("status", None)
        if not isinstance(state, str) or state.strip().lower() not in STATES:
            raise PayloadError("bad_status", 'a status object needs "status": online or offline')
        return _status(state.strip().lower(), details)
    if not isinstance(value, dict):
        raise PayloadError("not_an_object", f"a {kind} payload must be a JSON object")
    struct = _struct(value)
    if kind == "data":
        return events_pb2.Readings(values=struct)
    if kind == "alert":
        return events_pb2.Alert(details=struct)
    return events_pb2.Configuration(values=struct)


def _struct_depth(struct: struct_pb2.Struct) -> int:
    deepest, stack = 0, [(struct, 1)]
    while stack and deepest <= MAX_DEPTH:
        item, level = stack.pop()
        deepest = max(deepest, level)
        values = item.fields.values() if isinstance(item, struct_pb2.Struct) else item.values
        for value in values:
            which = value.WhichOneof("kind")
            if which in ("struct_value", "list_value"):
                stack.append((getattr(value, which), level + 1))
    return deepest


def _from_protobuf(kind: str, payload: bytes) -> KindMessage:
    try:
        message = PROTOBUF_TYPES[kind].FromString(payload)
    except protobuf_message.DecodeError as exc:
        raise PayloadError("bad_protobuf", f"payload is not a {kind} message: {exc}") from None
    if isinstance(message, events_pb2.DeviceStatus):
        if message.state not in STATES.values():
            raise PayloadError("bad_status", "DeviceStatus.state must be ONLINE or OFFLINE")
        struct = message.details
    else:
        struct = message.details if isinstance(message, events_pb2.Alert) else message.values
    if _struct_depth(struct) > MAX_DEPTH:
        raise PayloadError("too_deep", f"the message nests deeper than {MAX_DEPTH} levels")
    return message
