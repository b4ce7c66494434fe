"""Test sends (POST /api/webhooks/{id}/test): the sample event of each type,
and how often a webhook may be sent one.

A sample is a real `Event` with `test` set, so it goes through the normal
pipeline (stored, claimed, signed, retried, logged) and renders as the real
body of its type plus `"test": true` (send/payload.py). Its device is one
the webhook filters on, if it has a filter, so that the receiver's own
routing sees a device it knows. The sample of an operational event names a
made-up webhook (SAMPLE_SUBJECT), and has no device.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from typing import Any

from edgesense.common.events import (
    CONFIG_UPDATE,
    DEVICE_ALERT,
    DEVICE_DATA,
    DEVICE_STATUS,
    OPERATIONAL_EVENT_NAMES,
    WEBHOOK_DISABLED,
)
from edgesense.common.ids import new_id
from edgesense.v1 import events_pb2

# At most this many test sends per webhook in any minute, in each delivery
# process: enough to check a receiver by hand or from a script, too few to
# flood one (a receiver gets at most that many requests, plus their retries).
TEST_SENDS_PER_MINUTE = 10
SAMPLE_DEVICE = "edge-node-321"
SAMPLE_GATEWAY = "gw-test"
# The webhook an operational sample is about: an id no webhook has (a real
# id has 20 characters after `wh_`, common/ids.py).
SAMPLE_SUBJECT = "wh_sample"
SAMPLE_SUBJECT_URL = "https://receiver.example.com/webhooks"

_PAYLOADS: dict[str, dict[str, Any]] = {
    DEVICE_DATA: {"temperature": 75.3, "humidity": 42.5, "pressure": 1013.2},
    DEVICE_ALERT: {
        "metric": "temperature",
        "value": 92.4,
        "threshold": 85,
        "severity": "critical",
        "message": "temperature above threshold",
    },
    DEVICE_STATUS: {},  # online
    CONFIG_UPDATE: {"reportingIntervalSeconds": 60, "firmware": "2.4.1"},
}


def sample_event(
    name: str, project_id: str, device_ids: Collection[str], now: float
) -> events_pb2.Event:
    """A realistic event of type `name` (one of events.EVENT_NAMES), happening now."""
    event = events_pb2.Event(event_id=new_id("evt"), project_id=project_id, test=True)
    micros = round(now * 1e6)
    event.timestamp.FromMicroseconds(micros)
    event.received_at.FromMicroseconds(micros)
    if name in OPERATIONAL_EVENT_NAMES:
        if name == WEBHOOK_DISABLED:
            disabled = event.webhook_disabled
            disabled.webhook_id, disabled.url = SAMPLE_SUBJECT, SAMPLE_SUBJECT_URL
            disabled.reason = "2 attempts failed; last: HTTP 500"
            disabled.last_attempt.started_at.FromMicroseconds(micros - 1_000_000)
            disabled.last_attempt.status_code = 500
        else:
            enabled = event.webhook_enabled
            enabled.webhook_id, enabled.url = SAMPLE_SUBJECT, SAMPLE_SUBJECT_URL
        return event
    event.gateway_id = SAMPLE_GATEWAY
    event.device_id = min(device_ids) if device_ids else SAMPLE_DEVICE
    values = _PAYLOADS[name]
    if name == DEVICE_DATA:
        event.readings.values.update(values)
    elif name == DEVICE_ALERT:
        event.alert.details.update(values)
    elif name == DEVICE_STATUS:
        event.status.state = events_pb2.DeviceStatus.STATE_ONLINE
    else:
        event.configuration.values.update(values)
    return event


class TestSendLimit:
    """At most `per_minute` test sends per webhook in any 60 s (a sliding
    window of the times of the last ones)."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, per_minute: int = TEST_SENDS_PER_MINUTE) -> None:
        self.per_minute = per_minute
        self._sent: dict[str, deque[float]] = {}

    def allow(self, webhook_id: str, now: float) -> bool:
        """True, counting a send at `now`, if the webhook has room for one."""
        sent = self._sent.setdefault(webhook_id, deque())
        while sent and sent[0] <= now - 60:
            sent.popleft()
        if len(sent) >= self.per_minute:
            return False
        sent.append(now)
        # Webhooks whose sends are all older than a minute: forgotten.
        if len(self._sent) > 1024:
            self._sent = {w: s for w, s in self._sent.items() if s and s[-1] > now - 60}
        return True
