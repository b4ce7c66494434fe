"""Whether an event can be stored: the checks delivery's Publish applies to
every event, here so that whoever makes events (the registry's operational
events) can tell an event no delivery could store from one an older
delivery does not know yet."""

from __future__ import annotations

from edgesense.common.errors import InvalidArgument
from edgesense.common.events import KIND_TO_EVENT
from edgesense.v1 import events_pb2

# google.protobuf.Timestamp's range, 0001-01-01T00:00:00Z to
# 9999-12-31T23:59:59.999999999Z: an event outside it could be stored, but never
# rendered for a receiver (its every attempt would fail).
FIRST_SECOND = -62_135_596_800
LAST_SECOND = 253_402_300_799
NANOS = 1_000_000_000

# Event.kind of an operational event -> its field's JSON name.
_SUBJECT_FIELDS = {"webhook_disabled": "webhookDisabled", "webhook_enabled": "webhookEnabled"}


def subject_of(event: events_pb2.Event) -> str:
    """The webhook an operational event is about ("" for other events)."""
    kind = event.WhichOneof("kind")
    if kind == "webhook_disabled":
        return event.webhook_disabled.webhook_id
    if kind == "webhook_enabled":
        return event.webhook_enabled.webhook_id
    return ""


def check_event(event: events_pb2.Event, position: int) -> str:
    """The webhook event name; InvalidArgument for an event that cannot be stored."""
    kind = event.WhichOneof("kind")
    if not event.event_id:
        raise InvalidArgument(f"events[{position}].eventId", "is required")
    if not event.project_id:
        raise InvalidArgument(f"events[{position}].projectId", "is required")
    if kind is None:
        raise InvalidArgument(
            f"events[{position}]", "has no kind (readings, alert, status, configuration)"
        )
    if kind in _SUBJECT_FIELDS and not subject_of(event):
        raise InvalidArgument(
            f"events[{position}].{_SUBJECT_FIELDS[kind]}.webhookId",
            "is required (the webhook the event is about)",
        )
    stamp, received = event.timestamp, event.received_at
    if not (
        FIRST_SECOND <= stamp.seconds <= LAST_SECOND
        and FIRST_SECOND <= received.seconds <= LAST_SECOND
        and 0 <= stamp.nanos < NANOS
        and 0 <= received.nanos < NANOS
    ):
        _out_of_range(event, position)
    return KIND_TO_EVENT[kind]


def _out_of_range(event: events_pb2.Event, position: int) -> None:
    """Raise InvalidArgument naming the event's timestamp that protobuf cannot hold."""
    for name, stamp in (("timestamp", event.timestamp), ("receivedAt", event.received_at)):
        if not (FIRST_SECOND <= stamp.seconds <= LAST_SECOND and 0 <= stamp.nanos < NANOS):
            raise InvalidArgument(
                f"events[{position}].{name}",
                "is out of range: a time from 0001-01-01T00:00:00Z to "
                "9999-12-31T23:59:59.999999999Z",
            )
