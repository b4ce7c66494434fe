"""Validation of a webhook registration, update and secret rotation: every
rule of contract section 3, one function per field.

A rule that fails raises InvalidArgument naming the field (its JSON name, as
users wrote it), which the REST API answers with 400. An update checks each
field it changes with the same function registration uses. No message ever
holds a secret or a header's value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgesense.common.errors import InvalidArgument
from edgesense.common.events import DEVICE_ID, EVENT_NAMES
from edgesense.common.netpolicy import UrlPolicy

MAX_SECRET_BYTES = 256
MAX_DESCRIPTION_CHARS = 1000
MAX_DEVICE_IDS = 1000
MAX_HEADERS = 20
MAX_HEADER_VALUE_BYTES = 1024
MAX_HEADER_NAME_CHARS = 256
DEFAULT_OVERLAP_SECONDS = 86_400
MAX_OVERLAP_SECONDS = 604_800

# RFC 9110 section 5.6.2: a field name is a token of these characters.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 section 5.5, without obs-text: visible ASCII, space and tab.
_FIELD_VALUE = re.compile(r"[\x21-\x7e \t]*")
# Headers delivery sets itself, or that would break the request's framing or
# its connection: a custom one of these names is refused (any case).
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "user-agent",
        # hop-by-hop (RFC 9110 section 7.6.1, and RFC 2616's list)
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Ours (X-EdgeSense-Event, ...) and Standard Webhooks' (webhook-id, ...).
RESERVED_HEADER_PREFIXES = ("x-edgesense-", "webhook-")

# The fields an update can change: UpdateWebhookRequest.update_mask paths.
UPDATABLE_FIELDS = (
    "url",
    "events",
    "description",
    "device_ids",
    "headers",
    "rate_limit_per_second",
    "ordered",
)
# Requests per second a webhook may be limited to (0: no limit). Delivery
# keeps a send time per request of the last second: the bound keeps that small.
MAX_RATE_LIMIT_PER_SECOND = 10_000


@dataclass(frozen=True)
class WebhookSpec:
    """A registration that passed validation."""

    url: str
    events: tuple[str, ...]
    secret: str
    description: str
    device_ids: tuple[str, ...]
    headers: tuple[tuple[str, str], ...] = ()
    rate_limit_per_second: int = 0
    ordered: bool = False

    def __repr__(self) -> str:  # never the secret nor header values
        return f"WebhookSpec({self.url!r}, {self.events})"


@dataclass(frozen=True)
class WebhookChanges:
    """An update that passed validation: the new value of each field it
    changes, None for each field it keeps."""

    url: str | None = None
    events: tuple[str, ...] | None = None
    description: str | None = None
    device_ids: tuple[str, ...] | None = None
    headers: tuple[tuple[str, str], ...] | None = None
    rate_limit_per_second: int | None = None
    ordered: bool | None = None

    def __repr__(self) -> str:  # never header values
        changed = [name for name in UPDATABLE_FIELDS if getattr(self, name) is not None]
        return f"WebhookChanges({', '.join(changed)})"


def validate_registration(
    policy: UrlPolicy,
    *,
    url: str,
    events: list[str],
    secret: str,
    description: str = "",
    device_ids: list[str] | None = None,
    headers: Mapping[str, str] | None = None,
    rate_limit_per_second: int = 0,
    ordered: bool = False,
) -> WebhookSpec:
    return WebhookSpec(
        check_url(policy, url),
        check_events(events),
        check_secret(secret),
        check_description(description),
        check_device_ids(device_ids or []),
        check_headers(headers or {}),
        check_rate_limit(rate_limit_per_second),
        ordered,
    )


def named_fields(paths: Sequence[str], updatable: Sequence[str]) -> set[str]:
    """The fields of `updatable` an update mask names ("*": all of them).

    An empty mask, or a path that names no updatable field, is refused
    naming `updateMask`."""
    if not paths:
        raise InvalidArgument(
            "updateMask",
            f"is empty: name the fields to change ({', '.join(updatable)}); "
            "over REST, send them in the body",
        )
    named: set[str] = set()
    for path in paths:
        if path == "*":
            named.update(updatable)
        elif path in updatable:
            named.add(path)
        else:
            raise InvalidArgument(
                "updateMask",
                f"{path[:60]!r} is not a field an update can change; "
                f"expected {', '.join(updatable)} or *",
            )
    return named


def validate_update(
    policy: UrlPolicy,
    paths: Sequence[str],
    *,
    url: str,
    events: list[str],
    description: str,
    device_ids: list[str],
    headers: Mapping[str, str],
    rate_limit_per_second: int = 0,
    ordered: bool = False,
) -> WebhookChanges:
    """The fields `paths` (an update mask) names, each checked as at registration.

    An empty mask, or a path that names no updatable field, is refused naming
    `updateMask`; "*" names every updatable field.
    """
    named = named_fields(paths, UPDATABLE_FIELDS)
    return WebhookChanges(
        url=check_url(policy, url) if "url" in named else None,
        events=check_events(events) if "events" in named else None,
        description=check_description(description) if "description" in named else None,
        device_ids=check_device_ids(device_ids) if "device_ids" in named else None,
        headers=check_headers(headers) if "headers" in named else None,
        rate_limit_per_second=(
            check_rate_limit(rate_limit_per_second) if "rate_limit_per_second" in named else None
        ),
        ordered=ordered if "ordered" in named else None,
    )


def check_url(policy: UrlPolicy, url: str) -> str:
    return policy.check_webhook_url(url)


def check_events(events: Sequence[str]) -> tuple[str, ...]:
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
    return tuple(events)


def check_rate_limit(rate: int) -> int:
    if not 0 <= rate <= MAX_RATE_LIMIT_PER_SECOND:
        raise InvalidArgument(
            "rateLimitPerSecond",
            f"is {rate}; expected 0 (no limit) to {MAX_RATE_LIMIT_PER_SECOND} requests per second",
        )
    return rate


def check_secret(secret: str) -> str:
    if not secret:
        raise InvalidArgument("secret", "is required")
    if len(secret.encode()) > MAX_SECRET_BYTES:
        raise InvalidArgument("secret", f"is longer than {MAX_SECRET_BYTES} bytes")
    return secret


def check_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise InvalidArgument("description", f"is longer than {MAX_DESCRIPTION_CHARS} characters")
    return description


def check_device_ids(device_ids: Sequence[str]) -> tuple[str, ...]:
    devices = list(device_ids)
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
    return tuple(devices)


def check_headers(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Custom headers, sorted by name; InvalidArgument naming `headers` and
    the header (never its value) for the first one refused."""
    if len(headers) > MAX_HEADERS:
        raise InvalidArgument("headers", f"has {len(headers)} headers; at most {MAX_HEADERS}")
    seen: dict[str, str] = {}
    for name in sorted(headers):
        shown = repr(name[:60])
        if not _TOKEN.fullmatch(name) or len(name) > MAX_HEADER_NAME_CHARS:
            raise InvalidArgument(
                "headers",
                f"{shown} is not a header name (1-{MAX_HEADER_NAME_CHARS} letters, digits "
                "and !#$%&'*+-.^_`|~, RFC 9110)",
            )
        lower = name.lower()
        if lower in RESERVED_HEADERS or lower.startswith(RESERVED_HEADER_PREFIXES):
            raise InvalidArgument(
                "headers",
                f"{shown} is set by EdgeSense or by HTTP itself and cannot be a custom header",
            )
        if lower in seen:
            raise InvalidArgument(
                "headers", f"{shown} and {seen[lower][:60]!r} differ only by case: send one"
            )
        seen[lower] = name
        value = headers[name]
        if not _FIELD_VALUE.fullmatch(value):
            raise InvalidArgument(
                "headers",
                f"the value of {shown} may hold only visible ASCII, spaces and tabs "
                "(no line breaks)",
            )
        if value != value.strip(" \t"):
            raise InvalidArgument(
                "headers",
                f"the value of {shown} starts or ends with white space, which HTTP drops",
            )
        if len(value) > MAX_HEADER_VALUE_BYTES:
            raise InvalidArgument(
                "headers", f"the value of {shown} is longer than {MAX_HEADER_VALUE_BYTES} bytes"
            )
    return tuple((name, headers[name]) for name in sorted(headers))


def check_overlap(overlap_seconds: int | None) -> int:
    """A rotation's overlap: the default when unset, else 0 to the maximum."""
    if overlap_seconds is None:
        return DEFAULT_OVERLAP_SECONDS
    if not 0 <= overlap_seconds <= MAX_OVERLAP_SECONDS:
        raise InvalidArgument(
            "overlapSeconds",
            f"must be 0 (switch now) to {MAX_OVERLAP_SECONDS} (7 days), not {overlap_seconds}",
        )
    return overlap_seconds
