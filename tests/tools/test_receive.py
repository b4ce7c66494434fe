"""`edgesense receive`: a real aiohttp receiver on a free port, sent real
requests (signed right, signed wrong, replayed), and fed by the cluster."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import pytest
import standardwebhooks

from edgesense.common.signing import sign_body, signature_headers
from edgesense.tools.errors import CannotConnect
from edgesense.tools.receive import ReceiverOptions, WebhookReceiver, banner
from tests.integration.cluster import Cluster, reading
from tests.tools.conftest import api_env, clean_env, cli_command, run_cli

SECRET = "your_shared_secret"
EVENT = {
    "event": "device.data",
    "timestamp": "2025-07-24T10:35:17Z",
    "deviceId": "edge-node-321",
    "payload": {"temperature": 75.3},
    "eventId": "evt_1",
    "gatewayId": "gw-1",
    "webhookId": "wh_1",
}
BODY = json.dumps(EVENT).encode()
LINE = re.compile(r"\d\d:\d\d:\d\d  (.*)")


class Printed:
    """The receiver's lines; `wait_for` waits until one contains a text."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = asyncio.Event()

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self._changed.set()

    async def wait_for(self, needle: str, seconds: float = 20.0) -> str:
        async with asyncio.timeout(seconds):
            while True:
                self._changed.clear()
                if found := [line for line in self.lines if needle in line]:
                    return found[0]
                await self._changed.wait()


class StartReceiver(Protocol):
    async def __call__(self, **options: Any) -> tuple[WebhookReceiver, Printed]: ...


@pytest.fixture
async def start() -> AsyncIterator[StartReceiver]:
    """Starts receivers on free ports (ReceiverOptions as keywords); stops them after."""
    started: list[WebhookReceiver] = []

    async def start_receiver(**options: Any) -> tuple[WebhookReceiver, Printed]:
        printed = Printed()
        receiver = WebhookReceiver(ReceiverOptions(port=0, **options), printed)
        await receiver.start()
        started.append(receiver)
        return receiver, printed

    yield start_receiver
    for receiver in started:
        await receiver.stop()


def signed(secret: str = SECRET, body: bytes = BODY, at: float | None = None) -> dict[str, str]:
    stamp = int(time.time() if at is None else at)
    return signature_headers(secret, "dlv_1", "device.data", body, stamp)


async def post(url: str, headers: dict[str, str], body: bytes = BODY) -> int:
    async with httpx.AsyncClient() as http:
        return (await http.post(url, content=body, headers=headers)).status_code


async def test_a_signed_request_is_printed_and_answered_200(start: StartReceiver) -> None:
    receiver, printed = await start(secret=SECRET)
    assert receiver.url.startswith("http://127.0.0.1:")
    assert await post(receiver.url, signed()) == 200
    [line] = printed.lines
    match = LINE.fullmatch(line)
    assert match is not None, line
    assert match.group(1).split("  ") == [
        "device.data", "edge-node-321", "evt_1", "dlv_1", "signature ok", "-> 200",
    ]  # fmt: skip
    # The same delivery again (a retry, a redelivery) is marked.
    assert await post(receiver.url, signed()) == 200
    assert printed.lines[1].endswith("-> 200  (seen 2 times)")


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda h: h | {"X-EdgeSense-Signature": sign_body("wrong", BODY)}, "X-EdgeSense"),
        (lambda h: h | {"webhook-signature": "v1,AAAA"}, "webhook-signature does not match"),
        (lambda h: {k: v for k, v in h.items() if k != "webhook-id"}, "no webhook-id"),
        (lambda h: h | {"webhook-id": "dlv_other"}, "webhook-signature does not match"),
        (lambda h: signed(at=time.time() - 400), "more than 5 minutes"),
        (lambda h: signed(at=time.time() + 400), "more than 5 minutes"),
        (lambda h: signed(secret="another"), "does not match"),
    ],
)
async def test_a_bad_signature_is_answered_401(
    start: StartReceiver, tamper: Callable[[dict[str, str]], dict[str, str]], reason: str
) -> None:
    receiver, printed = await start(secret=SECRET)
    assert await post(receiver.url, tamper(signed())) == 401
    [line] = printed.lines
    assert "BAD SIGNATURE (" in line
    assert reason in line
    assert line.endswith("-> 401")


async def test_any_of_several_signatures_may_match(start: StartReceiver) -> None:
    receiver, printed = await start(secret=SECRET)
    headers = signed(at=time.time() - 270)  # old, well inside the 5-minute window
    headers["webhook-signature"] = f"v1,bm90IGl0 {headers['webhook-signature']} v1a,xyz"
    assert await post(receiver.url, headers) == 200
    assert "signature ok" in printed.lines[0]


