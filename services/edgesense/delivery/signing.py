"""Signatures and headers of a webhook request (contract section 5).

Every request carries two signatures over the same raw body, so receivers can
use either:

- `X-EdgeSense-Signature`: hex HMAC-SHA256 of the body, key = the secret's
  UTF-8 bytes; what the integration guide's `verify_signature` checks.
- Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`):
  `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, so the official
  `standardwebhooks` libraries (and Svix's) verify it, including their replay
  window on the timestamp.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import edgesense

WHSEC_PREFIX = "whsec_"
USER_AGENT = f"EdgeSense-Webhooks/{edgesense.__version__}"


def sign_body(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the raw body: the `X-EdgeSense-Signature` value."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key Standard Webhooks receivers derive from `secret`.

    A `whsec_` secret carries its key base64-encoded after the prefix; it is
    decoded the way the reference Python library decodes it (padding added,
    so unpadded base64 works too). Any other secret, or a `whsec_` secret whose
    rest is not base64, is used as its UTF-8 bytes.
    """
    if secret.startswith(WHSEC_PREFIX):
        try:
            key = base64.b64decode(secret[len(WHSEC_PREFIX) :] + "==")
        except (binascii.Error, ValueError):
            key = b""
        if key:
            return key
    return secret.encode()


def standard_webhooks_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,` + base64 HMAC of `{id}.{timestamp}.{body}`."""
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    digest = hmac.new(standard_webhooks_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(
    secret: str, delivery_id: str, event_name: str, body: bytes, timestamp: int
) -> dict[str, str]:
    """Every header of one attempt (contract section 5), User-Agent included.

    `delivery_id` is both `X-EdgeSense-Delivery` and `webhook-id`: the same on
    every retry, so receivers can deduplicate. `timestamp` is the attempt's
    time in unix seconds; it is re-signed on each attempt, which keeps retries
    inside the receivers' replay window.
    """
    return {
        "Content-Type": "application/json",
        "X-EdgeSense-Event": event_name,
        "X-EdgeSense-Delivery": delivery_id,
        "X-EdgeSense-Signature": sign_body(secret, body),
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_webhooks_signature(secret, delivery_id, timestamp, body),
        "User-Agent": USER_AGENT,
    }
