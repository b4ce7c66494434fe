"""The /api/webhooks routes end to end: REST API -> registry -> database, on
SQLite and on PostgreSQL, with the integration guide's own request body."""

from __future__ import annotations

import re
from typing import Any

import grpc
import pytest

from edgesense.common.auth import bearer_metadata
from edgesense.v1 import registry_pb2, registry_pb2_grpc
from tests.integration.conftest import Api

# The integration guide's example body, verbatim.
GUIDE_BODY = {
    "url": "https://your-server.com/webhook-receiver",
    "events": ["device.data", "device.alert"],
    "secret": "your_shared_secret",
}
WEBHOOK_ID = re.compile(r"wh_[a-z2-7]{20}")


async def register(api: Api, body: dict[str, Any] | None = None, project: str = "project-a") -> str:
    answer = await api.http.post(
        "/api/webhooks/register", json=body or GUIDE_BODY, headers=api.auth(project)
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["webhookId"])


async def test_register_with_the_guides_body(api: Api) -> None:
    answer = await api.http.post("/api/webhooks/register", json=GUIDE_BODY, headers=api.auth())
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"webhookId", "status"}
    assert body["status"] == "registered"
    assert WEBHOOK_ID.fullmatch(body["webhookId"])


async def test_list_and_get_never_show_the_secret(api: Api) -> None:
    first = await register(api)
    second = await register(
        api,
        {
            **GUIDE_BODY,
            "description": "plant 7",
            "deviceIds": ["edge-node-321"],
            "events": ["device.status"],
        },
    )
    listed = await api.http.get("/api/webhooks", headers=api.auth())
    assert listed.status_code == 200
    assert "your_shared_secret" not in listed.text
    assert "secret" not in listed.text.lower()
    hooks = {h["webhookId"]: h for h in listed.json()["webhooks"]}
    assert set(hooks) == {first, second}

    got = await api.http.get(f"/api/webhooks/{second}", headers=api.auth())
    assert got.status_code == 200
    hook = got.json()
    assert "secret" not in got.text.lower()
    assert hook["webhookId"] == second
    assert hook["url"] == GUIDE_BODY["url"]
    assert hook["events"] == ["device.status"]
    assert hook["status"] == "active"
    assert hook["description"] == "plant 7"
    assert hook["deviceIds"] == ["edge-node-321"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", hook["createdAt"])
    assert "disabledAt" not in hook
    assert "disabledReason" not in hook
    # Fields the user left out are still present, empty.
    assert hooks[first]["description"] == ""
    assert hooks[first]["deviceIds"] == []


async def test_delete_then_gone(api: Api) -> None:
    hook = await register(api)
    deleted = await api.http.delete(f"/api/webhooks/{hook}", headers=api.auth())
    assert deleted.status_code == 200
    assert deleted.json() == {"webhookId": hook, "status": "deleted"}
    again = await api.http.get(f"/api/webhooks/{hook}", headers=api.auth())
    assert again.status_code == 404
    assert (await api.http.delete(f"/api/webhooks/{hook}", headers=api.auth())).status_code == 404
    assert (await api.http.get("/api/webhooks", headers=api.auth())).json()["webhooks"] == []


async def test_disabled_webhook_shows_reason_and_enable_clears_it(api: Api) -> None:
    hook = await register(api)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api.registry.port}") as channel:
        await registry_pb2_grpc.WebhookRegistryStub(channel).ReportDeliveryFailure(
            registry_pb2.ReportDeliveryFailureRequest(
                webhook_id=hook, delivery_id="dlv_x", reason="6 attempts failed; last: HTTP 500"
            ),
            metadata=bearer_metadata(api.settings.service_token()),
        )
    disabled = (await api.http.get(f"/api/webhooks/{hook}", headers=api.auth())).json()
    assert disabled["status"] == "disabled"
    assert disabled["disabledReason"] == "6 attempts failed; last: HTTP 500"
    assert "disabledAt" in disabled

    enabled = await api.http.post(f"/api/webhooks/{hook}/enable", headers=api.auth())
    assert enabled.status_code == 200
    assert enabled.json() == {"webhookId": hook, "status": "active"}
    after = (await api.http.get(f"/api/webhooks/{hook}", headers=api.auth())).json()
    assert after["status"] == "active"
    assert "disabledReason" not in after
    assert "disabledAt" not in after
    # Enabling an active webhook is harmless.
    assert (
        await api.http.post(f"/api/webhooks/{hook}/enable", headers=api.auth())
    ).status_code == 200


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"url": "not a url"}, "url"),
        ({"url": "http://your-server.com/hook"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": "https://127.0.0.1/hook"}, "url"),
        ({"url": None}, "url"),
        ({"events": []}, "events"),
        ({"events": ["device.data", "device.data"]}, "events"),
        ({"events": ["device.everything"]}, "events"),
        ({"events": None}, "events"),
        ({"secret": ""}, "secret"),
        ({"secret": "s" * 257}, "secret"),
        ({"secret": None}, "secret"),
        ({"deviceIds": ["ok", "ok"]}, "deviceIds"),
    ],
)
async def test_each_validation_error_names_the_field(
    api: Api, change: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in {**GUIDE_BODY, **change}.items() if v is not None}
    answer = await api.http.post("/api/webhooks/register", json=body, headers=api.auth())
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["code"] == 3
    assert error["message"].startswith(f"{field}:")
    violations = [v for d in error["details"] for v in d.get("fieldViolations", [])]
    assert [v["field"] for v in violations] == [field]
    assert (await api.http.get("/api/webhooks", headers=api.auth())).json()["webhooks"] == []