async def test_the_reference_library_and_a_whsec_secret(start: StartReceiver) -> None:
    """Standard Webhooks signatures made by the reference library verify here."""
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    receiver, printed = await start(secret=secret)
    now = datetime.now(UTC)
    headers = {
        "X-EdgeSense-Signature": sign_body(secret, BODY),
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": standardwebhooks.Webhook(secret).sign("msg_1", now, BODY.decode()),
    }
    assert await post(receiver.url, headers) == 200
    assert "signature ok" in printed.lines[0]


async def test_status_and_fail_rate(start: StartReceiver) -> None:
    broken, printed = await start(secret=SECRET, status=503)
    assert await post(broken.url, signed()) == 503
    assert await post(broken.url, signed("wrong")) == 503
    assert printed.lines[0].endswith("signature ok  -> 503")

    flaky, printed = await start(secret=SECRET, fail_rate=1.0)
    assert await post(flaky.url, signed()) == 500
    assert await post(flaky.url, signed("wrong")) == 401

    unchecked, printed = await start(path="/hooks/in")
    assert unchecked.url.endswith("/hooks/in")
    assert await post(unchecked.url, {}) == 200
    assert "not verified (no --secret)" in printed.lines[0]


async def test_hostile_values_are_printed_escaped(start: StartReceiver) -> None:
    receiver, printed = await start(secret=SECRET)
    body = json.dumps({**EVENT, "deviceId": "dev\x1b[2J\nfake line"}).encode()
    assert await post(receiver.url, signed(body=body), body) == 200
    assert "dev\\x1b[2J\\x0afake line" in printed.lines[0]
    assert "\x1b" not in printed.lines[0]
    assert "\n" not in printed.lines[0]
    assert await post(receiver.url, signed(body=b"[1, 2]"), b"[1, 2]") == 200
    assert "(body is not JSON)" in printed.lines[1]


async def test_a_taken_port_is_cannot_connect(start: StartReceiver) -> None:
    first, _ = await start()
    port = int(first.url.rsplit(":", 1)[1].split("/")[0])
    second = WebhookReceiver(ReceiverOptions(port=port))
    with pytest.raises(CannotConnect, match=f"cannot listen on 127.0.0.1:{port}"):
        await second.start()


async def test_end_to_end_the_cluster_delivers_to_the_receiver(
    cluster: Cluster, start: StartReceiver
) -> None:
    receiver, printed = await start(secret="e2e-secret")
    registered = await run_cli(
        "webhooks", "register", "--url", receiver.url, "--events", "device.data",
        "--secret", "-", "--json", env=api_env(cluster), stdin="e2e-secret\n",
    )  # fmt: skip
    assert registered.code == 0, registered.err
    hook = json.loads(registered.out)["webhookId"]
    await cluster.known_to_delivery(hook)
    event = reading(device="edge-node-7")
    await cluster.publish([event])
    line = await printed.wait_for(event.event_id)
    assert "device.data  edge-node-7" in line
    assert line.endswith("signature ok  -> 200")
    [delivery] = await cluster.wait_deliveries(hook, "succeeded")
    assert str(delivery["deliveryId"]) in line


async def test_the_command_prints_its_url_and_stops_on_ctrl_c() -> None:
    process = await asyncio.create_subprocess_exec(
        *cli_command("receive", "--port", "0", "--secret", SECRET, "--path", "/in"),
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(20):
            first = (await process.stdout.readline()).decode()
            found = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+/in)\n", first)
            assert found is not None, first
            banner = [(await process.stdout.readline()).decode() for _ in range(3)]
            assert f"--url {found.group(1)} " in banner[1]
            # The command to copy has the secret this receiver checks, not a placeholder.
            assert banner[1].endswith(f" --secret {SECRET}\n")
            assert "dev mode" in banner[2]
            assert await post(found.group(1), signed()) == 200
            while "dlv_1" not in (line := (await process.stdout.readline()).decode()):
                assert line, "the receiver stopped"
            assert line.rstrip().endswith("signature ok  -> 200")
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_the_banner_suggests_the_secret_given_or_a_placeholder() -> None:
    url = "http://127.0.0.1:9000/"
    given = banner(url, "it's mine")
    assert given[2].endswith(""" --secret 'it'"'"'s mine'""")  # quoted for the shell
    assert not any("YOUR_SECRET" in line or "not verified" in line for line in given)
    without = banner(url, None)
    assert without[2].endswith(" --secret YOUR_SECRET")
    assert "restart this with --secret" in without[1]
    assert "no --secret: signatures are not verified" in without
