"""Registry holes closed, over REST, on SQLite and PostgreSQL: numeric SSRF
spellings, control characters in every string, a project too large for one
gRPC message, and the per-project webhook limit."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest

from edgesense.common.auth import bearer_metadata
from edgesense.common.config import Settings
from edgesense.v1 import registry_pb2, registry_pb2_grpc
from tests.conftest import key_of
from tests.integration.cluster import register_large
from tests.integration.conftest import Api, serving_api

BODY = {"url": "https://example.com/hook", "events": ["device.data"], "secret": "s3cret"}
GRPC_LIMIT = 4 * 1024 * 1024


def violation(answer: httpx.Response) -> str:
    """The field the answer's BadRequest detail names."""
    assert answer.status_code == 400, answer.text
    error = answer.json()
    fields = [v["field"] for d in error["details"] for v in d.get("fieldViolations", [])]
    assert fields
    assert error["message"].startswith(f"{fields[0]}:")
    return str(fields[0])


@pytest.mark.parametrize(
    "url",
    [
        "https://2130706433/hook",
        "https://0x7f000001/hook",
        "https://127.1/hook",
        "https://0177.0.0.1/hook",
        "https://0/hook",
        "https://0x7f.1/hook",
        "https://[::ffff:7f00:1]/hook",
        "https://[fe80::1%25eth0]/hook",
        "https://localhost./hook",
    ],
)
async def test_numeric_spellings_of_private_addresses_answer_400_naming_url(
    api: Api, url: str
) -> None:
    answer = await api.http.post(
        "/api/webhooks/register", json={**BODY, "url": url}, headers=api.auth()
    )
    assert violation(answer) == "url"
    listed = await api.http.get("/api/webhooks", headers=api.auth())
    assert listed.json()["webhooks"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**BODY, "url": "https://example.com/ho\x00ok"}, "url"),
        ({**BODY, "description": "plant\x007"}, "description"),
        ({**BODY, "description": "bell\x07"}, "description"),
        ({**BODY, "secret": "s3\x00cret"}, "secret"),
        ({**BODY, "deviceIds": ["ok-1", "bad\x00id"]}, "deviceIds[1]"),
        ({**BODY, "events": ["device.data\x00"]}, "events[0]"),
    ],
)
async def test_control_characters_answer_400_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    answer = await api.http.post("/api/webhooks/register", json=body, headers=api.auth())
    assert violation(answer) == field
    assert "control character" in answer.json()["message"]


async def test_line_breaks_in_a_description_are_kept(api: Api) -> None:
    answer = await api.http.post(
        "/api/webhooks/register",
        json={**BODY, "description": "line one\r\n\tline two"},
        headers=api.auth(),
    )
    assert answer.status_code == 200, answer.text
    got = await api.http.get(f"/api/webhooks/{answer.json()['webhookId']}", headers=api.auth())
    assert got.json()["description"] == "line one\r\n\tline two"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/webhooks/wh_%00x"),
        ("DELETE", "/api/webhooks/wh_%00x"),
        ("POST", "/api/webhooks/wh_%01x/enable"),
    ],
)
async def test_control_characters_in_path_ids_answer_400(api: Api, method: str, path: str) -> None:
    answer = await api.http.request(method, path, headers=api.auth())
    assert violation(answer) == "webhookId"
    assert (await api.http.get("/api/webhooks", headers=api.auth())).status_code == 200


async def test_a_project_larger_than_one_grpc_message_is_listed_in_pages(
    api: Api, api_keys: dict[str, str]
) -> None:
    # 40 webhooks of 1,000 device ids of 128 characters: 5.3 MB in one answer,
    # which gRPC refused (429 on every GET) before listing was paged.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api.registry.port}") as channel:
        await register_large(
            registry_pb2_grpc.WebhookRegistryStub(channel), key_of(api_keys, "project-a"), 40
        )
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        params: dict[str, str | int] = {"pageSize": 100}
        if token:
            params["pageToken"] = token
        answer = await api.http.get("/api/webhooks", params=params, headers=api.auth())
        assert answer.status_code == 200, answer.text[:300]
        body = answer.json()
        pages += 1
        seen += [hook["webhookId"] for hook in body["webhooks"]]
        assert all(len(hook["deviceIds"]) == 1000 for hook in body["webhooks"])
        token = body.get("nextPageToken", "")
        if not token:
            break
    assert len(seen) == len(set(seen)) == 40
    assert seen == sorted(seen)  # oldest first: ids sort by creation time
    assert pages >= 6  # cut at 1 MiB, far below 4 MiB, whatever pageSize asked
    # The other project's token does not page this project's listing.
    other = await api.http.get("/api/webhooks", params={"pageSize": 1}, headers=api.auth())
    foreign = await api.http.get(
        "/api/webhooks",
        params={"pageToken": other.json()["nextPageToken"]},
        headers=api.auth("project-b"),
    )
    assert violation(foreign) == "pageToken"


