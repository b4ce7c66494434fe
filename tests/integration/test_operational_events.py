"""Operational events end to end with real servers and receivers, on SQLite
and PostgreSQL: webhook.disabled and webhook.enabled reach the project's
other subscribers (device filters aside) and never their subject; a webhook
disabled by failing an operational event announces nothing (no loops); an
event the registry committed but did not publish before it stopped is
published by the next registry, once."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import grpc
import jsonschema
import pytest
from sqlalchemy import insert

from edgesense.common.errors import InvalidArgument
from edgesense.common.event_check import check_event as real_check
from edgesense.common.events import WEBHOOK_DISABLED, WEBHOOK_ENABLED
from edgesense.common.log_throttle import ThrottledLog
from edgesense.delivery.accept import acceptor
from edgesense.registry import forwarder, metrics
from edgesense.registry.secretbox import SecretBox
from edgesense.registry.server import start_registry
from edgesense.registry.store import DISABLED, WebhookStore
from edgesense.registry.tables import operational_events
from edgesense.storage.engine import create_engine, dispose_engine
from edgesense.v1 import events_pb2
from tests.integration.cluster import Cluster, reading
from tests.support.receivers import Receiver, Switch, guide_verify_signature
from tests.support.waiting import eventually

SECRET = "your_shared_secret"
OPERATIONAL = [WEBHOOK_DISABLED, WEBHOOK_ENABLED]


@pytest.fixture
def cluster_env(cluster_env: dict[str, str]) -> dict[str, str]:
    """Two attempts per delivery, so a delivery fails for good quickly."""
    return {**cluster_env, "EDGESENSE_MAX_RETRIES": "1"}


def bodies(receiver: Receiver, event: str | None = None) -> list[dict[str, Any]]:
    """The JSON bodies the receiver got (of `event` only, if given), in order."""
    found = [json.loads(r.body) for r in receiver.received]
    return [b for b in found if event is None or b["event"] == event]


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def schemas(cluster: Cluster) -> dict[str, jsonschema.Draft202012Validator]:
    answer = await cluster.http.get("/api/event-types", headers=cluster.auth())
    assert answer.status_code == 200, answer.text
    return {
        t["name"]: jsonschema.Draft202012Validator(
            t["schema"], format_checker=jsonschema.FormatChecker()
        )
        for t in answer.json()["eventTypes"]
    }


async def wait_status(cluster: Cluster, webhook_id: str, status: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal found
        found = await cluster.webhook(webhook_id)
        return bool(found["status"] == status)

    await eventually(reached, 20, f"{webhook_id} {status}")
    await cluster.known_to_delivery(webhook_id, status)
    return found


async def test_a_disable_and_the_enable_reach_the_other_subscribers_never_the_subject(
    cluster: Cluster,
) -> None:
    a_switch = Switch(500)
    a_recv, b_recv, c_recv = Receiver(a_switch), Receiver(), Receiver()
    for r in (a_recv, b_recv, c_recv):
        await r.start()
    try:
        # A subscribes to the operational events too: as their subject it gets none.
        a = await cluster.register(a_recv.url, events=["device.data", *OPERATIONAL])
        # B filters on a device no event has: operational events are about none.
        b = await cluster.register(b_recv.url, events=OPERATIONAL, deviceIds=["press-9"])
        c = await cluster.register(c_recv.url, events=["device.data"])  # not subscribed
        other_project = await cluster.register(
            b_recv.url_via("127.0.0.1", "/other"), events=OPERATIONAL, project="project-b"
        )

        await cluster.publish([reading()])
        hook = await wait_status(cluster, a, DISABLED)
        [received] = await b_recv.wait_for(1)
        assert received.headers["X-EdgeSense-Event"] == WEBHOOK_DISABLED
        assert guide_verify_signature(
            SECRET, received.body.decode(), received.headers["X-EdgeSense-Signature"]
        )
        body = json.loads(received.body)
        validators = await schemas(cluster)
        validators[WEBHOOK_DISABLED].validate(body)
        assert not validators[WEBHOOK_ENABLED].is_valid(body)
        assert "deviceId" not in body
        assert "gatewayId" not in body
        assert body["webhookId"] == b
        payload = body["payload"]
        assert (payload["webhookId"], payload["url"], payload["reason"]) == (
            a,
            a_recv.url,
            hook["disabledReason"],
        )
        # The last attempt is the failed delivery's last one, as listed.
        [failed] = await cluster.wait_deliveries(a, "failed")
        last = failed["attempts"][-1]
        assert payload["lastAttempt"]["statusCode"] == last["statusCode"] == 500
        assert "error" not in payload["lastAttempt"]
        moment = abs(when(payload["lastAttempt"]["startedAt"]) - when(last["startedAt"]))
        assert moment.total_seconds() < 0.001
        assert abs(when(body["timestamp"]) - when(hook["disabledAt"])).total_seconds() < 0.001

        # Another project cannot enable A (404), and that announces nothing.
        refused = await cluster.http.post(
            f"/api/webhooks/{a}/enable", headers=cluster.auth("project-b")
        )
        assert refused.status_code == 404, refused.text

        a_switch.status = 200
        enabled = await cluster.http.post(f"/api/webhooks/{a}/enable", headers=cluster.auth())
        assert enabled.status_code == 200, enabled.text
        await b_recv.wait_for(2)
        [second] = bodies(b_recv)[1:]
        validators[WEBHOOK_ENABLED].validate(second)
        assert not validators[WEBHOOK_DISABLED].is_valid(second)
        assert second["event"] == WEBHOOK_ENABLED
        assert second["payload"] == {"webhookId": a, "url": a_recv.url}

        # Both events were stored before B's second one arrived: had A, C or
        # the other project any delivery of them, it would be listed now.
        assert [d["event"] for d in await cluster.deliveries(b)] == [
            WEBHOOK_ENABLED,
            WEBHOOK_DISABLED,
        ]
        assert {d["event"] for d in await cluster.deliveries(a)} == {"device.data"}
        assert await cluster.deliveries(c) != []
        assert {d["event"] for d in await cluster.deliveries(c)} == {"device.data"}
        assert await cluster.deliveries(other_project, project="project-b") == []
        assert {b["event"] for b in bodies(a_recv)} == {"device.data"}
        # Enabling an active webhook changes nothing, and announces nothing.
        again = await cluster.http.post(f"/api/webhooks/{a}/enable", headers=cluster.auth())
        assert again.status_code == 200, again.text
        await cluster.publish([reading()])  # a later event, as a marker
        await cluster.wait_deliveries(a, "succeeded")  # the first one failed for good
        assert len(await cluster.deliveries(b)) == 2
    finally:
        for r in (a_recv, b_recv, c_recv):
            await r.stop()


async def test_a_webhook_failing_an_operational_event_is_disabled_without_announcing_it(
    cluster: Cluster,
) -> None:
    a_recv, b_switch = Receiver(Switch(500)), Switch(500)
    b_recv, c_recv = Receiver(b_switch), Receiver()
    for r in (a_recv, b_recv, c_recv):
        await r.start()
    try:
        a = await cluster.register(a_recv.url)
        b = await cluster.register(b_recv.url, events=OPERATIONAL)
        c = await cluster.register(c_recv.url, events=OPERATIONAL)

        await cluster.publish([reading()])
        await wait_status(cluster, a, DISABLED)
        # B fails both attempts of webhook.disabled (about A): disabled too ...
        hook_b = await wait_status(cluster, b, DISABLED)
        assert hook_b["disabledReason"].startswith("2 attempts failed"), hook_b
        [failed] = await cluster.wait_deliveries(b, "failed")
        assert failed["event"] == WEBHOOK_DISABLED
        assert failed["deliveryId"].startswith("dlv_op_")
        # ... but announced to no one. Enabling B is announced; the forwarder
        # publishes in commit order, so a webhook.disabled about B would be
        # stored (and listed for C) before it.
        b_switch.status = 200
        enabled = await cluster.http.post(f"/api/webhooks/{b}/enable", headers=cluster.auth())
        assert enabled.status_code == 200, enabled.text
        await c_recv.wait_for(2)
        assert [d["event"] for d in await cluster.deliveries(c)] == [
            WEBHOOK_ENABLED,
            WEBHOOK_DISABLED,
        ]
        about = sorted((got["event"], got["payload"]["webhookId"]) for got in bodies(c_recv))
        assert about == [(WEBHOOK_DISABLED, a), (WEBHOOK_ENABLED, b)]
        assert [b["event"] for b in bodies(b_recv)] == [WEBHOOK_DISABLED] * 2
        assert await cluster.deliveries(b) == [failed]
    finally:
        for r in (a_recv, b_recv, c_recv):
            await r.stop()


async def test_an_event_committed_but_not_published_is_published_by_the_next_registry_once(
    cluster: Cluster, receiver: Receiver
) -> None:
    a = await cluster.register("http://127.0.0.1:1/a")
    b = await cluster.register(receiver.url, events=[WEBHOOK_DISABLED])
    settings = cluster.settings
    port = cluster.registry.port
    await cluster.registry.stop(0)

    # As a registry that died right after its commit: status and event are
    # stored, nothing is published.
    engine = create_engine(settings.database_url)
    try:
        store = WebhookStore(engine, SecretBox(settings.require_secret_key()))
        await store.set_status(None, a, DISABLED, "gone for good")
        [left] = await store.unpublished()
        assert receiver.received == []

        cluster.registry = await start_registry(
            settings, f"127.0.0.1:{port}", f"127.0.0.1:{cluster.delivery.port}"
        )
        [got] = await receiver.wait_for(1)
        body = json.loads(got.body)
        assert (body["event"], body["payload"]["webhookId"], body["payload"]["reason"]) == (
            WEBHOOK_DISABLED,
            a,
            "gone for good",
        )
        assert "lastAttempt" not in body["payload"]  # the status change named none
        event = events_pb2.Event.FromString(left.event)
        assert body["eventId"] == event.event_id
        await eventually(
            lambda: cluster.registry.forwarder.published_total == 1, 10, "the row confirmed"
        )
        assert await store.unpublished() == []

        # Published again (as after a crash between confirmation and delete,
        # or by a second replica): a duplicate, no second delivery.
        [answer] = await cluster.publish([event])
        assert (answer.accepted, answer.duplicates) == (0, 1)
        await cluster.wait_deliveries(b, "succeeded")
        assert len(await cluster.deliveries(b)) == 1
        assert len(receiver.received) == 1
    finally:
        await dispose_engine(engine)


async def test_an_event_delivery_refuses_for_good_is_dropped_and_holds_back_nothing(
    cluster: Cluster,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its own log throttle: an earlier test's drop must not silence this one's.
    monkeypatch.setattr(forwarder, "_dropped", ThrottledLog(forwarder.log))
    a = await cluster.register("http://127.0.0.1:1/a")
    await cluster.register(receiver.url, events=[WEBHOOK_DISABLED])
    settings = cluster.settings
    port = cluster.registry.port
    await cluster.registry.stop(0)
    engine = create_engine(settings.database_url)
    try:
        # A row delivery cannot store (an event without its id, as a bug or a
        # newer registry could write), then a good one behind it.
        poison = events_pb2.Event(project_id="project-a", gateway_id="gw-1")
        async with engine.begin() as conn:
            await conn.execute(
                insert(operational_events).values(
                    event_id="evt_poison",
                    project_id="project-a",
                    event=poison.SerializeToString(),
                    created_at=datetime.now(UTC),
                )
            )
        store = WebhookStore(engine, SecretBox(settings.require_secret_key()))
        await store.set_status(None, a, DISABLED, "gone for good")
        dropped = metrics.OPERATIONAL_DROPPED._value.get()

        cluster.registry = await start_registry(
            settings, f"127.0.0.1:{port}", f"127.0.0.1:{cluster.delivery.port}"
        )
        [got] = await receiver.wait_for(1)
        assert json.loads(got.body)["payload"]["webhookId"] == a
        await eventually(lambda: cluster.registry.forwarder.published_total == 1, 10, "confirmed")
        assert await store.unpublished() == []
        assert metrics.OPERATIONAL_DROPPED._value.get() == dropped + 1
        [line] = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
        assert "row " in line
        assert "eventId: is required" in line
    finally:
        await dispose_engine(engine)


async def test_an_event_an_older_delivery_refuses_waits_until_delivery_takes_it(
    cluster: Cluster, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling upgrade: delivery does not know webhook.enabled yet and
    refuses it (INVALID_ARGUMENT) though the registry's own check passes it:
    the event is kept and published again, never dropped."""
    a = await cluster.register("http://127.0.0.1:1/a")
    await cluster.register(receiver.url, events=[WEBHOOK_ENABLED])

    def older_delivery(event: events_pb2.Event, position: int) -> str:
        if event.WhichOneof("kind") == "webhook_enabled":
            raise InvalidArgument(f"events[{position}]", "has no kind this delivery knows")
        return real_check(event, position)

    monkeypatch.setattr(acceptor, "check_event", older_delivery)
    monkeypatch.setattr(forwarder, "RETRY_MAX_SECONDS", 0.2)
    dropped = metrics.OPERATIONAL_DROPPED._value.get()
    store = cluster.registry.forwarder.store
    await store.set_status(None, a, DISABLED, "down")
    answer = await cluster.http.post(f"/api/webhooks/{a}/enable", headers=cluster.auth())
    assert answer.status_code == 200, answer.text

    async def refused_and_kept() -> bool:
        rows = await store.unpublished()
        kinds = [events_pb2.Event.FromString(r.event).WhichOneof("kind") for r in rows]
        return kinds == ["webhook_enabled"] and delivery_refusals() >= 2

    def delivery_refusals() -> int:
        return sum(1 for r in caplog_records if "INVALID_ARGUMENT" in r)

    caplog_records: list[str] = []
    handler = _Collect(caplog_records)
    logging.getLogger(forwarder.__name__).addHandler(handler)
    try:
        await eventually(refused_and_kept, 20, "the refused event kept and tried again")
        assert receiver.received == []
        monkeypatch.setattr(acceptor, "check_event", real_check)  # delivery upgraded
        [got] = await receiver.wait_for(1)
        assert json.loads(got.body)["event"] == WEBHOOK_ENABLED
        assert metrics.OPERATIONAL_DROPPED._value.get() == dropped
    finally:
        logging.getLogger(forwarder.__name__).removeHandler(handler)


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__()
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


async def test_operational_event_names_are_validated_and_published_with_their_subject(
    cluster: Cluster, receiver: Receiver
) -> None:
    bad = await cluster.http.post(
        "/api/webhooks/register",
        json={"url": receiver.url, "events": ["webhook.exploded"], "secret": SECRET},
        headers=cluster.auth(),
    )
    assert bad.status_code == 400, bad.text
    assert bad.json()["message"].startswith("events:")
    assert "webhook.disabled" in bad.json()["message"]

    # Publish refuses an operational event that names no webhook.
    nameless = events_pb2.Event(event_id="evt_nameless", project_id="project-a")
    nameless.timestamp.GetCurrentTime()
    nameless.webhook_enabled.url = receiver.url
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await cluster.publish([nameless])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "webhookEnabled.webhookId" in (refused.value.details() or "")
