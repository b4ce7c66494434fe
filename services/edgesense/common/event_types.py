"""The event types a webhook can subscribe to, each with the JSON Schema of its
body, generated from `protos/edgesense/v1/events.proto`.

`EVENT_TYPES` is what `GET /api/event-types` answers: one entry per name of
`events.EVENT_NAMES`, in that order. A schema (JSON Schema draft 2020-12)
describes the whole request body of contract section 5: the envelope every
event shares (Event's fields), whose `event` is that type's name, and the
type's `payload` (the message of Event's `kind` for it). Nothing here is
written twice:

- Members come from the messages' fields by the rules of body.proto, which
  the renderer (edgesense.delivery.send.payload) follows too
  (`event_body.members`); each maps to a schema by its type as proto3 JSON
  has it (lowerCamelCase names, 64-bit integers as strings, a Timestamp as a
  `date-time` string, a Struct as an object, repeated fields as arrays).
- Descriptions are the protos' leading comments (the descriptor set of
  `make protos`, `edgesense/v1/descriptors.binpb`, keeps them): a type's is
  its kind message's comment, a member's its field's.

What the protos cannot say is the formats of the ids (`FORMATS`) and the
`webhookId` that is not in the event (each webhook's body adds its own).
Members may be added to a body later, so the schemas allow unknown members
(a receiver should ignore what it does not know).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from edgesense.common.event_body import STRUCT, enum_names, members, message_of
from edgesense.common.events import DEVICE_ID, EVENT_NAMES, KIND_TO_EVENT, OPERATIONAL_EVENT_NAMES
from edgesense.v1 import events_pb2

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
EVENTS_PROTO: Final = "edgesense/v1/events.proto"

_WEBHOOK_ID: Final = {"type": "string", "pattern": "^wh_[a-z2-7]+$"}
_DEVICE_ID: Final = {"type": "string", "pattern": f"^{DEVICE_ID.pattern}$"}
# Formats the protos do not state, by member name, wherever the member is.
FORMATS: Final[Mapping[str, Mapping[str, Any]]] = {
    "eventId": {"minLength": 1},
    "deviceId": _DEVICE_ID,
    "gatewayId": _DEVICE_ID,
    "webhookId": _WEBHOOK_ID,
}

_INTEGER_32 = {FieldDescriptor.CPPTYPE_INT32: None, FieldDescriptor.CPPTYPE_UINT32: 0}
_WELL_KNOWN: Final[Mapping[str, Mapping[str, Any]]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    STRUCT: {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
}
_FLOAT: Final = {"anyOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]}]}


@dataclass(frozen=True)
class EventType:
    name: str  # the webhook event name, `device.data`, ...
    kind: str  # the field of Event's `kind` oneof it is sent for, `readings`, ...

    @property
    def description(self) -> str:
        """The comment of the kind's message in events.proto."""
        return proto_comments()[message_of(self.field).full_name]

    @property
    def field(self) -> FieldDescriptor:
        return events_pb2.Event.DESCRIPTOR.fields_by_name[self.kind]

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of the whole request body for this event type."""
        return body_schema(self.name, self.field, proto_comments())


def body_schema(name: str, kind: FieldDescriptor, comments: Mapping[str, str]) -> dict[str, Any]:
    """The body of an event whose `kind` is the field `kind`: Event's members
    (without `deviceId` and `gatewayId` for an operational event), `event`
    fixed to `name`, and the kind's message as `payload`."""
    event = kind.containing_type
    if event is None:  # only an extension has none
        raise ValueError(f"{kind.full_name} is not a field of Event")
    oneof = event.oneofs_by_name["kind"]
    envelope = [
        m
        for m in members(event, device_event=name not in OPERATIONAL_EVENT_NAMES)
        if m.field.containing_oneof is None
    ]
    properties: dict[str, Any] = {"event": {"const": name, **_described(oneof.full_name, comments)}}
    required = ["event"]
    for member in envelope:
        properties[member.name] = field_schema(member.field, comments)
        if member.always:
            required.append(member.name)
    properties["payload"] = field_schema(kind, comments)
    properties["webhookId"] = {**_WEBHOOK_ID, "description": "The webhook this request is for."}
    required += ["payload", "webhookId"]
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": name,
        **_described(message_of(kind).full_name, comments),
        "type": "object",
        "required": required,
        "properties": properties,
    }


def message_schema(message: Descriptor, comments: Mapping[str, str]) -> dict[str, Any]:
    """An object with `message`'s members (their names, types and comments);
    others allowed, which an inline Struct's members are."""
    properties = {}
    required = []
    for member in members(message):
        if member.inline:
            continue
        properties[member.name] = field_schema(member.field, comments)
        if member.always:
            required.append(member.name)
    schema: dict[str, Any] = {"type": "object"}
    if required:
        schema["required"] = required
    if properties:
        schema["properties"] = properties
    schema["additionalProperties"] = True
    return schema