async def test_wrongly_typed_field_is_a_400_naming_it(api: Api) -> None:
    answer = await api.http.post(
        "/api/webhooks/register", json={**GUIDE_BODY, "events": "device.data"}, headers=api.auth()
    )
    assert answer.status_code == 400
    assert "events" in answer.json()["message"]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Basic abc"}]
)
async def test_unauthenticated(api: Api, headers: dict[str, str]) -> None:
    for method, path in [
        ("POST", "/api/webhooks/register"),
        ("GET", "/api/webhooks"),
        ("GET", "/api/webhooks/wh_x"),
    ]:
        answer = await api.http.request(
            method, path, json=GUIDE_BODY if method == "POST" else None, headers=headers
        )
        assert answer.status_code == 401, (method, path, answer.text)
        assert answer.json()["code"] == 16


async def test_another_projects_webhook_is_not_found(api: Api) -> None:
    hook = await register(api, project="project-a")
    other = api.auth("project-b")
    assert (await api.http.get(f"/api/webhooks/{hook}", headers=other)).status_code == 404
    assert (await api.http.delete(f"/api/webhooks/{hook}", headers=other)).status_code == 404
    assert (await api.http.post(f"/api/webhooks/{hook}/enable", headers=other)).status_code == 404
    assert (await api.http.get("/api/webhooks", headers=other)).json()["webhooks"] == []
    # ...and it is untouched for its owner.
    assert (await api.http.get(f"/api/webhooks/{hook}", headers=api.auth())).status_code == 200


async def test_bad_requests_are_answered_and_the_api_keeps_serving(api: Api) -> None:
    headers = {**api.auth(), "Content-Type": "application/json"}
    malformed = await api.http.post(
        "/api/webhooks/register", content=b'{"url": "https://x', headers=headers
    )
    assert malformed.status_code == 400
    assert malformed.json()["code"] == 3

    array = await api.http.post("/api/webhooks/register", content=b"[1, 2]", headers=headers)
    assert array.status_code == 400
    assert "object" in array.json()["message"]

    unknown = await api.http.get("/api/nothing-here", headers=headers)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == 5

    wrong_method = await api.http.put("/api/webhooks", headers=headers)
    assert wrong_method.status_code == 405

    not_utf8 = await api.http.post("/api/webhooks/register", content=b"\xff\xfe{", headers=headers)
    assert not_utf8.status_code == 400

    # Still serving.
    assert (await api.http.get("/api/webhooks", headers=api.auth())).status_code == 200
    await register(api)


async def test_delivery_routes_answer_503_while_delivery_is_down(api: Api) -> None:
    answer = await api.http.get("/api/webhooks/wh_x/deliveries", headers=api.auth())
    assert answer.status_code == 503
    assert answer.json()["code"] == 14


async def test_openapi_describes_every_route(api: Api) -> None:
    document = (await api.http.get("/openapi.json")).json()
    paths = document["paths"]
    assert set(paths["/api/webhooks/register"]) == {"post"}
    assert set(paths["/api/webhooks"]) == {"get"}
    assert set(paths["/api/webhooks/{webhookId}"]) == {"get", "delete", "patch"}
    assert set(paths["/api/webhooks/{webhookId}/rotate-secret"]) == {"post"}
    assert set(paths["/api/event-types"]) == {"get"}
    assert set(paths["/api/webhooks/{webhookId}/enable"]) == {"post"}
    assert set(paths["/api/webhooks/{webhookId}/deliveries"]) == {"get"}
    assert set(paths["/api/deliveries/{deliveryId}/redeliver"]) == {"post"}
