"""The event types a webhook can subscribe to, each with the JSON Schema of its body.

`EVENT_TYPES` is what `GET /api/event-types` answers: one entry per name of
`events.EVENT_NAMES`, in that order. A schema (JSON Schema draft 2020-12)
describes the whole request body of contract section 5: the envelope every
event shares, whose `event` is that type's name, and the type's `payload`.
Members may be added to a body later, so the schemas allow unknown members
(a receiver should ignore what it does not know).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from edgesense.common.events import (
    CONFIG_UPDATE,
    DEVICE_ALERT,
    DEVICE_DATA,
    DEVICE_ID,
    DEVICE_STATUS,
    EVENT_NAMES,
)

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class EventType:
    name: str
    description: str
    payload: dict[str, Any]  # the JSON Schema of the body's `payload`

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of the whole request body for this event type."""
        return body_schema(self.name, self.description, self.payload)


def body_schema(name: str, description: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The envelope of contract section 5 with `event` fixed to `name`."""
    ids = {"type": "string", "pattern": f"^{DEVICE_ID.pattern}$"}
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": name,
        "description": description,
        "type": "object",
        "required": [
            "event",
            "timestamp",
            "deviceId",
            "payload",
            "eventId",
            "gatewayId",
            "webhookId",
        ],
        "properties": {
            "event": {"const": name},
            "timestamp": {
                "type": "string",
                "format": "date-time",
                "description": "when the event happened, RFC 3339 in UTC",
            },
            "deviceId": {**ids, "description": "the device (a gateway's own status: the gateway)"},
            "payload": payload,
            "eventId": {
                "type": "string",
                "minLength": 1,
                "description": "the same on every retry and redelivery: drop repeats by it",
            },
            "gatewayId": {**ids, "description": "the gateway that published the event"},
            "webhookId": {
                "type": "string",
                "pattern": "^wh_[a-z2-7]+$",
                "description": "the webhook this request is for",
            },
        },
    }


_READINGS: Final = {
    "type": "object",
    "description": "the device's readings as the gateway published them, by name",
    "additionalProperties": True,
}

EVENT_TYPES: Final = (
    EventType(
        DEVICE_DATA,
        "A device published readings (MQTT kind `data`).",
        _READINGS,
    ),
    EventType(
        DEVICE_ALERT,
        "A device or its gateway reported a threshold breach or fault (MQTT kind `alert`).",
        {
            "type": "object",
            "description": "what was breached, as the gateway described it",
            "additionalProperties": True,
        },
    ),
    EventType(
        DEVICE_STATUS,
        "A device, or a gateway itself, went online or offline (MQTT kind `status`, "
        "or a gateway's Last Will).",
        {
            "type": "object",
            "description": "`status`, plus any details the gateway sent with it",
            "required": ["status"],
            "properties": {"status": {"enum": ["online", "offline", "unknown"]}},
            "additionalProperties": True,
        },
    ),
    EventType(
        CONFIG_UPDATE,
        "A device applied a configuration (MQTT kind `config`).",
        {
            "type": "object",
            "description": "the configuration applied, as the gateway reported it",
            "additionalProperties": True,
        },
    ),
)

assert tuple(t.name for t in EVENT_TYPES) == EVENT_NAMES, "one entry per event name"
