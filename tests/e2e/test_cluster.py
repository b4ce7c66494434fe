"""End to end, the whole cluster as real processes (`edgesense up`): register
over REST, publish over MQTT, receive signed HTTPS POSTs; failure, disable,
hold and enable; a restart that keeps everything; a gateway's Last Will; the
devices view (GET /api/devices) following MQTT data, status and a Last Will."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import trustme
from aiohttp import web
from standardwebhooks.webhooks import Webhook as StandardWebhook

from tests.e2e.conftest import PROJECT, UpCluster
from tests.support.broker import Gateway, Mosquitto, gateway_with_will
from tests.support.receivers import Receiver
from tests.support.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")


def guide_verify(secret: str, payload: str, signature: str) -> bool:
    # The integration guide's verify_signature, typed.
    computed = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(computed, signature)


@pytest_asyncio.fixture(loop_scope="module")
async def receiver(ca: trustme.CA) -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start(ca)
    yield r
    await r.stop()


def topic(cluster: UpCluster, gateway: str, device: str, kind: str) -> str:
    return f"{cluster.env['EDGESENSE_MQTT_TOPIC_PREFIX']}/{PROJECT}/{gateway}/{device}/{kind}"


async def publish(broker: Mosquitto, messages: list[tuple[str, bytes]]) -> None:
    gateway = Gateway(broker.port, "e2e-gw-" + secrets.token_hex(3))
    try:
        await gateway.publish([(t, p, None) for t, p in messages])
    finally:
        gateway.close()


async def wait_status(
    cluster: UpCluster, webhook_id: str, status: str, count: int = 1
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def enough() -> bool:
        nonlocal found
        answer = await cluster.get(
            f"/api/webhooks/{webhook_id}/deliveries", status=status, pageSize=500
        )
        found = answer["deliveries"]
        assert isinstance(found, list)
        return len(found) >= count

    await eventually(enough, 60, f"{count} {status} deliveries", interval=0.1)
    return found


async def test_mqtt_to_signed_https_post(
    cluster: UpCluster, broker: Mosquitto, receiver: Receiver
) -> None:
    secret = "your_shared_secret"
    webhook_id = await cluster.register(receiver.url, ["device.data"], secret)
    device = "edge-node-" + secrets.token_hex(3)
    await publish(
        broker, [(topic(cluster, "gw-1", device, "data"), b'{"temperature": 75.3, "count": 5}')]
    )
    [got] = await receiver.wait_for(1, seconds=30)
    body = json.loads(got.body)
    assert body["event"] == "device.data"
    assert body["deviceId"] == device
    assert body["gatewayId"] == "gw-1"
    assert body["webhookId"] == webhook_id
    assert body["payload"] == {"temperature": 75.3, "count": 5}
    assert body["eventId"].startswith("evt_")
    assert guide_verify(secret, got.body.decode(), got.headers["X-EdgeSense-Signature"])
    StandardWebhook(secret.encode()).verify(
        got.body, {k.lower(): v for k, v in got.headers.items()}
    )
    [record] = await wait_status(cluster, webhook_id, "succeeded")
    assert record["deliveryId"] == got.headers["X-EdgeSense-Delivery"]


async def test_failing_receiver_is_disabled_held_and_enabled(
    cluster: UpCluster, broker: Mosquitto, receiver: Receiver
) -> None:
    healthy = False

    async def answer(_request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(status=200 if healthy else 500)

    receiver.behaviour = answer
    webhook_id = await cluster.register(receiver.url, ["device.alert"], "s3cret")
    device = "pump-" + secrets.token_hex(3)
    await publish(
        broker, [(topic(cluster, "gw-1", device, "alert"), b'{"metric": "pressure", "value": 9.1}')]
    )
    await wait_status(cluster, webhook_id, "failed")

    async def disabled() -> bool:
        webhook = await cluster.get(f"/api/webhooks/{webhook_id}")
        return bool(webhook["status"] == "disabled")

    await eventually(disabled, 30, "the webhook disabled", interval=0.1)
    await publish(
        broker,
        [
            (topic(cluster, "gw-1", device, "alert"), b'{"n": 1}'),
            (topic(cluster, "gw-1", device, "alert"), b'{"n": 2}'),
        ],
    )
    await wait_status(cluster, webhook_id, "held", 2)
    attempts_before = len(receiver.received)

    healthy = True
    async with httpx_client(cluster) as http:
        enabled = await http.post(f"/api/webhooks/{webhook_id}/enable")
    assert enabled.json() == {"webhookId": webhook_id, "status": "active"}
    succeeded = await wait_status(cluster, webhook_id, "succeeded", 2)
    assert len(succeeded) == 2
    arrived = [json.loads(r.body)["payload"] for r in receiver.received[attempts_before:]]
    assert arrived == [{"n": 1}, {"n": 2}]


async def test_readings_over_mqtt_crossing_a_rule_become_signed_alerts(
    cluster: UpCluster, broker: Mosquitto, receiver: Receiver
) -> None:
    """Issue 13 end to end: a rule over REST, readings over MQTT through the
    bridge, `triggered` and `resolved` device.alert POSTs, signed."""
    secret = "alerts_secret"
    webhook_id = await cluster.register(receiver.url, ["device.alert"], secret)
    async with httpx_client(cluster) as http:
        answer = await http.post(
            "/api/rules",
            json={
                "name": "Boiler too hot",
                "field": "temperature",
                "operator": "gt",
                "threshold": 80,
                "severity": "critical",
            },
        )
        assert answer.status_code == 200, answer.text
    device = "boiler-" + secrets.token_hex(3)
    data = topic(cluster, "gw-1", device, "data")

    def states() -> list[str]:
        return [
            json.loads(r.body)["payload"]["state"]
            for r in receiver.received
            if json.loads(r.body)["deviceId"] == device
        ]

    async def triggered() -> bool:  # delivery follows the registry's rule stream
        if states():
            return True
        await publish(broker, [(data, b'{"temperature": 95.5}')])
        return False

    await eventually(triggered, 30, "the rule to judge the readings", interval=0.5)
    await publish(broker, [(data, b'{"temperature": 97}'), (data, b'{"temperature": 60}')])
    await eventually(lambda: len(states()) == 2, 30, "the alert resolved")
    assert states() == ["triggered", "resolved"]
    for got in receiver.received:
        body = json.loads(got.body)
        if body["deviceId"] != device:
            continue
        assert (body["event"], body["webhookId"], body["payload"]["source"]) == (
            "device.alert",
            webhook_id,
            "rule",
        )
        assert guide_verify(secret, got.body.decode(), got.headers["X-EdgeSense-Signature"])
    resolved = json.loads(receiver.received[-1].body)["payload"]
    assert (resolved["value"], resolved["reason"], resolved["severity"]) == (
        60,
        "cleared",
        "critical",
    )


def status_topic(cluster: UpCluster, gateway_id: str) -> str:
    return f"{cluster.env['EDGESENSE_MQTT_TOPIC_PREFIX']}/{PROJECT}/{gateway_id}/status"


async def test_gateway_last_will_becomes_device_status_offline(
    cluster: UpCluster, broker: Mosquitto, receiver: Receiver
) -> None:
    webhook_id = await cluster.register(receiver.url, ["device.status"], "s3cret")
    gateway_id = "gw-will-" + secrets.token_hex(3)
    async with gateway_with_will(broker, gateway_id, status_topic(cluster, gateway_id)) as gateway:
        await receiver.wait_for(1, seconds=30)
        gateway.kill()  # no DISCONNECT: the broker publishes the Will
        received = await receiver.wait_for(2, seconds=60)
    bodies = [json.loads(r.body) for r in received]
    assert [(b["event"], b["deviceId"], b["payload"]["status"]) for b in bodies] == [
        ("device.status", gateway_id, "online"),
        ("device.status", gateway_id, "offline"),
    ]
    await wait_status(cluster, webhook_id, "succeeded", 2)


async def device_now(cluster: UpCluster, device_id: str) -> dict[str, Any] | None:
    """GET /api/devices/{deviceId}: the device, or None while it is not in the view."""
    async with httpx.AsyncClient(base_url=cluster.api, headers=cluster.auth, timeout=10) as http:
        answer = await http.get(f"/api/devices/{device_id}")
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def wait_device(cluster: UpCluster, device_id: str, **expected: object) -> dict[str, Any]:
    """The device's detail once its Device has every `expected` member."""
    found: dict[str, Any] = {}

    async def matches() -> bool:
        nonlocal found
        found = await device_now(cluster, device_id) or {}
        device = found.get("device", {})
        return all(device.get(name) == value for name, value in expected.items())

    await eventually(matches, 30, f"device {device_id} with {expected}", interval=0.1)
    return found


