"""The REST API over real sockets, in front of a real grpc.aio server."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
import pytest

from edgesense.api import RunningApi, run_api, start_api
from edgesense.api.backends import Backends
from edgesense.api.transcode import MAX_BODY_BYTES
from edgesense.common.config import Settings
from edgesense.common.errors import ConfigurationError
from edgesense.common.message_limits import MAX_RECEIVE, max_receive
from edgesense.v1 import delivery_pb2, devices_pb2, registry_pb2, rules_pb2
from tests.api.conftest import REGISTRY

if TYPE_CHECKING:
    from tests.api.conftest import Backend


def _status(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert isinstance(body["details"], list)
    return body


async def test_get_forwards_metadata_and_binds_the_path(
    client: httpx.AsyncClient, registry_backend: Backend
) -> None:
    headers = {
        "Authorization": "Bearer esk_test",
        "X-Request-Id": "req-42",
        "Grpc-Metadata-Tenant": "acme",
        "X-Other": "not forwarded",
    }
    response = await client.get("/api/webhooks/wh_1", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "webhookId": "wh_1",
        "url": "https://example.com/hook",
        "events": ["device.data"],
        "status": "active",
        "description": "",
        "deviceIds": [],
        "createdAt": "2025-07-24T10:35:17Z",
        "headers": {},
        "rateLimitPerSecond": 0,
        "ordered": False,
    }
    received = registry_backend.servicer.metadata[-1]
    assert received["authorization"] == "Bearer esk_test"
    assert received["x-request-id"] == "req-42"
    assert received["tenant"] == "acme"
    assert "x-other" not in received


async def test_encoded_slash_reaches_the_backend_decoded(
    client: httpx.AsyncClient, registry_backend: Backend
) -> None:
    response = await client.get("/api/webhooks/a%2Fb%20c")
    assert response.status_code == 200
    assert registry_backend.servicer.requests[-1] == registry_pb2.GetWebhookRequest(
        webhook_id="a/b c"
    )


async def test_post_body_fills_the_request(
    client: httpx.AsyncClient, registry_backend: Backend
) -> None:
    body = {"url": "https://r.test/h", "events": ["device.data"], "secret": "s", "deviceIds": ["d"]}
    response = await client.post("/api/webhooks/register", json=body)
    assert response.status_code == 200
    assert response.json() == {"webhookId": "wh_new", "status": "registered"}
    assert registry_backend.servicer.requests[-1] == registry_pb2.RegisterWebhookRequest(
        url="https://r.test/h", events=["device.data"], secret="s", device_ids=["d"]
    )


@pytest.mark.parametrize(
    ("content", "phrase"),
    [(b'{"url": ', "not valid JSON"), (b'[{"url": "x"}]', "not an array"), (b"null", "not null")],
)
async def test_bad_bodies_answer_400_without_calling(
    client: httpx.AsyncClient, registry_backend: Backend, content: bytes, phrase: str
) -> None:
    response = await client.post("/api/webhooks/register", content=content)
    assert phrase in _status(response, 400, 3)["message"]
    assert registry_backend.servicer.requests == []


async def test_unknown_field_is_named(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/webhooks/register", json={"url": "x", "sekret": "s"})
    assert "sekret" in _status(response, 400, 3)["message"]


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    content = b'{"description": "' + b"x" * MAX_BODY_BYTES + b'"}'
    response = await client.post("/api/webhooks/register", content=content)
    _status(response, 413, 3)


@pytest.mark.parametrize("bytes_over", [1, 64 * 1024])
async def test_request_over_the_backends_limit_is_413_naming_it(
    client: httpx.AsyncClient, registry_backend: Backend, bytes_over: int
) -> None:
    limit = max_receive(REGISTRY)
    size = limit - 4 + bytes_over  # a description has a tag and a 3-byte length
    body = {"description": "x" * size}
    assert len(json.dumps(body)) < MAX_BODY_BYTES  # REST's own limit does not refuse it
    response = await client.post("/api/webhooks/register", json=body)
    message = _status(response, 413, 3)["message"]
    assert f"{limit} bytes" in message
    assert REGISTRY in message
    assert registry_backend.servicer.requests == []


async def test_request_at_the_backends_limit_is_forwarded(
    client: httpx.AsyncClient, registry_backend: Backend
) -> None:
    body = {"description": "x" * (max_receive(REGISTRY) - 4)}  # encodes to the limit exactly
    response = await client.post("/api/webhooks/register", json=body)
    assert response.status_code == 200, response.text
    assert len(registry_backend.servicer.requests[-1].description) == len(body["description"])


def test_every_service_has_its_receive_limit() -> None:
    names = {
        file.services_by_name[name].full_name
        for file, name in [
            (registry_pb2.DESCRIPTOR, "WebhookRegistry"),
            (rules_pb2.DESCRIPTOR, "AlertRules"),
            (delivery_pb2.DESCRIPTOR, "Delivery"),
            (devices_pb2.DESCRIPTOR, "DeviceConfig"),
            (devices_pb2.DESCRIPTOR, "Devices"),
        ]
    }
    assert set(MAX_RECEIVE) == names


async def test_unknown_query_parameter_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/webhooks", params={"limit": "3"})
    assert "'limit'" in _status(response, 400, 3)["message"]


async def test_unknown_route_is_404(client: httpx.AsyncClient) -> None:
    _status(await client.get("/api/nothing/here"), 404, 5)


async def test_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.put("/api/webhooks/wh_1", json={})
    assert _status(response, 405, 12)["message"].startswith("Method Not Allowed")
    assert set(response.headers["allow"].split(", ")) == {"GET", "DELETE", "PATCH"}


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/api/webhooks/missing", 404, 5),
        ("DELETE", "/api/webhooks/wh_1", 401, 16),
        ("POST", "/api/webhooks/wh_1/enable", 429, 8),
        ("GET", "/api/webhooks/crash", 500, 2),
    ],
)
async def test_grpc_codes_map_to_http(
    client: httpx.AsyncClient, method: str, path: str, status: int, code: int
) -> None:
    body = _status(await client.request(method, path), status, code)
    assert "10.0.0.7" not in body["message"]


async def test_error_details_are_rendered(client: httpx.AsyncClient) -> None:
    body = _status(await client.get("/api/webhooks/invalid"), 400, 3)
    assert body["message"] == "url: must be https"
    (detail,) = body["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert detail["fieldViolations"][0]["field"] == "url"


async def test_backend_down_is_503_and_the_api_keeps_answering(
    client: httpx.AsyncClient,
) -> None:
    body = _status(await client.get("/api/webhooks/wh_1/deliveries"), 503, 14)
    assert "edgesense.v1.Delivery" in body["message"]
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/api/webhooks/wh_2")).status_code == 200


async def test_builtin_routes(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    document = (await client.get("/openapi.json")).json()
    assert "/api/webhooks/{webhookId}/deliveries" in document["paths"]
    await client.get("/api/webhooks/wh_9")
    metrics = await client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    expected = (
        'edgesense_api_requests_total{code="200",method="GET",'
        'route="/api/webhooks/{webhook_id}"} 1.0'
    )
    assert expected in metrics.text
    assert "edgesense_api_request_duration_seconds_bucket" in metrics.text


async def serve(
    backend: Backend, http_addr: str, stop: asyncio.Event
) -> tuple[RunningApi, asyncio.Task[None]]:
    """`run_api` in a task, once it listens; what stopped it if it could not start."""
    settings = Settings(registry_addr=backend.address, http_addr=http_addr)
    started: asyncio.Future[RunningApi] = asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(run_api(settings, stop=stop, on_started=started.set_result))
    either: list[asyncio.Future[Any]] = [started, serving]
    await asyncio.wait(either, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if serving.done():
        serving.result()  # raises why it stopped
    return started.result(), serving


async def test_run_api_serves_until_stopped_and_finishes_in_flight(
    registry_backend: Backend,
) -> None:
    stop = asyncio.Event()
    running, serving = await serve(registry_backend, "127.0.0.1:0", stop)
    registry_backend.servicer.hold_list = True
    async with httpx.AsyncClient(base_url=running.url, trust_env=False) as client:
        in_flight = asyncio.create_task(client.get("/api/webhooks"))
        await registry_backend.servicer.entered.wait()
        stop.set()
        registry_backend.servicer.release.set()
        response = await in_flight
        await serving
        assert response.status_code == 200
        with pytest.raises(httpx.ConnectError):
            await client.get("/healthz")


@pytest.mark.parametrize("address", ["8080", "localhost", "host:http", "127.0.0.1:70000"])
async def test_run_api_names_a_bad_listen_address(address: str) -> None:
    settings = Settings(http_addr=address)
    with pytest.raises(ConfigurationError) as refused:
        await run_api(settings, stop=asyncio.Event())
    assert str(refused.value) == f"EDGESENSE_HTTP_ADDR must be host:port, not {address!r}"


async def test_run_api_with_no_host_listens_on_every_address(
    registry_backend: Backend,
) -> None:
    # As the gRPC services read their addresses: ':port' is every IPv4 address.
    stop = asyncio.Event()
    running, serving = await serve(registry_backend, ":0", stop)
    try:
        assert running.host == "0.0.0.0"
        async with httpx.AsyncClient(trust_env=False) as client:
            response = await client.get(f"http://127.0.0.1:{running.port}/healthz")
        assert response.status_code == 200
    finally:
        stop.set()
        await serving


async def test_unexpected_error_is_a_logged_500(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: object) -> NoReturn:
        raise ZeroDivisionError("bug in the REST API")

    monkeypatch.setattr(Backends, "call", broken)
    with caplog.at_level(logging.ERROR, logger="edgesense.api.handlers"):
        body = _status(await client.get("/api/webhooks/wh_1"), 500, 13)
    assert "bug" not in body["message"]
    logged = [r for r in caplog.records if r.name == "edgesense.api.handlers"]
    assert logged, caplog.text
    assert logged[0].exc_info is not None
    assert logged[0].exc_info[0] is ZeroDivisionError
    monkeypatch.undo()
    assert (await client.get("/api/webhooks/wh_1")).status_code == 200


async def test_deadline_is_504(registry_backend: Backend) -> None:
    registry_backend.servicer.hold_list = True
    backends = {"edgesense.v1.WebhookRegistry": registry_backend.address}
    running = await start_api(backends, call_timeout=0.2)
    try:
        async with httpx.AsyncClient(base_url=running.url, trust_env=False) as client:
            _status(await client.get("/api/webhooks"), 504, 4)
            metrics = (await client.get("/metrics")).text
    finally:
        registry_backend.servicer.release.set()
        await running.stop()
    calls = (
        'edgesense_api_backend_calls_total{grpc_code="DEADLINE_EXCEEDED",'
        'grpc_method="/edgesense.v1.WebhookRegistry/ListWebhooks"} 1.0'
    )
    assert calls in metrics
