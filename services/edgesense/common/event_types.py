"""The event types a webhook can subscribe to, each with the JSON Schema of its body.

`EVENT_TYPES` is what `GET /api/event-types` answers: one entry per name of
`events.EVENT_NAMES`, in that order. A schema (JSON Schema draft 2020-12)
describes the whole request body of contract section 5: the envelope every
event shares, whose `event` is that type's name, and the type's `payload`.
Members may be added to a body later, so the schemas allow unknown members
(a receiver should ignore what it does not know). An operational event
(`webhook.disabled`, `webhook.enabled`) is about a webhook, not a device:
its body has no `deviceId` and no `gatewayId`.
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
    OPERATIONAL_EVENT_NAMES,
    WEBHOOK_DISABLED,
    WEBHOOK_ENABLED,
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
    """The envelope of contract section 5 with `event` fixed to `name`
    (without `deviceId` and `gatewayId` for an operational event)."""
    ids = {"type": "string", "pattern": f"^{DEVICE_ID.pattern}$"}
    schema: dict[str, Any] = {
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
                "pattern": _WEBHOOK_ID,
                "description": "the webhook this request is for",
            },
        },
    }
    if name in OPERATIONAL_EVENT_NAMES:
        for member in ("deviceId", "gatewayId"):
            schema["required"].remove(member)
            del schema["properties"][member]
    return schema


_WEBHOOK_ID: Final = "^wh_[a-z2-7]+$"


def _subject(what: str) -> dict[str, Any]:
    """The payload members every operational event has: the webhook it is about."""
    return {
        "webhookId": {
            "type": "string",
            "pattern": _WEBHOOK_ID,
            "description": f"the webhook {what} (never the one this request is for)",
        },
        "url": {"type": "string", "description": "that webhook's URL"},
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
    EventType(
        WEBHOOK_DISABLED,
        "Another webhook of the project was disabled: a delivery to it used all its "
        "attempts. Its deliveries are held until it is enabled again. Not sent when "
        "the delivery that failed was itself of an operational event.",
        {
            "type": "object",
            "description": "the webhook disabled, why, and the last attempt that failed",
            "required": ["webhookId", "url", "reason"],
            "properties": {
                **_subject("disabled"),
                "reason": {"type": "string", "description": "why, as its disabledReason says"},
                "lastAttempt": {
                    "type": "object",
                    "description": "the failed delivery's last attempt (absent when none)",
                    "required": ["startedAt"],
                    "properties": {
                        "startedAt": {"type": "string", "format": "date-time"},
                        "statusCode": {
                            "type": "integer",
                            "description": "the receiver's HTTP status, when it answered",
                        },
                        "error": {
                            "type": "string",
                            "description": "why it failed without an HTTP answer",
                        },
                    },
                    "additionalProperties": True,
                },
            },
            "additionalProperties": True,
        },
    ),
    EventType(
        WEBHOOK_ENABLED,
        "Another webhook of the project was enabled again; its held deliveries are sent.",
        {
            "type": "object",
            "description": "the webhook enabled",
            "required": ["webhookId", "url"],
            "properties": _subject("enabled"),
            "additionalProperties": True,
        },
    ),
)

assert tuple(t.name for t in EVENT_TYPES) == EVENT_NAMES, "one entry per event name"
