"""A webhook's life after registration, end to end over REST with real
receivers, on SQLite and PostgreSQL: update (PATCH, mask from the body),
secret rotation with the guide's snippet and the standardwebhooks library
verifying real requests, custom headers, and the event types' schemas
checked against real webhook bodies."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import jsonschema
import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from edgesense.common.events import DEVICE_EVENT_NAMES, EVENT_NAMES
from edgesense.v1 import events_pb2
from tests.integration.cluster import Cluster, reading
from tests.integration.conftest import Api
from tests.support.receivers import Received, Receiver, guide_verify_signature
from tests.support.waiting import eventually

OLD = "old-shared-secret"
NEW = "new-shared-secret"
HEADER_VALUE = "Bearer gw-token-7f3a9c"


async def patch(http: Any, webhook_id: str, body: dict[str, Any], **kwargs: Any) -> Any:
    return await http.patch(f"/api/webhooks/{webhook_id}", json=body, **kwargs)


def standard_verifies(secret: str, got: Received) -> bool:
    try:
        StandardWebhook(secret.encode()).verify(
            got.body, {k.lower(): v for k, v in got.headers.items()}
        )
    except WebhookVerificationError:
        return False
    return True


def guide_verifies(secret: str, got: Received) -> bool:
    return guide_verify_signature(secret, got.body.decode(), got.headers["X-EdgeSense-Signature"])


async def test_update_keeps_history_and_new_events_go_to_the_new_url(cluster: Cluster) -> None:
    first, second = Receiver(), Receiver()
    await first.start()
    await second.start()
    try:
        hook = await cluster.register(first.url, description="plant 7", deviceIds=["edge-node-321"])
        await cluster.publish([reading()])
        await first.wait_for(1)
        await cluster.wait_deliveries(hook, "succeeded", 1)

        answer = await patch(cluster.http, hook, {"url": second.url}, headers=cluster.auth())
        assert answer.status_code == 200, answer.text
        updated = answer.json()
        assert (updated["webhookId"], updated["url"]) == (hook, second.url)
        # Only the field sent changed.
        assert updated["description"] == "plant 7"
        assert updated["deviceIds"] == ["edge-node-321"]
        assert updated["events"] == ["device.data"]
        assert updated["updatedAt"] > updated["createdAt"]

        await eventually(
            lambda: (t := cluster.delivery.index.get(hook)) is not None and t.url == second.url,
            10,
            "delivery to follow the new URL",
        )
        await cluster.publish([reading()])
        await second.wait_for(1)
        assert len(first.received) == 1
        # Both deliveries are listed under the same webhook.
        listed = await cluster.wait_deliveries(hook, "succeeded", 2)
        assert {d["deliveryId"] for d in listed} == {
            first.received[0].delivery_id,
            second.received[0].delivery_id,
        }
    finally:
        await first.stop()
        await second.stop()


async def test_partial_update_keeps_the_other_fields(api: Api) -> None:
    created = await api.http.post(
        "/api/webhooks/register",
        json={
            "url": "https://example.com/hook",
            "events": ["device.data", "device.alert"],
            "secret": OLD,
            "description": "before",
            "deviceIds": ["dev-1"],
            "headers": {"Authorization": HEADER_VALUE},
        },
        headers=api.auth(),
    )
    hook = created.json()["webhookId"]
    answer = await patch(api.http, hook, {"description": "after"}, headers=api.auth())
    assert answer.status_code == 200, answer.text
    got = (await api.http.get(f"/api/webhooks/{hook}", headers=api.auth())).json()
    assert got == answer.json()
    assert got["description"] == "after"
    assert got["url"] == "https://example.com/hook"
    assert got["events"] == ["device.data", "device.alert"]
    assert got["deviceIds"] == ["dev-1"]
    assert got["headers"] == {"Authorization": "***"}
    assert HEADER_VALUE not in answer.text

    # An explicit mask in the query wins over the body's fields; the empty
    # list then clears deviceIds (every device).
    answer = await api.http.patch(
        f"/api/webhooks/{hook}?updateMask=deviceIds",
        json={"deviceIds": [], "description": "ignored"},
        headers=api.auth(),
    )
    assert (answer.json()["deviceIds"], answer.json()["description"]) == ([], "after")

    # The sending options: absent from a body, kept; false is a value like any other.
    assert (got["rateLimitPerSecond"], got["ordered"]) == (0, False)
    answer = await patch(
        api.http, hook, {"rateLimitPerSecond": 5, "ordered": True}, headers=api.auth()
    )
    assert (answer.json()["rateLimitPerSecond"], answer.json()["ordered"]) == (5, True)
    answer = await patch(api.http, hook, {"ordered": False}, headers=api.auth())
    assert (answer.json()["rateLimitPerSecond"], answer.json()["ordered"]) == (5, False)
    assert answer.json()["description"] == "after"


@pytest.mark.parametrize(
    ("body", "query", "field"),
    [
        ({"url": "not a url"}, "", "url"),
        ({"url": "http://example.com/hook"}, "", "url"),
        ({"events": []}, "", "events"),
        ({"events": ["device.everything"]}, "", "events"),
        ({"deviceIds": ["a", "a"]}, "", "deviceIds"),
        ({"description": "d" * 1001}, "", "description"),
        ({"rateLimitPerSecond": -5}, "", "rateLimitPerSecond"),
        ({"rateLimitPerSecond": 20_000}, "", "rateLimitPerSecond"),
        ({"headers": {"Host": "evil.example"}}, "", "headers"),
        ({"headers": {"X-EdgeSense-Event": "x"}}, "", "headers"),
        # Control characters are refused before validation, by their gRPC path.
        ({"headers": {"X-Token": "a\r\nInjected: yes"}}, "", "webhook.headers"),
        ({}, "", "updateMask"),
        ({"url": "https://example.com/x"}, "?updateMask=secret", "updateMask"),
    ],
)
async def test_update_validation_names_the_field(
    api: Api, body: dict[str, Any], query: str, field: str
) -> None:
    created = await api.http.post(
        "/api/webhooks/register",
        json={"url": "https://example.com/hook", "events": ["device.data"], "secret": OLD},
        headers=api.auth(),
    )
    hook = created.json()["webhookId"]
    answer = await api.http.patch(f"/api/webhooks/{hook}{query}", json=body, headers=api.auth())
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["message"].startswith(f"{field}:"), error
    violations = [v for d in error["details"] for v in d.get("fieldViolations", [])]
    assert [v["field"] for v in violations] == [field]
    # Nothing changed.
    got = (await api.http.get(f"/api/webhooks/{hook}", headers=api.auth())).json()
    assert (got["url"], got["events"], got["headers"]) == (
        "https://example.com/hook",
        ["device.data"],
        {},
    )


async def test_another_projects_webhook_cannot_be_updated_or_rotated(api: Api) -> None:
    created = await api.http.post(
        "/api/webhooks/register",
        json={"url": "https://example.com/hook", "events": ["device.data"], "secret": OLD},
        headers=api.auth("project-a"),
    )
    hook = created.json()["webhookId"]
    other = api.auth("project-b")
    assert (await patch(api.http, hook, {"description": "x"}, headers=other)).status_code == 404
    rotate = await api.http.post(
        f"/api/webhooks/{hook}/rotate-secret", json={"secret": NEW}, headers=other
    )
    assert rotate.status_code == 404
    got = (await api.http.get(f"/api/webhooks/{hook}", headers=api.auth("project-a"))).json()
    assert got["description"] == ""
    assert "secretRotationEndsAt" not in got


async def test_rotation_validation(api: Api) -> None:
    created = await api.http.post(
        "/api/webhooks/register",
        json={"url": "https://example.com/hook", "events": ["device.data"], "secret": OLD},
        headers=api.auth(),
    )
    path = f"/api/webhooks/{created.json()['webhookId']}/rotate-secret"
    for body, field in [
        ({"secret": OLD}, "secret"),
        ({"secret": ""}, "secret"),
        ({"secret": NEW, "overlapSeconds": 604_801}, "overlapSeconds"),
        ({"secret": NEW, "overlapSeconds": -1}, "overlapSeconds"),
    ]:
        answer = await api.http.post(path, json=body, headers=api.auth())
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["message"].startswith(f"{field}:")
    rotated = await api.http.post(path, json={"secret": NEW}, headers=api.auth())
    assert rotated.status_code == 200, rotated.text
    assert "secretRotationEndsAt" in rotated.json()
    assert NEW not in rotated.text
    assert OLD not in rotated.text
    # The old secret is still live: it cannot come back yet.
    again = await api.http.post(path, json={"secret": OLD}, headers=api.auth())
    assert again.status_code == 400


async def test_rotation_end_to_end(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    receiver = Receiver()
    await receiver.start()
    try:
        hook = await cluster.register(receiver.url, secret=OLD)
        answer = await cluster.http.post(
            f"/api/webhooks/{hook}/rotate-secret",
            json={"secret": NEW, "overlapSeconds": 3},
            headers=cluster.auth(),
        )
        assert answer.status_code == 200, answer.text
        ends = datetime.fromisoformat(answer.json()["secretRotationEndsAt"]).timestamp()
        await eventually(
            lambda: (t := cluster.delivery.index.get(hook)) is not None and t.secret == NEW,
            10,
            "delivery to have the new secret",
        )

        await cluster.publish([reading()])
        [during] = await receiver.wait_for(1)
        sent = int(during.headers["webhook-timestamp"])
        assert sent + 1 <= ends, "the first request must be sent within the overlap"
        assert guide_verifies(OLD, during)  # the guide's snippet, still on the old secret
        assert not guide_verifies(NEW, during)
        assert standard_verifies(OLD, during)
        assert standard_verifies(NEW, during)

        # Send until a request signed after the overlap's end arrives (its
        # webhook-timestamp, the whole second it was signed in, is past the end).
        async def one_after_the_end() -> bool:
            count = len(receiver.received)
            await cluster.publish([reading()])
            got = (await receiver.wait_for(count + 1))[count]
            return int(got.headers["webhook-timestamp"]) >= ends

        await eventually(one_after_the_end, 20, "a request signed after the overlap", 0.25)
        after = receiver.received[-1]
        assert guide_verifies(NEW, after)
        assert not guide_verifies(OLD, after)
        assert standard_verifies(NEW, after)
        assert not standard_verifies(OLD, after)
        assert after.headers["webhook-signature"].count("v1,") == 1
    finally:
        await receiver.stop()
    got = await cluster.webhook(hook)
    assert "secretRotationEndsAt" not in got  # the overlap is over
    assert OLD not in caplog.text
    assert NEW not in caplog.text


async def test_custom_headers_arrive_are_masked_and_never_logged(
    cluster: Cluster, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hook = await cluster.register(
        receiver.url, headers={"Authorization": HEADER_VALUE, "X-Route": "plant-7"}
    )
    await cluster.publish([reading()])
    [got] = await receiver.wait_for(1)
    assert got.headers["Authorization"] == HEADER_VALUE
    assert got.headers["X-Route"] == "plant-7"
    assert got.headers["Content-Type"] == "application/json"
    shown = await cluster.webhook(hook)
    assert shown["headers"] == {"Authorization": "***", "X-Route": "***"}
    listed = await cluster.http.get("/api/webhooks", headers=cluster.auth())
    assert HEADER_VALUE not in listed.text

    # A PATCH of headers replaces the set; the next request carries the new one.
    answer = await patch(
        cluster.http, hook, {"headers": {"X-Route": "plant-8"}}, headers=cluster.auth()
    )
    assert answer.json()["headers"] == {"X-Route": "***"}
    await eventually(
        lambda: (
            (t := cluster.delivery.index.get(hook)) is not None
            and t.headers == (("X-Route", "plant-8"),)
        ),
        10,
        "delivery to have the new headers",
    )
    await cluster.publish([reading()])
    [_, second] = await receiver.wait_for(2)
    assert second.headers["X-Route"] == "plant-8"
    assert "Authorization" not in second.headers
    assert HEADER_VALUE not in caplog.text
    assert "plant-8" not in caplog.text


def event_of(kind: str) -> events_pb2.Event:
    event = reading()
    if kind == "device.alert":
        event.alert.details.update({"metric": "temperature", "threshold": 70})
    elif kind == "device.status":
        event.status.state = events_pb2.DeviceStatus.STATE_OFFLINE
        event.status.details.update({"reason": "battery"})
    elif kind == "config.update":
        event.configuration.values.update({"interval": 30})
    return event


async def test_event_type_schemas_validate_real_webhook_bodies(
    cluster: Cluster, receiver: Receiver
) -> None:
    answer = await cluster.http.get("/api/event-types", headers=cluster.auth())
    assert answer.status_code == 200, answer.text
    types = answer.json()["eventTypes"]
    assert [t["name"] for t in types] == list(EVENT_NAMES)
    schemas = {t["name"]: t["schema"] for t in types}
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    assert all(t["description"] for t in types)

    # The device events here; test_operational_events checks the operational
    # ones' schemas against their real bodies.
    await cluster.register(receiver.url, events=list(DEVICE_EVENT_NAMES))
    await cluster.publish([event_of(name) for name in DEVICE_EVENT_NAMES])
    received = await receiver.wait_for(len(DEVICE_EVENT_NAMES))
    bodies = {json.loads(r.body)["event"]: json.loads(r.body) for r in received}
    assert set(bodies) == set(DEVICE_EVENT_NAMES)
    for name, body in bodies.items():
        validator = jsonschema.Draft202012Validator(
            schemas[name], format_checker=jsonschema.FormatChecker()
        )
        validator.validate(body)
        # ...and each schema is specific: another type's body does not pass.
        other = next(n for n in EVENT_NAMES if n != name)
        assert not jsonschema.Draft202012Validator(schemas[other]).is_valid(body)

    unauthenticated = await cluster.http.get("/api/event-types")
    assert unauthenticated.status_code == 401