@pytest.mark.parametrize(
    "token",
    ["nonsense", "OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk.AAAA", "a.b.c", "x" * 400],
)
async def test_a_malformed_webhook_page_token_is_a_400(api: Api, token: str) -> None:
    answer = await api.http.get("/api/webhooks", params={"pageToken": token}, headers=api.auth())
    assert violation(answer) == "pageToken"


async def test_page_size_bounds(api: Api) -> None:
    for _ in range(3):
        await api.http.post("/api/webhooks/register", json=BODY, headers=api.auth())
    page = await api.http.get("/api/webhooks", params={"pageSize": 2}, headers=api.auth())
    assert len(page.json()["webhooks"]) == 2
    assert page.json()["nextPageToken"]
    rest = await api.http.get(
        "/api/webhooks", params={"pageToken": page.json()["nextPageToken"]}, headers=api.auth()
    )
    assert len(rest.json()["webhooks"]) == 1
    assert not rest.json().get("nextPageToken")
    negative = await api.http.get("/api/webhooks", params={"pageSize": -1}, headers=api.auth())
    assert violation(negative) == "pageSize"


@pytest.fixture
async def limited(settings: Settings, api_keys: dict[str, str]) -> AsyncIterator[Api]:
    """The registry with at most 3 webhooks per project."""
    settings = dataclasses.replace(settings, max_webhooks_per_project=3)
    async with serving_api(settings, api_keys) as running:
        yield running


async def test_webhooks_per_project_are_limited(limited: Api) -> None:
    api = limited
    ids = []
    for _ in range(3):
        answer = await api.http.post("/api/webhooks/register", json=BODY, headers=api.auth())
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["webhookId"])
    over = await api.http.post("/api/webhooks/register", json=BODY, headers=api.auth())
    assert over.status_code == 429, over.text
    assert over.json()["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    message = over.json()["message"]
    assert "3 webhooks" in message
    assert "EDGESENSE_MAX_WEBHOOKS_PER_PROJECT=3" in message
    # Another project has its own allowance; deleting one frees a place.
    other = await api.http.post("/api/webhooks/register", json=BODY, headers=api.auth("project-b"))
    assert other.status_code == 200
    await api.http.delete(f"/api/webhooks/{ids[0]}", headers=api.auth())
    again = await api.http.post("/api/webhooks/register", json=BODY, headers=api.auth())
    assert again.status_code == 200, again.text


def test_the_limit_setting() -> None:
    assert Settings.from_env({}).max_webhooks_per_project == 100
    env = {"EDGESENSE_MAX_WEBHOOKS_PER_PROJECT": "7"}
    assert Settings.from_env(env).max_webhooks_per_project == 7


async def test_over_grpc_too(api: Api, api_keys: dict[str, str]) -> None:
    user = bearer_metadata(key_of(api_keys, "project-a"))
    internal = bearer_metadata(api.settings.service_token())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api.registry.port}") as channel:
        stub = registry_pb2_grpc.WebhookRegistryStub(channel)
        for url, words in [("https://0x7f000001/", "127.0.0.1"), ("https://a\x00b/", "U+0000")]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.RegisterWebhook(
                    registry_pb2.RegisterWebhookRequest(
                        url=url, events=["device.data"], secret="s"
                    ),
                    metadata=user,
                )
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (caught.value.details() or "").startswith("url:")
            assert words in (caught.value.details() or "")
        # A failure reason from delivery with a NUL still disables the webhook
        # (PostgreSQL cannot store NUL in text; the reason is cleaned instead).
        hook = await stub.RegisterWebhook(
            registry_pb2.RegisterWebhookRequest(
                url="https://example.com/", events=["device.data"], secret="s"
            ),
            metadata=user,
        )
        report = await stub.ReportDeliveryFailure(
            registry_pb2.ReportDeliveryFailureRequest(
                webhook_id=hook.webhook_id, delivery_id="dlv_1", reason="HTTP 500\x00: boom"
            ),
            metadata=internal,
        )
        assert report.status == "disabled"
        got = await stub.GetWebhook(
            registry_pb2.GetWebhookRequest(webhook_id=hook.webhook_id), metadata=user
        )
        assert got.disabled_reason == "HTTP 500 : boom"


async def test_one_default_page_holds_a_project_at_the_default_limit(
    api: Api, api_keys: dict[str, str]
) -> None:
    # Clients written before paging still see every webhook of a project at
    # the default limit; the next registration is refused, not left unseen.
    user = bearer_metadata(key_of(api_keys, "project-a"))
    request = registry_pb2.RegisterWebhookRequest(
        url="https://example.com/hook", events=["device.data"], secret="s3cret"
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{api.registry.port}") as channel:
        stub = registry_pb2_grpc.WebhookRegistryStub(channel)
        for _ in range(api.settings.max_webhooks_per_project):
            await stub.RegisterWebhook(request, metadata=user)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.RegisterWebhook(request, metadata=user)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    listed = (await api.http.get("/api/webhooks", headers=api.auth())).json()
    assert len(listed["webhooks"]) == 100
    assert listed["nextPageToken"] == ""
