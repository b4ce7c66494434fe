"""Signatures against independently computed vectors and the reference verifiers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import edgesense
from edgesense.common.signing import (
    Signer,
    sign_body,
    signature_headers,
    standard_webhooks_key,
    standard_webhooks_signature,
    with_custom_headers,
)
from tests.support.receivers import guide_verify_signature

BODY = '{"event":"device.data","payload":{"temperature":75.3,"unit":"°C"}}'.encode()


def test_sign_body_is_hex_hmac_sha256_of_the_raw_body() -> None:
    expected = hmac.new(b"your_shared_secret", BODY, hashlib.sha256).hexdigest()
    assert sign_body("your_shared_secret", BODY) == expected
    assert len(expected) == 64


def test_sign_body_known_vector() -> None:
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    assert (
        sign_body("Jefe", b"what do ya want for nothing?")
        == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


@pytest.mark.parametrize("secret", ["your_shared_secret", "sécret ünicode", "whsec_abc"])
def test_integration_guide_snippet_accepts_the_signature(secret: str) -> None:
    signature = sign_body(secret, BODY)
    assert guide_verify_signature(secret, BODY.decode(), signature)
    assert not guide_verify_signature(secret, BODY.decode() + " ", signature)
    assert not guide_verify_signature(secret + "!", BODY.decode(), signature)


def test_standard_webhooks_signature_with_a_plain_secret() -> None:
    signed = b"dlv_1.1753353317." + BODY
    digest = hmac.new(b"plain secret", signed, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(digest).decode()
    assert standard_webhooks_signature("plain secret", "dlv_1", 1753353317, BODY) == expected


def test_standard_webhooks_signature_with_a_whsec_secret() -> None:
    key = bytes(range(24))
    secret = "whsec_" + base64.b64encode(key).decode()
    signed = b"msg_2KWPBgLlAfxdpx2AI54pPJ85f4W.1674087231." + BODY
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert standard_webhooks_key(secret) == key
    got = standard_webhooks_signature(secret, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", 1674087231, BODY)
    assert got == expected


def test_whsec_key_decoding() -> None:
    assert standard_webhooks_key("whsec_" + base64.b64encode(b"k" * 32).decode()) == b"k" * 32
    assert standard_webhooks_key("whsec_" + base64.b64encode(b"abcd").decode().rstrip("=")) == (
        b"abcd"
    )
    # "whsec_" alone, or with no base64 after it, is an ordinary secret.
    assert standard_webhooks_key("whsec_") == b"whsec_"
    assert standard_webhooks_key("plain") == b"plain"


def test_spec_example_vector() -> None:
    # The example of the Standard Webhooks reference libraries' test suites.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    signature = standard_webhooks_signature(
        secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_are_exactly_the_contract() -> None:
    now = int(time.time())
    headers = signature_headers("s3cret", "dlv_42", "device.alert", BODY, now)
    assert headers == {
        "Content-Type": "application/json",
        "X-EdgeSense-Event": "device.alert",
        "X-EdgeSense-Delivery": "dlv_42",
        "X-EdgeSense-Signature": sign_body("s3cret", BODY),
        "webhook-id": "dlv_42",
        "webhook-timestamp": str(now),
        "webhook-signature": standard_webhooks_signature("s3cret", "dlv_42", now, BODY),
        "User-Agent": f"EdgeSense-Webhooks/{edgesense.__version__}",
    }


@pytest.mark.parametrize(
    ("secret", "verifier"),
    [
        ("whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode(), None),
        ("your_shared_secret", b"your_shared_secret"),
    ],
)
def test_reference_library_verifies_the_headers(secret: str, verifier: bytes | None) -> None:
    headers = signature_headers(secret, "dlv_7", "device.data", BODY, int(time.time()))
    webhook = Webhook(secret if verifier is None else verifier)
    assert webhook.verify(BODY, headers) == {
        "event": "device.data",
        "payload": {"temperature": 75.3, "unit": "°C"},
    }
    with pytest.raises(WebhookVerificationError):
        webhook.verify(BODY + b" ", headers)


@pytest.mark.parametrize("secret", ["s3cret", "whsec_" + base64.b64encode(b"k" * 24).decode()])
def test_a_signer_keeps_its_keys_and_signs_each_attempt(secret: str) -> None:
    signer = Signer(secret)
    assert secret not in repr(signer)
    for delivery_id, now in (("dlv_7", int(time.time())), ("dlv_8", int(time.time()) + 1)):
        headers = signer.headers(delivery_id, "device.data", BODY, now)
        expected = hmac.new(secret.encode(), BODY, hashlib.sha256).hexdigest()
        assert headers["X-EdgeSense-Signature"] == expected
        assert headers["webhook-timestamp"] == str(now)
        Webhook(secret if secret.startswith("whsec_") else _as_whsec(secret)).verify(
            BODY, {k: v for k, v in headers.items() if k.startswith("webhook-")}
        )


def _as_whsec(secret: str) -> str:
    return "whsec_" + base64.b64encode(secret.encode()).decode()


# Secret rotation: a Signer with previous secrets and an injected `now`.
OLD, OLDER, NEW = "old-secret", "older-secret", "whsec_" + base64.b64encode(b"n" * 32).decode()
SENT = 1_753_353_317


def rotated_signer() -> Signer:
    # OLDER ends at SENT + 10, OLD at SENT + 100 (oldest first, as stored).
    return Signer(NEW, [(OLDER, SENT + 10.0), (OLD, SENT + 100.0)])


def standard_verifies(secret: str, headers: dict[str, str]) -> bool:
    key = secret if secret.startswith("whsec_") else secret.encode()
    try:
        Webhook(key).verify(BODY, headers)
    except WebhookVerificationError:
        return False
    return True


def test_during_an_overlap_every_live_secret_signs_newest_first() -> None:
    now = time.time()
    signer = Signer(NEW, [(OLDER, now + 10), (OLD, now + 100)])
    headers = signer.headers("dlv_1", "device.data", BODY, int(now), now)
    signatures = headers["webhook-signature"].split(" ")
    stamp = int(now)
    assert signatures == [
        standard_webhooks_signature(NEW, "dlv_1", stamp, BODY),
        standard_webhooks_signature(OLD, "dlv_1", stamp, BODY),
        standard_webhooks_signature(OLDER, "dlv_1", stamp, BODY),
    ]
    # The reference library accepts the request with any live secret.
    for secret in (NEW, OLD, OLDER):
        assert standard_verifies(secret, headers)
    assert not standard_verifies("never-used", headers)
    # The guide's exact compare: the oldest live secret signs it.
    assert headers["X-EdgeSense-Signature"] == sign_body(OLDER, BODY)
    assert guide_verify_signature(OLDER, BODY.decode(), headers["X-EdgeSense-Signature"])


@pytest.mark.parametrize(
    ("now", "guide_secret", "standard_secrets"),
    [
        (SENT + 9.999, OLDER, [NEW, OLD, OLDER]),
        (SENT + 10.0, OLD, [NEW, OLD]),  # OLDER's overlap ended exactly now
        (SENT + 99.5, OLD, [NEW, OLD]),
        (SENT + 100.0, NEW, [NEW]),
        (SENT + 10_000.0, NEW, [NEW]),
    ],
)
def test_expiry_is_decided_at_send_time(
    now: float, guide_secret: str, standard_secrets: list[str]
) -> None:
    headers = rotated_signer().headers("dlv_1", "device.data", BODY, SENT, now)
    assert headers["X-EdgeSense-Signature"] == sign_body(guide_secret, BODY)
    assert headers["webhook-signature"].split(" ") == [
        standard_webhooks_signature(s, "dlv_1", SENT, BODY) for s in standard_secrets
    ]


def test_without_now_the_timestamp_decides() -> None:
    headers = rotated_signer().headers("dlv_1", "device.data", BODY, SENT + 50)
    assert headers["X-EdgeSense-Signature"] == sign_body(OLD, BODY)


def test_custom_headers_never_override_ours() -> None:
    ours = Signer(NEW).headers("dlv_1", "device.data", BODY, SENT)
    custom = [
        ("Authorization", "Bearer gw-token"),
        ("content-type", "text/plain"),
        ("X-EDGESENSE-SIGNATURE", "forged"),
        ("Webhook-Id", "other"),
    ]
    headers = with_custom_headers(custom, ours)
    assert headers == {"Authorization": "Bearer gw-token", **ours}
