"""Which fields of a message are in the webhook body, and how: body.proto's options, read.

The body a receiver gets (contract section 5) is the proto3 JSON mapping of
the event's fields except where `protos/edgesense/v1/body.proto`'s options
say otherwise. Both sides of that body read the options through `members`
and `enum_names` here: delivery renders it (edgesense.delivery.send.payload)
and GET /api/event-types describes it (edgesense.common.event_types), so a
field added to an event kind's message shows in both, or a test says why not.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from edgesense.v1 import body_pb2

STRUCT = "google.protobuf.Struct"


@dataclass(frozen=True, slots=True)
class Member:
    """A field of a message that appears in the body."""

    field: FieldDescriptor
    name: str  # the member's name in the body: the field's JSON name (unused when inline)
    inline: bool  # a Struct whose members are the enclosing object's own
    always: bool  # in every body, so a schema requires it
    unless_default: bool  # only when the value is not its default (false, 0, "")


@cache
def members(message: Descriptor, *, device_event: bool = True) -> tuple[Member, ...]:
    """The fields of `message` in the body of a device event (or, with
    `device_event` false, of an operational event), in declaration order."""
    found = []
    for field in message.fields:
        form = field.GetOptions().Extensions[body_pb2.body_form]
        if form == body_pb2.BODY_FORM_ABSENT or (
            form == body_pb2.BODY_FORM_DEVICE_EVENTS_ONLY and not device_event
        ):
            continue
        inline = form == body_pb2.BODY_FORM_INLINE
        if inline and (field.message_type is None or field.message_type.full_name != STRUCT):
            raise ValueError(f"{field.full_name}: only a Struct can be BODY_FORM_INLINE")
        unless_default = form == body_pb2.BODY_FORM_UNLESS_DEFAULT
        always = form == body_pb2.BODY_FORM_ALWAYS or not (
            inline or unless_default or field.has_presence
        )
        found.append(Member(field, field.json_name, inline, always, unless_default))
    return tuple(found)


def message_of(field: FieldDescriptor) -> Descriptor:
    """The message type of the message field `field`."""
    if field.message_type is None:
        raise ValueError(f"{field.full_name} is not a message field")
    return field.message_type


@cache
def enum_names(enum: EnumDescriptor) -> dict[int, str]:
    """Value number -> the value's name in the body: its `body_name`, or, as
    proto3 JSON has it, its own name."""
    return {
        value.number: value.GetOptions().Extensions[body_pb2.body_name] or value.name
        for value in enum.values
    }
