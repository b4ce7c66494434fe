"""Event names and the mapping between the webhook event name and the proto oneof."""

from __future__ import annotations

import re
from typing import Final

DEVICE_DATA: Final = "device.data"
DEVICE_ALERT: Final = "device.alert"
DEVICE_STATUS: Final = "device.status"
CONFIG_UPDATE: Final = "config.update"

EVENT_NAMES: Final = (DEVICE_DATA, DEVICE_ALERT, DEVICE_STATUS, CONFIG_UPDATE)

# Event.kind oneof field -> webhook event name.
KIND_TO_EVENT: Final = {
    "readings": DEVICE_DATA,
    "alert": DEVICE_ALERT,
    "status": DEVICE_STATUS,
    "configuration": CONFIG_UPDATE,
}

# Project, gateway and device ids: the rule topic levels and registrations share.
DEVICE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

# MQTT 5 user property naming an event (its value follows DEVICE_ID): the
# bridge stores one event per gateway and name, so a gateway's retry or the
# broker's redelivery of the same message makes no second event.
EVENT_ID_PROPERTY: Final = "event-id"
