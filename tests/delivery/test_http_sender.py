"""HttpSender against real HTTPS receivers on loopback (test CA from trustme)."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import pycurl
import pytest
import trustme
import uvloop
from aiohttp import web
from google.protobuf import timestamp_pb2
from standardwebhooks.webhooks import Webhook

import edgesense
from edgesense.common.signing import signature_headers
from edgesense.delivery.send import http_sender
from edgesense.delivery.send.attempt import AttemptResult
from edgesense.delivery.send.http_sender import EXCERPT_BYTES, HttpSender
from edgesense.delivery.send.payload import event_name, webhook_body
from edgesense.v1 import events_pb2
from tests.support.receivers import (
    StartReceiver,
    guide_verify_signature,
    started_receivers,
    write_ca_bundle,
)
from tests.support.waiting import eventually

REFUSAL = "resolves to a private address (set EDGESENSE_ALLOW_PRIVATE_NETWORKS=1 to allow)"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_bundle(ca: trustme.CA, tmp_path: Path) -> str:
    return write_ca_bundle(ca, tmp_path)


@pytest.fixture
async def receiver(ca: trustme.CA) -> AsyncIterator[StartReceiver]:
    """Starts HTTPS receivers (certificate from the test CA unless `ca` is given)."""
    async with started_receivers(ca) as start:
        yield start


SenderFactory = Callable[..., Awaitable[HttpSender]]


@pytest.fixture
async def sender(ca_bundle: str) -> AsyncIterator[SenderFactory]:
    """Started HttpSenders trusting the test CA; allows private networks unless told."""
    started: list[HttpSender] = []

    async def make(**kwargs: Any) -> HttpSender:
        kwargs.setdefault("ca_bundle", ca_bundle)
        kwargs.setdefault("allow_private_networks", True)
        kwargs.setdefault("timeout_seconds", 5.0)
        http = HttpSender(**kwargs)
        await http.start()
        started.append(http)
        return http

    yield make
    for http in started:
        await http.close()


@pytest.fixture
def connect_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every address the sender makes a socket for (libcurl connects each one it gets)."""
    calls: list[Any] = []
    real = http_sender._open_socket

    def spy(address: Any) -> int:
        calls.append(address.addr)
        return real(address)

    monkeypatch.setattr(http_sender, "_open_socket", spy)
    return calls


def data_event() -> events_pb2.Event:
    event = events_pb2.Event(
        event_id="evt_0123456789",
        project_id="project-a",
        gateway_id="gw-1",
        device_id="edge-node-321",
        timestamp=timestamp_pb2.Timestamp(seconds=1753353317),
    )
    event.readings.values.update({"temperature": 75.3, "humidity": 42.5, "count": 5})
    return event


async def post_event(http: HttpSender, url: str, secret: str) -> tuple[bytes, AttemptResult]:
    event = data_event()
    body = webhook_body(event, "wh_68f93jkdf")
    headers = signature_headers(secret, "dlv_abc", event_name(event), body, int(time.time()))
    return body, await http.post(url, body, headers)


