"""Registration rules and the URL/private-network policy (pure logic)."""

from __future__ import annotations

import pytest

from edgesense.common.errors import InvalidArgument
from edgesense.common.netpolicy import UrlPolicy, is_forbidden_address
from edgesense.registry.validation import (
    MAX_HEADERS,
    WebhookSpec,
    check_headers,
    validate_registration,
)

STRICT = UrlPolicy()


def register(policy: UrlPolicy = STRICT, **overrides: object) -> WebhookSpec:
    fields: dict[str, object] = {
        "url": "https://example.com/hook",
        "events": ["device.data", "device.alert"],
        "secret": "your_shared_secret",
    }
    fields.update(overrides)
    return validate_registration(policy, **fields)  # type: ignore[arg-type]


def test_the_guide_example_is_valid() -> None:
    spec = register()
    assert spec.events == ("device.data", "device.alert")


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"url": ""}, "url", "required"),
        ({"url": "not a url"}, "url", "https"),
        ({"url": "ftp://example.com/x"}, "url", "https"),
        ({"url": "http://example.com/x"}, "url", "EDGESENSE_ALLOW_INSECURE_URLS"),
        ({"url": "https:///path-only"}, "url", "no host"),
        ({"url": "https://example.com:99999/x"}, "url", "does not parse"),
        ({"url": "https://127.0.0.1/x"}, "url", "private"),
        ({"url": "https://localhost/x"}, "url", "private"),
        ({"url": "https://[::1]/x"}, "url", "private"),
        ({"url": "https://10.0.0.1/x"}, "url", "private"),
        ({"url": "https://169.254.169.254/latest"}, "url", "private"),
        ({"url": "https://example.com/" + "a" * 3000}, "url", "longer"),
        ({"events": []}, "events", "at least one"),
        ({"events": ["device.data", "device.data"]}, "events", "twice"),
        ({"events": ["device.unknown"]}, "events", "unknown event"),
        ({"secret": ""}, "secret", "required"),
        ({"secret": "x" * 257}, "secret", "256 bytes"),
        ({"secret": "é" * 129}, "secret", "256 bytes"),
        ({"description": "d" * 1001}, "description", "1000"),
        ({"device_ids": ["a", "a"]}, "deviceIds", "twice"),
        ({"device_ids": ["bad/id"]}, "deviceIds", "not a device id"),
        ({"rate_limit_per_second": -1}, "rateLimitPerSecond", "0 (no limit) to 10000"),
        ({"rate_limit_per_second": 10_001}, "rateLimitPerSecond", "is 10001"),
    ],
)
def test_each_rule_names_its_field(overrides: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        register(STRICT, **overrides)
    assert caught.value.field == field
    assert words in caught.value.message


def test_relaxed_policy_allows_http_and_private_targets() -> None:
    relaxed = UrlPolicy(allow_insecure_urls=True, allow_private_networks=True)
    spec = register(relaxed, url="http://127.0.0.1:8000/hook")
    assert spec.url == "http://127.0.0.1:8000/hook"


def test_a_secret_of_exactly_256_bytes_is_accepted() -> None:
    register(secret="x" * 256)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "fc00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
        "garbage",
    ],
)
def test_forbidden_addresses(address: str) -> None:
    assert is_forbidden_address(address)


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"]
)
def test_public_addresses(address: str) -> None:
    assert not is_forbidden_address(address)


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({"Content-Type": "text/plain"}, "'Content-Type' is set by EdgeSense"),
        ({"content-length": "1"}, "'content-length' is set by"),
        ({"HOST": "evil.example"}, "'HOST' is set by"),
        ({"User-Agent": "me"}, "'User-Agent' is set by"),
        ({"X-EdgeSense-Signature": "x"}, "'X-EdgeSense-Signature' is set by"),
        ({"x-edgesense-anything": "x"}, "'x-edgesense-anything' is set by"),
        ({"Webhook-Signature": "v1,x"}, "'Webhook-Signature' is set by"),
        ({"webhook-id": "x"}, "'webhook-id' is set by"),
        ({"Connection": "close"}, "'Connection' is set by"),
        ({"Keep-Alive": "5"}, "'Keep-Alive' is set by"),
        ({"Proxy-Authorization": "x"}, "'Proxy-Authorization' is set by"),
        ({"Proxy-Authenticate": "x"}, "'Proxy-Authenticate' is set by"),
        ({"TE": "trailers"}, "'TE' is set by"),
        ({"Trailer": "x"}, "'Trailer' is set by"),
        ({"Transfer-Encoding": "chunked"}, "'Transfer-Encoding' is set by"),
        ({"Upgrade": "h2c"}, "'Upgrade' is set by"),
        ({"X-Token": "a", "x-token": "b"}, "differ only by case"),
        ({"Bad Name": "x"}, "'Bad Name' is not a header name"),
        ({"X-Tok:en": "x"}, "'X-Tok:en' is not a header name"),
        ({"": "x"}, "'' is not a header name"),
        ({"X-Evil": "a\r\nInjected: 1"}, "the value of 'X-Evil' may hold only"),
        ({"X-Evil": "a\nb"}, "the value of 'X-Evil' may hold only"),
        ({"X-Utf8": "caf\u00e9"}, "the value of 'X-Utf8' may hold only"),
        ({"X-Pad": " padded"}, "the value of 'X-Pad' starts or ends"),
        ({"X-Long": "v" * 1025}, "the value of 'X-Long' is longer than 1024 bytes"),
        ({f"X-H{i}": "v" for i in range(MAX_HEADERS + 1)}, "at most 20"),
    ],
)
def test_header_rules_name_the_header_and_never_the_value(
    headers: dict[str, str], words: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        register(headers=headers)
    assert caught.value.field == "headers"
    assert words in caught.value.message
    for value in headers.values():
        if len(value) > 1:
            assert value not in caught.value.message


def test_headers_that_are_fine() -> None:
    headers = {f"X-H{i}": "v" for i in range(MAX_HEADERS - 3)}
    headers |= {"Authorization": "Bearer abc.def", "X-Tab": "a\tb", "X-Long": "v" * 1024}
    assert dict(check_headers(headers)) == headers
    assert register(headers=headers).headers == check_headers(headers)
