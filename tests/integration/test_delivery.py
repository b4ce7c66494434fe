"""Delivery end to end, in-process: publish as the bridge does, receive at
real HTTP(S) receivers, inspect over REST. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import trustme
from aiohttp import web
from standardwebhooks.webhooks import Webhook as StandardWebhook

from edgesense.common.auth import bearer_metadata
from edgesense.delivery.server import start_delivery
from edgesense.v1 import delivery_pb2, delivery_pb2_grpc
from tests.integration.cluster import Cluster, reading
from tests.support.receivers import Receiver
from tests.support.waiting import eventually


# The integration guide's snippet, verbatim.
def verify_signature(secret, payload, signature):  # type: ignore[no-untyped-def]
    computed = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(computed, signature)


def guide_verifies(secret: str, payload: str, signature: str) -> bool:
    return bool(verify_signature(secret, payload, signature))  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def cluster_env(cluster_env: dict[str, str], ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return {**cluster_env, "EDGESENSE_CA_BUNDLE": str(bundle)}


async def test_signed_https_delivery_verifies_both_ways(cluster: Cluster, ca: trustme.CA) -> None:
    receiver = Receiver()
    url = await receiver.start(ca)
    try:
        secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
        webhook_id = await cluster.register(url, secret=secret)
        event = reading()
        confirmations = await cluster.publish([event])
        assert [(c.accepted, c.duplicates) for c in confirmations] == [(1, 0)]
        [got] = await receiver.wait_for(1)
    finally:
        await receiver.stop()

    body = json.loads(got.body)
    assert list(body) == [
        "event",
        "timestamp",
        "deviceId",
        "payload",
        "eventId",
        "gatewayId",
        "webhookId",
    ]
    assert body == {
        "event": "device.data",
        "timestamp": "2025-07-24T10:35:17Z",
        "deviceId": "edge-node-321",
        "payload": {"temperature": 75.3, "humidity": 42.5},
        "eventId": event.event_id,
        "gatewayId": "gw-1",
        "webhookId": webhook_id,
    }
    headers = got.headers
    assert headers["Content-Type"] == "application/json"
    assert headers["X-EdgeSense-Event"] == "device.data"
    assert headers["X-EdgeSense-Delivery"].startswith("dlv_")
    assert guide_verifies(secret, got.body.decode(), headers["X-EdgeSense-Signature"])
    assert not guide_verifies("another", got.body.decode(), headers["X-EdgeSense-Signature"])
    StandardWebhook(secret).verify(got.body, {k.lower(): v for k, v in headers.items()})

    [record] = await cluster.wait_deliveries(webhook_id, "succeeded")
    assert record["deliveryId"] == headers["X-EdgeSense-Delivery"]
    assert record["event"] == "device.data"
    assert record["deviceId"] == "edge-node-321"
    [attempt] = record["attempts"]
    assert attempt["attempt"] == 1
    assert attempt["statusCode"] == 200


async def test_publishing_the_same_event_twice_creates_nothing_new(
    cluster: Cluster, receiver: Receiver
) -> None:
    webhook_id = await cluster.register(receiver.url)
    event = reading()
    first = await cluster.publish([event])
    again = await cluster.publish([event, event])
    assert (first[0].accepted, first[0].duplicates) == (1, 0)
    assert (again[0].accepted, again[0].duplicates) == (0, 2)
    await receiver.wait_for(1)
    assert len(await cluster.deliveries(webhook_id)) == 1


async def test_matching_by_event_type_project_and_device(
    cluster: Cluster, receiver: Receiver
) -> None:
    other = Receiver()
    await other.start()
    try:
        data_hook = await cluster.register(
            receiver.url, events=["device.data"], deviceIds=["dev-1"]
        )
        alerts_only = await cluster.register(other.url, events=["device.alert"])
        other_project = await cluster.register(
            other.url, events=["device.data"], project="project-b"
        )
        await cluster.publish(
            [reading(device="dev-1"), reading(device="dev-2"), reading(project="project-b")]
        )
        await receiver.wait_for(1)
        await other.wait_for(1)
        assert [json.loads(r.body)["deviceId"] for r in receiver.received] == ["dev-1"]
        assert len(await cluster.deliveries(data_hook)) == 1
        assert await cluster.deliveries(alerts_only) == []
        assert len(await cluster.deliveries(other_project, project="project-b")) == 1
        # Another project's webhook is not found.
        answer = await cluster.http.get(
            f"/api/webhooks/{other_project}/deliveries", headers=cluster.auth()
        )
        assert answer.status_code == 404
    finally:
        await other.stop()


async def test_retries_then_failed_disabled_held_and_enable_sends_oldest_first(
    cluster: Cluster, receiver: Receiver
) -> None:
    healthy = False

    async def failing_until_fixed(_request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(
            text="ok" if healthy else "broken " * 1000, status=200 if healthy else 500
        )

    receiver.behaviour = failing_until_fixed
    webhook_id = await cluster.register(receiver.url)
    await cluster.publish([reading()])
    tries = await receiver.wait_for(6)

    [record] = await cluster.wait_deliveries(webhook_id, "failed")
    attempts = record["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4, 5, 6]
    assert all(a["statusCode"] == 500 for a in attempts)
    assert len(attempts[0]["responseBody"].encode()) <= 1024 + 3
    assert "6 attempts failed" in str(record["statusReason"])
    gaps = [b.at - a.at for a, b in itertools.pairwise(tries)]
    assert gaps[-1] > gaps[0], gaps  # exponential: the last wait is the longest
    assert gaps[0] >= 0.025  # at least half the 0.05 s base
    assert len({t.delivery_id for t in tries}) == 1  # the same delivery id on every retry

    async def disabled() -> bool:
        return bool((await cluster.webhook(webhook_id))["status"] == "disabled")

    await eventually(disabled, 15, "the webhook disabled")
    assert "6 attempts failed" in str((await cluster.webhook(webhook_id))["disabledReason"])

    held_events = [reading(values={"n": i}) for i in range(5)]
    for event in held_events:  # one by one: their order is their age
        await cluster.publish([event])
    records = await cluster.deliveries(webhook_id, status="held")
    assert len(records) == 5
    assert len(receiver.received) == 6  # nothing sent while disabled

    healthy = True
    enabled = await cluster.http.post(f"/api/webhooks/{webhook_id}/enable", headers=cluster.auth())
    assert enabled.json() == {"webhookId": webhook_id, "status": "active"}
    await receiver.wait_for(6 + 5)

    sent = await cluster.wait_deliveries(webhook_id, "succeeded", 5)
    by_start = sorted(sent, key=lambda r: r["attempts"][0]["startedAt"])
    assert [r["eventId"] for r in by_start] == [e.event_id for e in held_events]
    # The failed delivery stays failed until someone redelivers it.
    assert len(await cluster.deliveries(webhook_id, status="failed")) == 1


async def test_redeliver_sends_again_with_the_same_id(cluster: Cluster, receiver: Receiver) -> None:
    webhook_id = await cluster.register(receiver.url)
    await cluster.publish([reading()])
    [first] = await receiver.wait_for(1)

    await cluster.wait_deliveries(webhook_id, "succeeded")
    answer = await cluster.http.post(
        f"/api/deliveries/{first.delivery_id}/redeliver", headers=cluster.auth()
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "pending"
    _, second = await receiver.wait_for(2)
    assert second.delivery_id == first.delivery_id
    assert second.body == first.body
    other = await cluster.http.post(
        f"/api/deliveries/{first.delivery_id}/redeliver", headers=cluster.auth("project-b")
    )
    assert other.status_code == 404


async def test_redirects_count_as_failures_and_are_not_followed(
    cluster: Cluster, receiver: Receiver
) -> None:
    async def redirect_once(_request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            return web.Response(status=302, headers={"Location": receiver.url + "/elsewhere"})
        return web.Response(text="ok")

    receiver.behaviour = redirect_once
    webhook_id = await cluster.register(receiver.url)
    await cluster.publish([reading()])
    await receiver.wait_for(2)

    [record] = await cluster.wait_deliveries(webhook_id, "succeeded")
    assert [a.get("statusCode") for a in record["attempts"]] == [302, 200]
    assert all(r.headers.get("X-EdgeSense-Delivery") for r in receiver.received)


async def test_a_receiver_slower_than_the_timeout_fails_the_attempt(
    cluster: Cluster, receiver: Receiver
) -> None:
    async def slow_once(_request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            await asyncio.sleep(3)  # the timeout is 1 s
        return web.Response(text="ok")

    receiver.behaviour = slow_once
    webhook_id = await cluster.register(receiver.url)
    await cluster.publish([reading()])

    [record] = await cluster.wait_deliveries(webhook_id, "succeeded")
    first, second = record["attempts"]
    assert "timeout" in first["error"]
    assert "statusCode" not in first
    assert 900 <= first["durationMs"] < 2500
    assert second["statusCode"] == 200


async def test_retry_after_is_honoured(cluster: Cluster, receiver: Receiver) -> None:
    async def busy_once(_request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(text="ok")

    receiver.behaviour = busy_once
    await cluster.register(receiver.url)
    await cluster.publish([reading()])
    first, second = await receiver.wait_for(2)
    # The base delay is 0.05 s; Retry-After asked for 1 s.
    assert second.at - first.at >= 0.95


async def test_list_pages_and_filters(cluster: Cluster, receiver: Receiver) -> None:
    webhook_id = await cluster.register(receiver.url)
    await cluster.publish([reading() for _ in range(7)])
    await receiver.wait_for(7)

    await cluster.wait_deliveries(webhook_id, "succeeded", 7)
    seen: list[str] = []
    token = ""
    while True:
        params: dict[str, str | int] = {"pageSize": 3}
        if token:
            params["pageToken"] = token
        answer = await cluster.http.get(
            f"/api/webhooks/{webhook_id}/deliveries", params=params, headers=cluster.auth()
        )
        page = answer.json()
        seen += [d["deliveryId"] for d in page["deliveries"]]
        token = page["nextPageToken"]
        if not token:
            break
    assert len(seen) == len(set(seen)) == 7
    assert await cluster.deliveries(webhook_id, status="held") == []
    bad = await cluster.http.get(
        f"/api/webhooks/{webhook_id}/deliveries", params={"status": "lost"}, headers=cluster.auth()
    )
    assert bad.status_code == 400
    assert bad.json()["message"].startswith("status:")
    bad_token = await cluster.http.get(
        f"/api/webhooks/{webhook_id}/deliveries",
        params={"pageToken": "nonsense"},
        headers=cluster.auth(),
    )
    assert bad_token.status_code == 400


async def test_a_failing_and_a_hanging_receiver_do_not_hold_up_a_healthy_one(
    cluster: Cluster,
) -> None:
    release = asyncio.Event()

    async def fail(_request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(status=500)

    async def hang(_request: web.Request, _n: int) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="late")

    failing, hanging, healthy = Receiver(fail), Receiver(hang), Receiver()
    for r in (failing, hanging, healthy):
        await r.start()
    try:
        await cluster.register(failing.url, project="project-b")
        await cluster.register(hanging.url, events=["device.alert"])
        healthy_hook = await cluster.register(healthy.url)
        n = 200
        alerts = []
        for _ in range(n):
            alert = reading()
            alert.ClearField("readings")
            alert.alert.details.update({"threshold": 80})
            alerts.append(alert)
        await cluster.publish([reading(project="project-b") for _ in range(n)] + alerts)
        await cluster.publish([reading() for _ in range(n)])
        await healthy.wait_for(n, seconds=30)
        # The hanging receiver's requests are still open: the healthy one did
        # not wait behind them, nor behind the failing one's retries.
        assert hanging.in_progress > 0
        assert len(healthy.deliveries()) == n

        records = await cluster.wait_deliveries(healthy_hook, "succeeded", n)
        assert len(records) == n
    finally:
        release.set()
        for r in (failing, hanging, healthy):
            await r.stop()


async def test_the_cluster_retries_on_its_fast_schedule(
    cluster: Cluster, receiver: Receiver
) -> None:
    """cluster_env's 0.05 s retry base reaches the running delivery service:
    the first retry comes 25-50 ms after a failed attempt (plus scheduling
    slack), where the default base would make it wait 15-30 s."""

    async def fail_once(_request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500 if n == 1 else 204)

    receiver.behaviour = fail_once
    webhook_id = await cluster.register(receiver.url)
    await cluster.publish([reading()])
    first, retry = await receiver.wait_for(2, seconds=5)
    assert 0.025 <= retry.at - first.at < 2.0
    assert first.delivery_id == retry.delivery_id
    await cluster.wait_deliveries(webhook_id, "succeeded", 1)


async def test_stopping_ends_open_publish_streams_once_what_was_read_is_confirmed(
    cluster: Cluster,
) -> None:
    delivery = await start_delivery(cluster.settings, "127.0.0.1:0")
    sending: asyncio.Queue[delivery_pb2.PublishRequest | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[delivery_pb2.PublishRequest]:
        while (request := await sending.get()) is not None:
            yield request

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{delivery.port}") as channel:
            call = delivery_pb2_grpc.DeliveryStub(channel).Publish(
                requests(), metadata=bearer_metadata(cluster.settings.service_token())
            )
            answers = call.__aiter__()
            await sending.put(delivery_pb2.PublishRequest(batch_id=1, events=[reading()]))
            first = await asyncio.wait_for(anext(answers), 10)
            assert (first.batch_id, first.accepted) == (1, 1)
            began = asyncio.get_running_loop().time()
            await delivery.stop(grace=10)  # the bridge never closes its stream
            assert asyncio.get_running_loop().time() - began < 5
            assert [a async for a in answers] == []  # ended, nothing lost
            assert await call.code() == grpc.StatusCode.OK
    finally:
        await sending.put(None)