@pytest.mark.parametrize("secret", ["your_shared_secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
async def test_signed_post_arrives_and_verifies(
    receiver: StartReceiver, sender: SenderFactory, secret: str
) -> None:
    server = await receiver()
    http = await sender()
    body, result = await post_event(http, server.url, secret)

    assert result.ok, result
    assert (result.status_code, result.error, result.response_excerpt) == (200, None, "ok")
    [request] = server.received
    assert (request.method, request.path, request.body) == ("POST", "/hook", body)
    headers = request.headers
    assert headers["Content-Type"] == "application/json"
    assert headers["X-EdgeSense-Event"] == "device.data"
    assert headers["X-EdgeSense-Delivery"] == headers["webhook-id"] == "dlv_abc"
    assert headers["User-Agent"] == f"EdgeSense-Webhooks/{edgesense.__version__}"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert guide_verify_signature(secret, request.body.decode(), headers["X-EdgeSense-Signature"])
    assert not guide_verify_signature(
        secret + "x", request.body.decode(), headers["X-EdgeSense-Signature"]
    )
    # The reference library base64-decodes a whsec_ secret; any other is used as its bytes.
    webhook = Webhook(secret) if secret.startswith("whsec_") else Webhook(secret.encode())
    assert webhook.verify(request.body, dict(headers)) == {
        "event": "device.data",
        "timestamp": "2025-07-24T10:35:17Z",
        "deviceId": "edge-node-321",
        "payload": {"count": 5, "humidity": 42.5, "temperature": 75.3},
        "eventId": "evt_0123456789",
        "gatewayId": "gw-1",
        "webhookId": "wh_68f93jkdf",
    }
    assert result.duration_ms >= 0
    assert result.started_at.tzinfo is not None


async def test_headers_are_sent_as_given(receiver: StartReceiver, sender: SenderFactory) -> None:
    """Custom headers (an empty value included) arrive as they were given, and
    no `Expect: 100-continue` delays a large body (libcurl asks above 1 MiB)."""
    server = await receiver()
    http = await sender()
    body = b'{"big":"' + b"x" * 1_100_000 + b'"}'
    given = {"Content-Type": "application/json", "X-Empty": "", "X-Team": "ops a"}
    result = await http.post(server.url, body, given)
    assert result.ok, result
    [request] = server.received
    assert request.body == body
    assert {name: request.headers.get(name) for name in given} == given
    assert "Expect" not in request.headers


async def test_internationalised_url_is_sent_as_browsers_send_it(
    receiver: StartReceiver, sender: SenderFactory
) -> None:
    """An IDN host is looked up (and its certificate checked) in IDNA, a
    non-ASCII path is percent-encoded."""
    server = await receiver()
    http = await sender(hosts={"xn--bcher-kva.example.test": ["127.0.0.1"]})
    url = server.url_via("bücher.example.test", "/hoök/ü")
    _, result = await post_event(http, url, "s")
    assert result.ok, result
    [request] = server.received
    assert request.headers["Host"] == f"xn--bcher-kva.example.test:{server.port}"
    assert request.path == "/hoök/ü"  # as the receiver decodes it


async def test_certificate_not_from_the_bundle_is_refused(
    receiver: StartReceiver, sender: SenderFactory
) -> None:
    server = await receiver(ca=trustme.CA())
    http = await sender()
    _, result = await post_event(http, server.url, "s")
    assert not result.ok
    assert result.status_code is None
    assert result.error is not None
    assert result.error.startswith("TLS certificate verify failed:"), result.error
    assert "certificate" in result.error
    assert server.received == []


async def test_redirect_is_a_failure_and_not_followed(
    receiver: StartReceiver, sender: SenderFactory
) -> None:
    async def redirect(request: web.Request, _n: int) -> web.StreamResponse:
        if request.path == "/hook":
            raise web.HTTPFound("/elsewhere")
        return web.Response(text="should never be asked")

    server = await receiver(redirect)
    http = await sender()
    _, result = await post_event(http, server.url, "s")
    assert (result.ok, result.status_code, result.error) == (False, 302, None)
    assert [r.path for r in server.received] == ["/hook"]


async def test_slow_answer_times_out(receiver: StartReceiver, sender: SenderFactory) -> None:
    async def hang(request: web.Request, _n: int) -> web.StreamResponse:
        await server.release.wait()
        return web.Response(text="too late")

    server = await receiver(hang)
    http = await sender(timeout_seconds=0.3)
    _, result = await post_event(http, server.url, "s")
    assert not result.ok
    assert (result.status_code, result.error) == (None, "timeout after 0.3 s")
    assert 250 <= result.duration_ms < 2000
    assert len(server.received) == 1


async def test_timeout_covers_reading_the_answer(
    receiver: StartReceiver, sender: SenderFactory
) -> None:
    async def headers_then_hang(request: web.Request, _n: int) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        await response.write(b"partial")
        await server.release.wait()
        return response

    server = await receiver(headers_then_hang)
    http = await sender(timeout_seconds=0.3)
    _, result = await post_event(http, server.url, "s")
    assert (result.ok, result.status_code, result.error) == (False, 200, "timeout after 0.3 s")
    assert 250 <= result.duration_ms < 2000


async def test_error_answer_keeps_one_kib_of_its_body(
    receiver: StartReceiver, sender: SenderFactory
) -> None:
    async def fail(request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(status=500, text="é" + "x" * 5000)

    server = await receiver(fail)
    http = await sender()
    _, result = await post_event(http, server.url, "s")
    assert (result.ok, result.status_code, result.error, result.retry_after) == (
        False,
        500,
        None,
        None,
    )
    assert result.response_excerpt == "é" + "x" * (EXCERPT_BYTES - 2)


async def test_huge_answer_is_not_downloaded(
    receiver: StartReceiver, sender: SenderFactory
) -> None:
    async def endless(request: web.Request, _n: int) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        await response.write(b"y" * 4096)
        await server.release.wait()  # never finishes the body
        return response

    server = await receiver(endless)
    http = await sender(timeout_seconds=5.0)
    _, result = await post_event(http, server.url, "s")
    assert (result.ok, result.status_code, result.error) == (True, 200, None)
    assert result.response_excerpt == "y" * EXCERPT_BYTES
    assert result.duration_ms < 4000  # returned after 1 KiB, not at the timeout


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (429, "7", 7.0),
        (503, "120", 120.0),
        (503, "soon", None),
        (500, "7", None),  # only 429 and 503 ask for time
    ],
)
async def test_retry_after(
    receiver: StartReceiver,
    sender: SenderFactory,
    status: int,
    retry_after: str,
    expected: float | None,
) -> None:
    async def busy(request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(status=status, headers={"Retry-After": retry_after})

    server = await receiver(busy)
    http = await sender()
    _, result = await post_event(http, server.url, "s")
    assert (result.ok, result.status_code, result.retry_after) == (False, status, expected)


async def test_connection_refused(sender: SenderFactory) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    http = await sender()
    _, result = await post_event(http, f"https://127.0.0.1:{port}/hook", "s")
    assert (result.ok, result.status_code, result.error) == (False, None, "connection refused")


async def test_unknown_host_and_bad_url_are_failed_attempts(sender: SenderFactory) -> None:
    http = await sender()
    # .invalid never resolves (RFC 6761): the resolver answers at once, online or not.
    _, result = await post_event(http, "https://nowhere.invalid/hook", "s")
    assert result.error is not None
    assert result.error.startswith("cannot resolve nowhere.invalid"), result.error
    for url in ("https://exa mple.com:99999/", "ftp://files.example.test/hook"):
        _, result = await post_event(http, url, "s")
        assert result.error is not None
        assert result.error.startswith("invalid URL"), result.error


async def test_keep_alive_reuses_one_connection(
    receiver: StartReceiver, sender: SenderFactory
) -> None:
    server = await receiver()
    http = await sender()
    for _ in range(5):
        _, result = await post_event(http, server.url, "s")
        assert result.ok, result
    assert len(server.received) == 5
    assert server.connections == 1


async def test_post_before_start_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match="start"):
        await HttpSender().post("https://example.com/", b"{}", {})


async def test_usable_as_async_context_manager(receiver: StartReceiver, ca_bundle: str) -> None:
    server = await receiver()
    async with HttpSender(allow_private_networks=True, ca_bundle=ca_bundle) as http:
        _, result = await post_event(http, server.url, "s")
    assert result.ok, result
    with pytest.raises(RuntimeError):
        await http.post(server.url, b"{}", {})


# -- the private-network rule, on the address actually connected to ----------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fd00::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://0.0.0.0/hook",
        "https://2130706433/hook",  # 127.0.0.1 as one number
        "https://[2002:a9fe:a9fe::1]/hook",  # 6to4 of 169.254.169.254
        "https://[::10.0.0.1]/hook",  # IPv4-compatible
    ],
)
async def test_private_ip_literals_are_refused_before_connecting(
    sender: SenderFactory, connect_calls: list[Any], url: str
) -> None:
    http = await sender(allow_private_networks=False, timeout_seconds=0.5)
    _, result = await post_event(http, url, "s")
    assert not result.ok
    assert result.error is not None
    assert result.error.startswith("refused: "), result.error
    assert result.error.endswith(REFUSAL), result.error
    assert result.duration_ms < 400  # refused, not timed out
    assert connect_calls == []


