"""The operational events a webhook's status change publishes.

`webhook.disabled` when a delivery to it used all its attempts (unless that
delivery was itself of an operational event: operational events never
cause one another), `webhook.enabled` when it is enabled again. Each is an
`edgesense.v1.Event` of the webhook's project, with no gatewayId and no
deviceId, whose payload names the webhook (its subject); delivery sends it to
the project's other webhooks that subscribe, never to the subject. The store
writes it in the same transaction as the status change (store.set_status),
and forwarder.py publishes it to delivery.
"""

from __future__ import annotations

from datetime import datetime

from edgesense.common.ids import new_id
from edgesense.v1 import events_pb2


def _event(project_id: str, at: datetime) -> events_pb2.Event:
    event = events_pb2.Event(event_id=new_id("evt"), project_id=project_id)
    event.timestamp.FromDatetime(at)
    event.received_at.FromDatetime(at)
    return event


def disabled_event(
    project_id: str,
    webhook_id: str,
    url: str,
    reason: str,
    at: datetime,
    last_attempt: events_pb2.WebhookAttempt | None,
) -> events_pb2.Event:
    """`webhook.disabled` about `webhook_id`, happening at `at`."""
    event = _event(project_id, at)
    disabled = event.webhook_disabled
    disabled.webhook_id, disabled.url, disabled.reason = webhook_id, url, reason
    if last_attempt is not None:
        disabled.last_attempt.CopyFrom(last_attempt)
    return event


def enabled_event(project_id: str, webhook_id: str, url: str, at: datetime) -> events_pb2.Event:
    """`webhook.enabled` about `webhook_id`, happening at `at`."""
    event = _event(project_id, at)
    event.webhook_enabled.webhook_id, event.webhook_enabled.url = webhook_id, url
    return event
