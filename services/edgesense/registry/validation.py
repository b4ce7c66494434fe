"""Validation of a webhook registration: every rule of contract section 3.

A rule that fails raises InvalidArgument naming the field (its JSON name, as
users wrote it), which the REST API answers with 400.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgesense.common.errors import InvalidArgument
from edgesense.common.events import DEVICE_ID, EVENT_NAMES
from edgesense.common.netpolicy import UrlPolicy

MAX_SECRET_BYTES = 256
MAX_DESCRIPTION_CHARS = 1000
MAX_DEVICE_IDS = 1000


@dataclass(frozen=True)
class WebhookSpec:
    """A registration that passed validation."""

    url: str
    events: tuple[str, ...]
    secret: str
    description: str
    device_ids: tuple[str, ...]


def validate_registration(
    policy: UrlPolicy,
    *,
    url: str,
    events: list[str],
    secret: str,
    description: str = "",
    device_ids: list[str] | None = None,
) -> WebhookSpec:
    checked_url = policy.check_webhook_url(url)
    if not events:
        raise InvalidArgument("events", f"must list at least one of {', '.join(EVENT_NAMES)}")
    seen: set[str] = set()
    for name in events:
        if name not in EVENT_NAMES:
            raise InvalidArgument(
                "events", f"unknown event {name!r}; expected one of {', '.join(EVENT_NAMES)}"
            )
        if name in seen:
            raise InvalidArgument("events", f"lists {name!r} twice")
        seen.add(name)
    if not secret:
        raise InvalidArgument("secret", "is required")
    if len(secret.encode()) > MAX_SECRET_BYTES:
        raise InvalidArgument("secret", f"is longer than {MAX_SECRET_BYTES} bytes")
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise InvalidArgument("description", f"is longer than {MAX_DESCRIPTION_CHARS} characters")
    devices = list(device_ids or [])
    if len(devices) > MAX_DEVICE_IDS:
        raise InvalidArgument("deviceIds", f"lists more than {MAX_DEVICE_IDS} devices")
    if len(set(devices)) != len(devices):
        raise InvalidArgument("deviceIds", "lists a device twice")
    for device in devices:
        if not DEVICE_ID.fullmatch(device):
            raise InvalidArgument(
                "deviceIds",
                f"{device[:40]!r} is not a device id (1-128 of A-Z a-z 0-9 . _ : -)",
            )
    return WebhookSpec(checked_url, tuple(events), secret, description, tuple(devices))
