"""OpenAPI 3.0 schemas for proto messages, following protobuf's JSON mapping.

Messages become component schemas named by their full proto name, with
lowerCamelCase property names. Well-known types are inlined as their JSON
form: Timestamp is a date-time string, Duration and FieldMask strings,
Struct an object, Value anything, wrappers their (nullable) inner type.
64-bit integers are strings, enums strings of their value names, repeated
fields arrays and maps objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from edgesense.api.fields import WRAPPERS, enum_type, is_map, is_message, message_type

Schema = dict[str, Any]

_F = FieldDescriptor


def _each(kinds: tuple[int, ...], schema: Schema) -> dict[int, Schema]:
    return {kind: schema for kind in kinds}


_SCALARS: dict[int, Schema] = {
    _F.TYPE_STRING: {"type": "string"},
    _F.TYPE_BYTES: {"type": "string", "format": "byte"},
    _F.TYPE_BOOL: {"type": "boolean"},
    _F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _F.TYPE_FLOAT: {"type": "number", "format": "float"},
    **_each(
        (_F.TYPE_INT32, _F.TYPE_SINT32, _F.TYPE_SFIXED32), {"type": "integer", "format": "int32"}
    ),
    **_each(
        (_F.TYPE_UINT32, _F.TYPE_FIXED32),
        {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1},
    ),
    **_each(
        (_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64), {"type": "string", "format": "int64"}
    ),
    **_each((_F.TYPE_UINT64, _F.TYPE_FIXED64), {"type": "string", "format": "uint64"}),
}
_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "example": "1.5s"},
    "google.protobuf.FieldMask": {"type": "string", "example": "field,other.field"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {"description": "Any JSON value."},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
}
STATUS_SCHEMA_NAME = "google.rpc.Status"
STATUS_SCHEMA: Schema = {
    "type": "object",
    "description": "An error: its gRPC status code, a message and typed details.",
    "properties": {
        "code": {"type": "integer", "format": "int32"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": _WELL_KNOWN["google.protobuf.Any"]},
    },
}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


class SchemaBuilder:
    """Collects the component schemas that the referenced messages need."""

    def __init__(self, comments: Mapping[str, str] | None = None) -> None:
        self.comments = comments or {}
        self.components: dict[str, Schema] = {STATUS_SCHEMA_NAME: STATUS_SCHEMA}

    def message(self, descriptor: Descriptor, *, omit: frozenset[str] = frozenset()) -> Schema:
        """A reference to the message's schema (inline when `omit` drops fields)."""
        name = descriptor.full_name
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        if name in WRAPPERS:
            return {**self.scalar(descriptor.fields_by_name["value"]), "nullable": True}
        if omit:
            return self._object(descriptor, omit)
        if name not in self.components:
            self.components[name] = {}  # placeholder: recursive messages refer to themselves
            self.components[name] = self._object(descriptor, omit)
        return ref(name)

    def _object(self, descriptor: Descriptor, omit: frozenset[str]) -> Schema:
        properties = {
            field.json_name: self.field(field)
            for field in descriptor.fields
            if field.name not in omit
        }
        schema: Schema = {"type": "object", "properties": properties}
        if descriptor.full_name in self.comments:
            schema["description"] = self.comments[descriptor.full_name]
        return schema

    def field(self, field: FieldDescriptor) -> Schema:
        if is_map(field):
            value = message_type(field).fields_by_name["value"]
            schema: Schema = {"type": "object", "additionalProperties": self.single(value)}
        elif field.is_repeated:
            schema = {"type": "array", "items": self.single(field)}
        else:
            schema = self.single(field)
        description = self.comments.get(field.full_name)
        if description:
            schema = (
                {"allOf": [schema], "description": description}
                if "$ref" in schema
                else {
                    **schema,
                    "description": description,
                }
            )
        return schema

    def single(self, field: FieldDescriptor) -> Schema:
        """The schema of one value of the field (an item, for a repeated field)."""
        if is_message(field):
            return self.message(message_type(field))
        return self.scalar(field)

    def scalar(self, field: FieldDescriptor) -> Schema:
        if field.type == _F.TYPE_ENUM:
            return {"type": "string", "enum": [v.name for v in enum_type(field).values]}
        return dict(_SCALARS[field.type])