def field_schema(field: FieldDescriptor, comments: Mapping[str, str]) -> dict[str, Any]:
    """The schema of the member `field` renders to, described by its comment."""
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        value = _value_schema(entry.fields_by_name["value"], comments)
        schema = {"type": "object", "additionalProperties": value}
    elif field.is_repeated:
        schema = {"type": "array", "items": _value_schema(field, comments)}
    else:
        schema = _value_schema(field, comments)
    return {**schema, **FORMATS.get(field.json_name, {}), **_described(field.full_name, comments)}


def _value_schema(field: FieldDescriptor, comments: Mapping[str, str]) -> dict[str, Any]:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return {"enum": list(dict.fromkeys(enum_names(field.enum_type).values()))}
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        message = message_of(field)
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name.startswith("google.protobuf."):
            raise ValueError(f"{field.full_name}: {message.full_name} has no body form")
        return message_schema(message, comments)
    cpp = field.cpp_type
    if cpp in (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64):
        sign = "" if cpp == FieldDescriptor.CPPTYPE_UINT64 else "-?"
        return {"type": "string", "pattern": f"^{sign}[0-9]+$"}  # proto3 JSON
    if cpp in _INTEGER_32:
        minimum = _INTEGER_32[cpp]
        return {"type": "integer"} if minimum is None else {"type": "integer", "minimum": minimum}
    if cpp in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return dict(_FLOAT)
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return {"type": "boolean"}
    if field.type == FieldDescriptor.TYPE_BYTES:
        return {"type": "string", "contentEncoding": "base64"}
    return {"type": "string"}


def _described(full_name: str, comments: Mapping[str, str]) -> dict[str, str]:
    text = comments.get(full_name)
    return {"description": text} if text else {}


@cache
def proto_comments() -> dict[str, str]:
    """Full name -> leading comment of each message, field, oneof, enum and
    enum value (`Enum.full_name + "." + value name`) of events.proto."""
    data = (resources.files("edgesense.v1") / "descriptors.binpb").read_bytes()
    files = {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(data).file}
    if EVENTS_PROTO not in files:
        raise LookupError(f"descriptors.binpb has no {EVENTS_PROTO}: run `make protos`")
    return file_comments(files[EVENTS_PROTO])


def file_comments(proto: descriptor_pb2.FileDescriptorProto) -> dict[str, str]:
    """Full name -> leading comment, for what `proto` declares (SourceCodeInfo
    paths: a file's messages are 4, a message's fields 2, nested messages 3,
    enums 4 and oneofs 8, an enum's values 2; a file's enums 5)."""
    names: dict[tuple[int, ...], str] = {}

    def enum(path: tuple[int, ...], item: descriptor_pb2.EnumDescriptorProto, scope: str) -> None:
        names[path] = f"{scope}.{item.name}"
        for i, value in enumerate(item.value):
            names[(*path, 2, i)] = f"{scope}.{item.name}.{value.name}"

    def message(path: tuple[int, ...], item: descriptor_pb2.DescriptorProto, scope: str) -> None:
        full = names[path] = f"{scope}.{item.name}"
        for i, field in enumerate(item.field):
            names[(*path, 2, i)] = f"{full}.{field.name}"
        for i, oneof in enumerate(item.oneof_decl):
            names[(*path, 8, i)] = f"{full}.{oneof.name}"
        for i, nested in enumerate(item.nested_type):
            message((*path, 3, i), nested, full)
        for i, nested_enum in enumerate(item.enum_type):
            enum((*path, 4, i), nested_enum, full)

    for i, item in enumerate(proto.message_type):
        message((4, i), item, proto.package)
    for i, top_enum in enumerate(proto.enum_type):
        enum((5, i), top_enum, proto.package)
    comments = {}
    for location in proto.source_code_info.location:
        name = names.get(tuple(location.path))
        if name is not None and location.leading_comments.strip():
            comments[name] = _prose(location.leading_comments)
    return comments


def _prose(comment: str) -> str:
    """A comment's lines as one text: lines joined, paragraphs kept apart."""
    paragraphs = comment.strip().split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _event_types() -> tuple[EventType, ...]:
    kinds = {f.name for f in events_pb2.Event.DESCRIPTOR.oneofs_by_name["kind"].fields}
    if kinds != set(KIND_TO_EVENT):
        raise LookupError(
            f"Event.kind's fields {sorted(kinds)} and events.KIND_TO_EVENT's "
            f"{sorted(KIND_TO_EVENT)} differ: name each kind's event there"
        )
    kind_of = {name: kind for kind, name in KIND_TO_EVENT.items()}
    return tuple(EventType(name, kind_of[name]) for name in EVENT_NAMES)


EVENT_TYPES: Final = _event_types()