HOSTS = {"hooks.example.test": ["127.0.0.1"]}


@pytest.mark.parametrize(
    ("host", "hosts"),
    [
        ("127.0.0.1", None),
        ("::1", None),
        ("localhost", None),  # the system resolver
        ("127.1", None),  # libcurl reads it as 127.0.0.1, as inet_aton does
        ("0x7f000001", None),
        ("hooks.example.test", HOSTS),
    ],
)
async def test_loopback_targets_are_refused_without_a_connection(
    receiver: StartReceiver,
    sender: SenderFactory,
    connect_calls: list[Any],
    host: str,
    hosts: dict[str, list[str]] | None,
) -> None:
    server = await receiver(host="::1" if host == "::1" else "127.0.0.1")
    http = await sender(allow_private_networks=False, hosts=hosts)
    _, result = await post_event(http, server.url_via(host), "s")
    assert result.error == f"refused: {host} {REFUSAL}"
    assert result.status_code is None
    assert connect_calls == []
    assert server.connections == 0


@pytest.mark.parametrize(
    ("host", "hosts"),
    [("127.0.0.1", None), ("localhost", None), ("hooks.example.test", HOSTS)],
)
async def test_private_targets_are_reached_when_allowed(
    receiver: StartReceiver,
    sender: SenderFactory,
    connect_calls: list[Any],
    host: str,
    hosts: dict[str, list[str]] | None,
) -> None:
    server = await receiver()
    http = await sender(allow_private_networks=True, hosts=hosts)
    _, result = await post_event(http, server.url_via(host), "s")
    assert result.ok, result
    assert len(server.received) == 1
    connected = [address[:2] for address in connect_calls]
    assert ("127.0.0.1", server.port) in connected
    assert {address for address, _ in connected} <= {"127.0.0.1", "::1"}


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ((socket.AF_INET, "10.1.2.3"), False),
        ((socket.AF_INET, "93.184.216.34"), True),
        ((socket.AF_INET6, "::1"), False),
        ((socket.AF_INET6, "fe80::1"), False),
        ((socket.AF_INET, "100.64.0.1"), False),
        ((socket.AF_INET6, "2606:2800:220:1::1"), True),
    ],
)
def test_sockets_are_made_only_for_public_addresses(
    connect_calls: list[Any], address: tuple[int, str], allowed: bool
) -> None:
    """What libcurl's socket callback answers for each address a name resolved
    to (no connection is made here: libcurl would connect what it returns)."""
    family, ip = address
    curl_address = CurlAddress(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, (ip, 443))
    transfer = http_sender._Transfer(allow_private=False)
    try:
        made = transfer.open_socket(0, curl_address)
        if allowed:
            assert made >= 0
            os.close(made)
            assert (transfer.refused, connect_calls) == (False, [(ip, 443)])
        else:
            assert made == pycurl.SOCKET_BAD
            assert (transfer.refused, connect_calls) == (True, [])
    finally:
        transfer.curl.close()