async def test_devices_view_follows_mqtt_data_status_and_last_will(
    cluster: UpCluster, broker: Mosquitto
) -> None:
    """Issue 16's devices backend end to end: readings and status published over
    MQTT show in GET /api/devices; a gateway's Last Will takes it offline."""
    gateway_id = "gw-view-" + secrets.token_hex(3)
    device_id = "sensor-view-" + secrets.token_hex(3)
    await publish(
        broker,
        [
            (topic(cluster, gateway_id, device_id, "status"), b"online"),
            (topic(cluster, gateway_id, device_id, "data"), b'{"temperature": 21.5}'),
        ],
    )
    detail = await wait_device(
        cluster, device_id, status="online", lastReadings={"temperature": 21.5}
    )
    assert detail["device"]["gatewayId"] == gateway_id
    assert detail["device"]["kind"] == "device"
    assert sorted(e["event"] for e in detail["recentEvents"]) == ["device.data", "device.status"]
    listing = await cluster.get("/api/devices", gatewayId=gateway_id)
    assert [d["deviceId"] for d in listing["devices"]] == [device_id]
    assert listing["online"] >= 1

    async with gateway_with_will(broker, gateway_id, status_topic(cluster, gateway_id)) as gateway:
        online = await wait_device(cluster, gateway_id, status="online")
        assert online["device"]["kind"] == "gateway"
        gateway.kill()  # no DISCONNECT: the broker publishes the Will
        offline = await wait_device(cluster, gateway_id, status="offline")
    assert offline["device"]["lastEvent"] == "device.status"
    assert offline["recentEvents"][0]["payload"] == {"status": "offline"}
    offline_now = await cluster.get("/api/devices", status="offline", gatewayId=gateway_id)
    assert [d["deviceId"] for d in offline_now["devices"]] == [gateway_id]


