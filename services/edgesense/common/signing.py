"""Signatures and headers of a webhook request (contract section 5).

Every request carries two signatures over the same raw body, so receivers can
use either:

- `X-EdgeSense-Signature`: hex HMAC-SHA256 of the body, key = the secret's
  UTF-8 bytes; what the integration guide's `verify_signature` checks.
- Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`):
  `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, so the official
  `standardwebhooks` libraries (and Svix's) verify it, including their replay
  window on the timestamp.

After a secret rotation, the secrets rotated out stay live until their
overlap ends, and every request is signed so that a receiver holding any
live secret verifies it:

- `webhook-signature` carries one `v1,<sig>` per live secret, the current one
  first and then newest to oldest, space-separated: Standard Webhooks
  receivers accept a request when any of them matches.
- `X-EdgeSense-Signature` holds one hex HMAC, which the guide's snippet
  compares exactly, so it is signed with the OLDEST live secret: a receiver
  still running the snippet with the old secret verifies every request until
  the overlap ends, and switches to the new secret then (the README gives
  the receiver's procedure step by step). After the overlap only the current
  secret signs.

Which previous secrets are live is decided for each request from the time
it is signed (`now`), so an overlap ends on time with no restart and no
message from the registry.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable, Mapping, Sequence

import edgesense

WHSEC_PREFIX = "whsec_"
USER_AGENT = f"EdgeSense-Webhooks/{edgesense.__version__}"


def sign_body(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the raw body: the `X-EdgeSense-Signature` value."""
    return hmac.digest(secret.encode(), body, "sha256").hex()


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
    return _standard_signature(standard_webhooks_key(secret), msg_id, timestamp, body)


def _standard_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    return "v1," + base64.b64encode(hmac.digest(key, signed, "sha256")).decode("ascii")


class Signer:
    """Signs attempts with one webhook's secrets; their keys are derived once.

    `previous` are the secrets rotated out, oldest first, each with the unix
    time its overlap ends.
    """

    __slots__ = ("_key", "_previous", "_standard_key")

    def __init__(self, secret: str, previous: Sequence[tuple[str, float]] = ()) -> None:
        self._key = secret.encode()
        self._standard_key = standard_webhooks_key(secret)
        self._previous = tuple(
            (old.encode(), standard_webhooks_key(old), ends) for old, ends in previous
        )

    def __repr__(self) -> str:  # never the secret
        return "Signer(...)"

    def headers(
        self,
        delivery_id: str,
        event_name: str,
        body: bytes,
        timestamp: int,
        now: float | None = None,
    ) -> dict[str, str]:
        """Every header of one attempt (contract section 5), User-Agent included.

        `delivery_id` is both `X-EdgeSense-Delivery` and `webhook-id`: the same
        on every retry, so receivers can deduplicate. `timestamp` is the
        attempt's time in unix seconds; it is re-signed on each attempt, which
        keeps retries inside the receivers' replay window. A previous secret
        signs while its overlap ends after `now` (default: `timestamp`).
        """
        if not self._previous:  # the usual case: one signature of each kind
            oldest = self._key
            standard = _standard_signature(self._standard_key, delivery_id, timestamp, body)
        else:
            moment = float(timestamp) if now is None else now
            live = [(key, std_key) for key, std_key, ends in self._previous if ends > moment]
            oldest = live[0][0] if live else self._key
            standard_keys = [self._standard_key, *(std_key for _, std_key in reversed(live))]
            standard = " ".join(
                _standard_signature(key, delivery_id, timestamp, body) for key in standard_keys
            )
        headers = unsigned_headers(delivery_id, event_name)
        headers["X-EdgeSense-Signature"] = hmac.digest(oldest, body, "sha256").hex()
        headers["webhook-timestamp"] = str(timestamp)
        headers["webhook-signature"] = standard
        return headers


def unsigned_headers(delivery_id: str, event_name: str) -> dict[str, str]:
    """The headers of every attempt of a delivery that hold no signature and
    no time: the same on every attempt, and none of them secret (GetDelivery
    shows them; `Signer.headers` adds the signatures and webhook-timestamp)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-EdgeSense-Event": event_name,
        "X-EdgeSense-Delivery": delivery_id,
        "webhook-id": delivery_id,
    }


def with_custom_headers(
    custom: Iterable[tuple[str, str]], ours: Mapping[str, str]
) -> dict[str, str]:
    """The headers of a request: a webhook's custom headers, then ours. A
    custom header named like one of ours (in any case) is left out, so ours
    always win; registration refuses such names already."""
    taken = {name.lower() for name in ours}
    headers = {name: value for name, value in custom if name.lower() not in taken}
    headers.update(ours)
    return headers


def signature_headers(
    secret: str, delivery_id: str, event_name: str, body: bytes, timestamp: int
) -> dict[str, str]:
    """Every header of one attempt: `Signer(secret).headers(...)`."""
    return Signer(secret).headers(delivery_id, event_name, body, timestamp)
