"""Event names and the mapping between the webhook event name and the proto oneof."""

from __future__ import annotations

import re
from typing import Final

DEVICE_DATA: Final = "device.data"
DEVICE_ALERT: Final = "device.alert"
DEVICE_STATUS: Final = "device.status"
CONFIG_UPDATE: Final = "config.update"
WEBHOOK_DISABLED: Final = "webhook.disabled"
WEBHOOK_ENABLED: Final = "webhook.enabled"

# What gateways publish: events about a device (or a gateway).
DEVICE_EVENT_NAMES: Final = (DEVICE_DATA, DEVICE_ALERT, DEVICE_STATUS, CONFIG_UPDATE)
# What the registry publishes about a project's webhooks: sent to the
# project's other webhooks that subscribe, never to the webhook named in the
# payload, and with no device (a webhook's device filter does not apply).
OPERATIONAL_EVENT_NAMES: Final = (WEBHOOK_DISABLED, WEBHOOK_ENABLED)
# Every event a webhook can subscribe to.
EVENT_NAMES: Final = DEVICE_EVENT_NAMES + OPERATIONAL_EVENT_NAMES

# Event.kind oneof field -> webhook event name.
KIND_TO_EVENT: Final = {
    "readings": DEVICE_DATA,
    "alert": DEVICE_ALERT,
    "status": DEVICE_STATUS,
    "configuration": CONFIG_UPDATE,
    "webhook_disabled": WEBHOOK_DISABLED,
    "webhook_enabled": WEBHOOK_ENABLED,
}

# Project, gateway and device ids: the rule topic levels and registrations share.
DEVICE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

# MQTT 5 user property naming an event (its value follows DEVICE_ID): the
# bridge stores one event per gateway and name, so a gateway's retry or the
# broker's redelivery of the same message makes no second event.
EVENT_ID_PROPERTY: Final = "event-id"