class CurlAddress(NamedTuple):
    family: int
    socktype: int
    protocol: int
    addr: tuple[str, int]


async def test_a_name_with_private_and_public_addresses_connects_only_to_the_public(
    receiver: StartReceiver,
    sender: SenderFactory,
    connect_calls: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libcurl tries each address it resolved; the forbidden ones get no socket.
    (Loopback stands in for a public address: only 10.x is forbidden here.)"""
    monkeypatch.setattr(http_sender, "is_forbidden_address", lambda ip: ip.startswith("10."))
    server = await receiver()
    hosts = {"hooks.example.test": ["10.1.2.3", "127.0.0.1"]}
    http = await sender(allow_private_networks=False, hosts=hosts)
    _, result = await post_event(http, server.url_via("hooks.example.test"), "s")
    assert result.ok, result
    assert [address[0] for address in connect_calls] == ["127.0.0.1"]
    # The allowed address refusing the connection is told as that, not as the rule.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    _, result = await post_event(http, f"https://hooks.example.test:{port}/hook", "s")
    assert result.error == "connection refused"


async def test_cancelled_attempt_leaves_the_sender_usable(
    receiver: StartReceiver, sender: SenderFactory
) -> None:
    async def hang_first(request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            await server.release.wait()
        return web.Response(text="ok")

    server = await receiver(hang_first)
    http = await sender()
    attempt = asyncio.create_task(post_event(http, server.url, "s"))
    await eventually(lambda: len(server.received) == 1)
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    results = await asyncio.gather(*(post_event(http, server.url, "s") for _ in range(3)))
    assert [result.status_code for _, result in results] == [200, 200, 200]


async def test_closing_ends_attempts_in_flight_with_a_reason(
    receiver: StartReceiver, sender: SenderFactory
) -> None:
    async def hang(request: web.Request, _n: int) -> web.StreamResponse:
        await server.release.wait()
        return web.Response(text="too late")

    server = await receiver(hang)
    http = await sender()
    attempts = [asyncio.create_task(post_event(http, server.url, "s")) for _ in range(2)]
    await eventually(lambda: len(server.received) == 2)
    await http.close()
    for attempt in attempts:
        _, result = await attempt
        assert (result.ok, result.error) == (False, "the sender stopped before the attempt ended")
    with pytest.raises(RuntimeError, match="start"):
        await http.post(server.url, b"{}", {})


def test_many_attempts_at_once_on_uvloop(ca: trustme.CA, ca_bundle: str) -> None:
    """Production runs on uvloop: hundreds of POSTs at once over a bounded pool."""

    async def main() -> tuple[list[AttemptResult], int]:
        async with started_receivers(ca) as start:
            server = await start()
            async with HttpSender(
                allow_private_networks=True, ca_bundle=ca_bundle, max_connections=20
            ) as http:
                headers = {"Content-Type": "application/json"}
                results = await asyncio.gather(
                    *(http.post(server.url, b"{}", headers) for _ in range(300))
                )
            return list(results), server.connections

    results, connections = uvloop.run(main())
    assert [r.status_code for r in results] == [200] * 300, {r.error for r in results}
    assert connections <= 20


async def test_proxy_settings_of_the_environment_are_ignored(
    receiver: StartReceiver, sender: SenderFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("http_proxy", "https_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    server = await receiver()
    http = await sender()
    _, result = await post_event(http, server.url, "s")
    assert result.ok, result


async def test_a_bad_ca_bundle_stops_the_sender_at_start(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ssl.SSLError):
        await HttpSender(ca_bundle=bundle).start()
    with pytest.raises(FileNotFoundError):
        await HttpSender(ca_bundle=tmp_path / "missing.pem").start()


async def test_the_bundle_is_trusted_beside_the_system_cas(
    receiver: StartReceiver, ca_bundle: str
) -> None:
    """One private file holds the system's CAs and the bundle; it goes at close."""
    http = HttpSender(allow_private_networks=True, ca_bundle=ca_bundle)
    await http.start()
    assert http._trust is not None
    [combined] = [value for option, value in http._trust.options if option == pycurl.CAINFO]
    text = Path(combined).read_text()
    system = ssl.get_default_verify_paths().cafile
    if system:
        assert Path(system).read_text().strip() in text
    assert Path(ca_bundle).read_text().strip() in text
    server = await receiver()
    _, result = await post_event(http, server.url, "s")
    assert result.ok, result
    await http.close()
    assert not Path(combined).exists()


async def test_a_url_that_cannot_be_made_ascii_is_a_failed_attempt(sender: SenderFactory) -> None:
    http = await sender()
    _, result = await post_event(http, "https://xn--\u00fc.example/hook", "s")
    assert result.error is not None
    assert result.error.startswith("invalid URL"), result.error


async def test_a_kept_alive_connection_closed_without_an_answer_is_tried_again_at_once(
    receiver: StartReceiver, sender: SenderFactory
) -> None:
    """libcurl's rule, kept on purpose: a request on a reused connection that
    the receiver closes without a byte of answer is sent once more on a new
    connection within the same attempt (Go's net/http does the same for
    requests with an idempotency key, which `webhook-id` is). A receiver
    that processed it before closing sees it twice, with the same id."""

    async def close_the_second(request: web.Request, n: int) -> web.StreamResponse:
        if n == 2:
            assert request.transport is not None
            request.transport.close()
        return web.Response(text="ok")

    server = await receiver(close_the_second)
    http = await sender()
    first, result = await post_event(http, server.url, "s")
    assert result.ok, result
    second, result = await post_event(http, server.url, "s")
    assert (result.ok, result.status_code) == (True, 200), result
    assert [r.body for r in server.received] == [first, second, second]
    assert server.connections == 2
