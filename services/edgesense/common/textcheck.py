"""Control characters in request strings: refused, naming the field.

A NUL byte cannot be stored in a PostgreSQL text column (the insert fails and
the caller saw 503), while SQLite stores it; other control characters in a
URL, an id or a secret only ever come from a mistake or an attack, and later
break logs and headers. So every string of every unary request is checked
before it reaches a servicer (`grpc_runtime` does it), the same on both
databases: control characters (Unicode category Cc: C0, DEL, C1) are refused,
except tab, line feed and carriage return in free-text fields such as
`description`. Pure: protobuf messages in, InvalidArgument out.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from edgesense.common.errors import InvalidArgument

# Fields of free text, where line breaks and tabs are legitimate.
FREE_TEXT_FIELDS = frozenset({"description", "reason"})
_LINE_CHARS = frozenset("\t\n\r")


def control_character(value: str, *, free_text: bool = False) -> int | None:
    """The index of the first disallowed control character of `value`, if any."""
    if value.isprintable():  # fast path: no Cc (nor other non-printables) at all
        return None
    for index, char in enumerate(value):
        if unicodedata.category(char) == "Cc" and not (free_text and char in _LINE_CHARS):
            return index
    return None


def printable(value: str) -> str:
    """`value` with its control characters (line breaks included) replaced by
    spaces: for text our own services produce, such as a failure reason."""
    if value.isprintable():
        return value
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in value)


def check_text(field: str, value: str, *, free_text: bool = False) -> None:
    index = control_character(value, free_text=free_text)
    if index is not None:
        allowed = " (only tab and line breaks are allowed here)" if free_text else ""
        raise InvalidArgument(
            field,
            f"contains the control character U+{ord(value[index]):04X} "
            f"at position {index}{allowed}",
        )


def check_message_text(message: Message, prefix: str = "") -> None:
    """Every string of `message` and of its nested messages (well-known types
    such as Struct excepted: they hold user data, not our fields)."""
    for field, value in message.ListFields():
        name = f"{prefix}{field.json_name}"
        if _is_map(field):
            _check_map(name, field, value)
            continue
        # Repeated fields are named with their index: deviceIds[3].
        items = (
            [(f"{name}[{i}]", item) for i, item in enumerate(value)]
            if field.is_repeated
            else [(name, value)]
        )
        if field.type == FieldDescriptor.TYPE_STRING:
            free = field.name in FREE_TEXT_FIELDS
            for path, text in items:
                check_text(path, text, free_text=free)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not _well_known(field):
            for path, nested in items:
                check_message_text(nested, f"{path}.")


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and entry.GetOptions().map_entry


def _check_map(name: str, field: FieldDescriptor, value: Any) -> None:
    """A map's keys and string values, named by the map and the key (a
    header's value is a secret of its own: the problem says where, never what)."""
    entry = field.message_type
    assert entry is not None  # a map field's entry message
    value_field = entry.fields_by_name["value"]
    for key in value:
        index = control_character(key) if isinstance(key, str) else None
        if index is not None:
            raise InvalidArgument(
                name,
                f"key {key!r} contains the control character U+{ord(key[index]):04X} "
                f"at position {index}",
            )
        item = value[key]
        if value_field.type == FieldDescriptor.TYPE_STRING:
            index = control_character(item)
            if index is not None:
                raise InvalidArgument(
                    name,
                    f"the value of {key!r} contains the control character "
                    f"U+{ord(item[index]):04X} at position {index}",
                )
        elif value_field.type == FieldDescriptor.TYPE_MESSAGE and not _well_known(value_field):
            check_message_text(item, f"{name}[{key!r}].")


def _well_known(field: FieldDescriptor) -> bool:
    message_type = field.message_type
    return message_type is None or message_type.full_name.startswith("google.protobuf.")
