"""What a receiver checks on a webhook request (contract section 5).

Both signatures must hold:

- `X-EdgeSense-Signature`: hex HMAC-SHA256 of the raw body (the integration
  guide's `verify_signature`), compared in constant time;
- Standard Webhooks: `webhook-id`, `webhook-timestamp` (unix seconds, at most
  `TOLERANCE_SECONDS` from now, against replays) and `webhook-signature`, a
  space-separated list of `v1,<base64>` of which any one may match (a sender
  rotating its secret sends two).

`check_request` returns None when the request is authentic, else the reason.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from edgesense.common.signing import sign_body, standard_webhooks_signature

TOLERANCE_SECONDS = 5 * 60


def check_edgesense_signature(secret: str, headers: Mapping[str, str], body: bytes) -> str | None:
    given = headers.get("X-EdgeSense-Signature", "")
    if not given:
        return "no X-EdgeSense-Signature"
    if not hmac.compare_digest(sign_body(secret, body).encode(), given.strip().lower().encode()):
        return "X-EdgeSense-Signature does not match"
    return None


def check_standard_signature(
    secret: str, headers: Mapping[str, str], body: bytes, now: float
) -> str | None:
    msg_id = headers.get("webhook-id", "")
    raw_timestamp = headers.get("webhook-timestamp", "")
    given = headers.get("webhook-signature", "")
    if not (msg_id and raw_timestamp and given):
        return "no webhook-id, webhook-timestamp or webhook-signature"
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        return "webhook-timestamp is not a number"
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        return f"webhook-timestamp is {int(now - timestamp)} s off (more than 5 minutes)"
    expected = standard_webhooks_signature(secret, msg_id, timestamp, body).encode()
    # No early exit: every candidate is compared, in constant time each.
    matches = [hmac.compare_digest(expected, candidate.encode()) for candidate in given.split()]
    if not any(matches):
        return "webhook-signature does not match"
    return None


def check_request(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> str | None:
    """None if both signatures hold, else why not (the first that fails)."""
    return check_edgesense_signature(secret, headers, body) or check_standard_signature(
        secret, headers, body, now
    )