async def test_restart_keeps_webhooks_pending_deliveries_and_attempts(
    cluster: UpCluster, broker: Mosquitto, ca: trustme.CA
) -> None:
    # Runs last in the module: it restarts the cluster the others share.
    release = asyncio.Event()

    async def fail_until_released(_request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(status=200 if release.is_set() else 503, headers={"Retry-After": "2"})

    receiver = Receiver(fail_until_released)
    await receiver.start(ca)
    try:
        webhook_id = await cluster.register(receiver.url, ["device.data"], "s3cret")
        await publish(broker, [(topic(cluster, "gw-1", "restart-dev", "data"), b'{"v": 1}')])
        pending: dict[str, Any] = {}

        async def attempted() -> bool:
            nonlocal pending
            [pending] = await wait_status(cluster, webhook_id, "pending")
            return bool(pending["attempts"])

        await eventually(attempted, 30, "a first attempt", interval=0.1)
        assert pending["attempts"][0]["statusCode"] == 503

        assert await cluster.stop() == 0
        release.set()
        await cluster.start()

        hook = await cluster.get(f"/api/webhooks/{webhook_id}")
        assert hook["status"] == "active"
        [done] = await wait_status(cluster, webhook_id, "succeeded")
        assert done["deliveryId"] == pending["deliveryId"]
        codes = [a.get("statusCode") for a in done["attempts"]]
        assert codes[0] == 503
        assert codes[-1] == 200
    finally:
        await receiver.stop()


def httpx_client(cluster: UpCluster) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=cluster.api, headers=cluster.auth, timeout=10)
