"""Bad request bodies over real HTTP: fields named, UTF-8 only, a client gone mid-body."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from edgesense.api import RunningApi
from tests.support.waiting import eventually

if TYPE_CHECKING:
    from tests.api.conftest import Backend

REGISTER = "/api/webhooks/register"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
VALID = {"url": "https://r.test/h", "events": ["device.data"], "secret": "s"}


def _violation(response: httpx.Response, status: int = 400) -> tuple[str, dict[str, Any]]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == 3
    [detail] = body["details"]
    assert detail["@type"] == BAD_REQUEST
    [violation] = detail["fieldViolations"]
    return body["message"], violation


async def test_unknown_field_is_named_with_a_bad_request_detail(
    client: httpx.AsyncClient, registry_backend: Backend
) -> None:
    message, violation = _violation(await client.post(REGISTER, json={**VALID, "urll": "x"}))
    assert violation == {"field": "urll", "description": 'unknown field "urll"'}
    assert message == 'urll: unknown field "urll"'
    assert "Message type" not in message
    assert registry_backend.servicer.requests == []


@pytest.mark.parametrize(
    ("body", "field", "description"),
    [
        ({"events": "device.data"}, "events", "must be a list of strings, not a string"),
        ({"events": ["device.data", 7]}, "events[1]", "must be a string, not a number"),
        ({"url": ["https://r.test/h"]}, "url", "must be a string, not an array"),
        ({"device_ids": {"a": 1}}, "device_ids", "must be a list of strings, not an object"),
        ({"secret": True}, "secret", "must be a string, not a boolean"),
    ],
)
async def test_wrong_types_name_the_field_and_the_expected_type(
    client: httpx.AsyncClient, body: dict[str, Any], field: str, description: str
) -> None:
    message, violation = _violation(await client.post(REGISTER, json={**VALID, **body}))
    assert violation == {"field": field, "description": description}
    assert message == f"{field}: {description}"


async def test_proto_names_are_accepted_and_a_misspelt_field_is_named(
    client: httpx.AsyncClient,
) -> None:
    # proto names are accepted as json_format accepts them; a misspelt one is not
    response = await client.post(REGISTER, json={**VALID, "device_ids": ["d"], "deviceIdz": []})
    assert _violation(response)[1]["field"] == "deviceIdz"


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        ('{"url": "https://r.test/h"}'.encode("utf-16"), "UTF-16 byte order mark"),
        ('{"url": "https://r.test/h"}'.encode("utf-16-le"), "NUL byte at offset 1"),
        ('{"url": "https://r.test/h"}'.encode("utf-32"), "UTF-32 byte order mark"),
        ('{"url": "https://r.test/h"}'.encode("utf-8-sig"), "UTF-8 byte order mark"),
        ('{"description": "caf\u00e9"}'.encode("latin-1"), "not UTF-8 (byte 0xe9 at offset 20)"),
    ],
)
async def test_bodies_that_are_not_utf8_are_refused(
    client: httpx.AsyncClient, registry_backend: Backend, content: bytes, phrase: str
) -> None:
    response = await client.post(
        REGISTER, content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert phrase in response.json()["message"]
    assert registry_backend.servicer.requests == []


async def test_a_charset_other_than_utf8_is_415(
    client: httpx.AsyncClient, registry_backend: Backend
) -> None:
    response = await client.post(
        REGISTER,
        content=b'{"url": "https://r.test/h"}',
        headers={"Content-Type": "application/json; charset=iso-8859-1"},
    )
    assert response.status_code == 415, response.text
    assert "charset 'iso-8859-1' is not supported" in response.json()["message"]
    utf8 = {"Content-Type": "application/json; charset=UTF-8"}
    accepted = await client.post(REGISTER, content=b'{"url": "https://r.test/h"}', headers=utf8)
    assert accepted.status_code == 200, accepted.text
    assert len(registry_backend.servicer.requests) == 1


async def test_a_client_gone_mid_body_is_a_quiet_499(
    api: RunningApi, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edgesense.api")
    _, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(
        b"POST /api/webhooks/register HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b'Content-Length: 200\r\n\r\n{"url": "https://r.test/h", '
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    line = (
        'edgesense_api_requests_total{code="499",method="POST",route="/api/webhooks/register"} 1.0'
    )
    metrics = ""

    async def counted() -> bool:
        nonlocal metrics
        metrics = (await client.get("/metrics")).text
        return line in metrics

    await eventually(counted, 5, "the 499 counted")
    assert 'code="500"' not in metrics
    ours = [r for r in caplog.records if r.name.startswith("edgesense")]
    assert all(r.levelno < logging.WARNING and r.exc_info is None for r in ours), caplog.text
    assert len([r for r in ours if "mid-body" in r.getMessage()]) == 1
