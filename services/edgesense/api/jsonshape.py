"""A JSON body checked against the request message before protobuf parses it.

protobuf's `json_format` reports a bad body with its own text ("Message type
"edgesense.v1.RegisterWebhookRequest" has no field named "urll" at ...",
"Failed to parse events field: repeated field events must be in [] which
is ...") and no field path. This walk finds the first problem the way a
client would name it: the JSON path as sent (`deviceIds[2]`, `inner.name`)
and what was expected there (`a list of strings, not a string`), so the
API can answer a `google.rpc.BadRequest` with that field. What it
accepts, json_format accepts too (proto names as well as lowerCamelCase
names, numbers as strings, null for any field); the string forms of the
well-known types (Timestamp, Duration, ...) are parsed by json_format on
their own, so their errors carry the path too.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from edgesense.api.fields import (
    INT_RANGES,
    WRAPPERS,
    enum_type,
    is_map,
    is_message,
    message_type,
)

_F = FieldDescriptor
_FLOATS = (_F.TYPE_DOUBLE, _F.TYPE_FLOAT)
_TEXTS = (_F.TYPE_STRING, _F.TYPE_BYTES)
# Well-known types whose JSON form is one string.
_STRING_FORMS = {
    "google.protobuf.Timestamp": "an RFC 3339 time such as 2025-07-24T10:35:17Z",
    "google.protobuf.Duration": "a duration such as 1.5s",
    "google.protobuf.FieldMask": "field names separated by commas",
}
_ANY_JSON = frozenset(("google.protobuf.Value", "google.protobuf.Any"))


class BodyFieldError(ValueError):
    """One field of the body that does not fit: its JSON path and the problem."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def check_object(document: dict[str, Any], descriptor: Descriptor, prefix: str = "") -> None:
    """Raise BodyFieldError for the first unknown field or wrongly typed value."""
    for key, value in document.items():
        path = f"{prefix}{key}"
        field = descriptor.fields_by_name.get(key) or _by_json_name(descriptor, key)
        if field is None:
            raise BodyFieldError(path, f'unknown field "{key}"')
        if value is not None:
            _check_field(field, value, path)


def _by_json_name(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    return next((f for f in descriptor.fields if f.json_name == name), None)


def _check_field(field: FieldDescriptor, value: Any, path: str) -> None:
    if is_map(field):
        if not isinstance(value, dict):
            raise _wrong(path, "an object", value)
        entry = message_type(field).fields_by_name["value"]
        for key, item in value.items():
            _check_single(entry, item, f"{path}.{key}")
    elif field.is_repeated:
        if not isinstance(value, list):
            raise _wrong(path, f"a list of {_plural(field)}", value)
        for index, item in enumerate(value):
            _check_single(field, item, f"{path}[{index}]")
    else:
        _check_single(field, value, path)


def _check_single(field: FieldDescriptor, value: Any, path: str) -> None:
    if is_message(field):
        _check_message(message_type(field), value, path)
        return
    expected = _expected(field)
    kind = field.type
    if kind in _TEXTS:
        ok = isinstance(value, str)
    elif kind == _F.TYPE_BOOL:
        ok = isinstance(value, bool)
    elif kind == _F.TYPE_ENUM:
        ok = _is_enum_value(field, value)
    elif kind in _FLOATS:
        ok = _is_number(value) or isinstance(value, str)
    else:
        ok = _is_integer_in(INT_RANGES[kind], value)
    if not ok:
        raise _wrong(path, expected, value)


def _check_message(descriptor: Descriptor, value: Any, path: str) -> None:
    name = descriptor.full_name
    if name in WRAPPERS:
        _check_single(descriptor.fields_by_name["value"], value, path)
    elif name in _STRING_FORMS:
        if not isinstance(value, str):
            raise _wrong(path, "a string", value)
        try:
            json_format.Parse(json.dumps(value), message_factory.GetMessageClass(descriptor)())
        except (json_format.ParseError, ValueError):
            raise BodyFieldError(path, f"must be {_STRING_FORMS[name]}, not {value!r}") from None
    elif name == "google.protobuf.ListValue":
        if not isinstance(value, list):
            raise _wrong(path, "a list", value)
    elif name not in _ANY_JSON:
        if not isinstance(value, dict):
            raise _wrong(path, "an object", value)
        if name != "google.protobuf.Struct":
            check_object(value, descriptor, f"{path}.")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer_in(bounds: tuple[int, int], value: Any) -> bool:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            return False
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return bounds[0] <= value <= bounds[1]


def _is_enum_value(field: FieldDescriptor, value: Any) -> bool:
    if isinstance(value, str):
        return value in enum_type(field).values_by_name
    return isinstance(value, int) and not isinstance(value, bool)


def _expected(field: FieldDescriptor) -> str:
    kind = field.type
    if kind in _TEXTS:
        return "a string"
    if kind == _F.TYPE_BOOL:
        return "a boolean"
    if kind == _F.TYPE_ENUM:
        return "one of " + ", ".join(v.name for v in enum_type(field).values)
    if kind in _FLOATS:
        return "a number"
    low, high = INT_RANGES[kind]
    return f"an integer in [{low}, {high}]"


def _plural(field: FieldDescriptor) -> str:
    if is_message(field):
        return "objects"
    singular = _expected(field)
    if singular.startswith("one of"):
        return f"values ({singular})"
    noun, _, rest = singular.partition(" ")[2].partition(" ")
    return f"{noun}s {rest}".rstrip()


def _wrong(path: str, expected: str, value: Any) -> BodyFieldError:
    return BodyFieldError(path, f"must be {expected}, not {json_kind(value)}")


def json_kind(value: Any) -> str:
    """What a decoded JSON value is, for messages: "a string", "an array", ..."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    names = {dict: "an object", list: "an array", str: "a string", type(None): "null"}
    return names.get(type(value), type(value).__name__)
