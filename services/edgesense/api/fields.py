"""Request fields named by path variables and query parameters, set from text.

A field path is a dotted list of field names (`sub.subfield`); each part may
be the proto name or the lowerCamelCase JSON name. Text values are parsed the
way grpc-gateway's runtime does (query.go, convert.go): integers in decimal
and range-checked, booleans as Go's strconv.ParseBool accepts them, enums by
name or number (only declared values), bytes as standard or URL-safe base64,
Timestamp/Duration/FieldMask in their proto JSON string form, wrappers by
their inner value.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Sequence

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

WRAPPERS = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
STRING_FORM_MESSAGES = frozenset(
    ("google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask")
)

_F = FieldDescriptor
INT_RANGES = {
    **dict.fromkeys((_F.TYPE_INT32, _F.TYPE_SINT32, _F.TYPE_SFIXED32), (-(2**31), 2**31 - 1)),
    **dict.fromkeys((_F.TYPE_UINT32, _F.TYPE_FIXED32), (0, 2**32 - 1)),
    **dict.fromkeys((_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64), (-(2**63), 2**63 - 1)),
    **dict.fromkeys((_F.TYPE_UINT64, _F.TYPE_FIXED64), (0, 2**64 - 1)),
}
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_TRUE = frozenset(("1", "t", "T", "TRUE", "true", "True"))
_FALSE = frozenset(("0", "f", "F", "FALSE", "false", "False"))
_FLOAT32_MAX = 3.4028234663852886e38


class FieldValueError(ValueError):
    """A field path or text value that does not fit the request message."""


def is_message(field: FieldDescriptor) -> bool:
    return field.type in (_F.TYPE_MESSAGE, _F.TYPE_GROUP)


def message_type(field: FieldDescriptor) -> Descriptor:
    if field.message_type is None:
        raise FieldValueError(f"{field.full_name} is not a message field")
    return field.message_type


def enum_type(field: FieldDescriptor) -> EnumDescriptor:
    if field.enum_type is None:
        raise FieldValueError(f"{field.full_name} is not an enum field")
    return field.enum_type


def is_map(field: FieldDescriptor) -> bool:
    return is_message(field) and message_type(field).GetOptions().map_entry


def takes_text(field: FieldDescriptor) -> bool:
    """Whether one text value (a path segment, a query value) can set this field."""
    if is_map(field):
        return False
    if not is_message(field):
        return True
    return message_type(field).full_name in WRAPPERS | STRING_FORM_MESSAGES


def resolve(message: Descriptor, dotted: str) -> tuple[FieldDescriptor, ...]:
    """The fields along `dotted`; every part but the last is a singular message."""
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = message
    for part in dotted.split("."):
        if current is None:
            raise FieldValueError(f"{dotted}: {fields[-1].name} is not a singular message")
        field = current.fields_by_name.get(part) or _by_json_name(current, part)
        if field is None:
            raise FieldValueError(f"{dotted}: no field {part!r} in {current.full_name}")
        fields.append(field)
        nested = is_message(field) and not takes_text(field) and not field.is_repeated
        current = message_type(field) if nested else None
    return tuple(fields)


def _by_json_name(message: Descriptor, name: str) -> FieldDescriptor | None:
    return next((f for f in message.fields if f.json_name == name), None)


def assign(
    message: Message,
    fields: Sequence[FieldDescriptor],
    values: Sequence[str],
    *,
    label: str,
    override: bool = False,
) -> None:
    """Set the field at the end of `fields` from text; `label` names it in errors.

    An earlier member of the same oneof is an error unless `override` (path
    variables win over the body) or it is this very field.
    """
    target = message
    for field in fields[:-1]:
        if not override:
            _check_oneof(target, field, label)
        target = getattr(target, field.name)
    leaf = fields[-1]
    if not takes_text(leaf):
        raise FieldValueError(f"{label}: a message field cannot be set from one value")
    if not override:
        _check_oneof(target, leaf, label)
    if not leaf.is_repeated and len(values) != 1:
        raise FieldValueError(f"{label}: given {len(values)} times, but it is not repeated")
    container = getattr(target, leaf.name) if leaf.is_repeated else None
    for text in values:
        if is_message(leaf):
            sub = container.add() if container is not None else getattr(target, leaf.name)
            _set_message(sub, message_type(leaf), text, label)
        elif container is not None:
            container.append(parse_text(leaf, text, label))
        else:
            setattr(target, leaf.name, parse_text(leaf, text, label))


def _check_oneof(message: Message, field: FieldDescriptor, label: str) -> None:
    oneof = field.containing_oneof
    if oneof is None or len(oneof.fields) < 2:
        return
    current = message.WhichOneof(oneof.name)
    if current not in (None, field.name):
        raise FieldValueError(f"{label}: {current} of oneof {oneof.name} is already set")


def _set_message(sub: Message, descriptor: Descriptor, text: str, label: str) -> None:
    if descriptor.full_name in WRAPPERS:
        value = parse_text(descriptor.fields_by_name["value"], text, label)
        setattr(sub, "value", value)  # noqa: B010 (the wrapper classes are not typed)
        return
    try:
        json_format.Parse(json.dumps(text), sub)
    except json_format.ParseError as exc:
        raise FieldValueError(f"{label}: {exc}") from None


def parse_text(field: FieldDescriptor, text: str, label: str) -> object:
    """A scalar or enum field's value from its text form."""
    kind = field.type
    if kind == _F.TYPE_STRING:
        return text
    if kind == _F.TYPE_BOOL:
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise FieldValueError(f"{label}: {text!r} is not a boolean")
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]
        if not _INTEGER.match(text) or not low <= int(text) <= high:
            raise FieldValueError(f"{label}: {text!r} is not an integer in [{low}, {high}]")
        return int(text)
    if kind in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        return _parse_float(text, label, single=kind == _F.TYPE_FLOAT)
    if kind == _F.TYPE_ENUM:
        return _parse_enum(field, text, label)
    if kind == _F.TYPE_BYTES:
        return _parse_bytes(text, label)
    raise FieldValueError(f"{label}: cannot be set from text")


def _parse_float(text: str, label: str, *, single: bool) -> float:
    if text in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[text]
    if not _NUMBER.match(text):
        raise FieldValueError(f"{label}: {text!r} is not a number")
    value = float(text)
    if math.isinf(value) or (single and abs(value) > _FLOAT32_MAX):
        raise FieldValueError(f"{label}: {text!r} is out of range")
    return value


def _parse_enum(field: FieldDescriptor, text: str, label: str) -> int:
    enum = enum_type(field)
    by_name = enum.values_by_name.get(text)
    if by_name is not None:
        return int(by_name.number)
    if _INTEGER.match(text) and int(text) in enum.values_by_number:
        return int(text)
    names = ", ".join(v.name for v in enum.values)
    raise FieldValueError(f"{label}: {text!r} is not one of {names}")


def _parse_bytes(text: str, label: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    altchars = b"-_" if ("-" in text or "_" in text) else None
    try:
        return base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise FieldValueError(f"{label}: {text!r} is not base64") from None
