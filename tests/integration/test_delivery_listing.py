"""Listing deliveries with hostile input, on SQLite and PostgreSQL: page
tokens that overflow, that come from another project or another listing, and
control characters in path ids and query strings."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.integration.cluster import Cluster, reading
from tests.support.receivers import Receiver


def field_of(answer: httpx.Response) -> str:
    assert answer.status_code == 400, answer.text
    error = answer.json()
    return str(error["details"][0]["fieldViolations"][0]["field"])


def old_style(number: str) -> str:
    """A token as the service issued them before they were signed."""
    return base64.urlsafe_b64encode(f"seq:{number}".encode()).decode().rstrip("=")


async def test_page_tokens_are_bound_to_their_listing(cluster: Cluster, receiver: Receiver) -> None:
    mine = await cluster.register(receiver.url)
    theirs = await cluster.register(receiver.url, project="project-b")
    await cluster.publish([reading() for _ in range(5)] + [reading(project="project-b")])
    await cluster.wait_deliveries(mine, "succeeded", 5)
    path = f"/api/webhooks/{mine}/deliveries"

    first = await cluster.http.get(path, params={"pageSize": 2}, headers=cluster.auth())
    token = first.json()["nextPageToken"]
    second = await cluster.http.get(
        path, params={"pageSize": 2, "pageToken": token}, headers=cluster.auth()
    )
    assert second.status_code == 200
    assert len(second.json()["deliveries"]) == 2

    # Another project with the token on our webhook: not found, not an empty page.
    foreign = await cluster.http.get(
        path, params={"pageToken": token}, headers=cluster.auth("project-b")
    )
    assert foreign.status_code == 404, foreign.text
    # Another project's webhook, another filter: the token does not page them.
    elsewhere = await cluster.http.get(
        f"/api/webhooks/{theirs}/deliveries",
        params={"pageToken": token},
        headers=cluster.auth("project-b"),
    )
    assert field_of(elsewhere) == "pageToken"
    filtered = await cluster.http.get(
        path, params={"pageToken": token, "status": "failed"}, headers=cluster.auth()
    )
    assert field_of(filtered) == "pageToken"


@pytest.mark.parametrize(
    "token",
    [
        old_style("99999999999999999999999999"),  # overflowed: 500 on SQLite, 503 on PostgreSQL
        old_style("9223372036854775808"),
        old_style("1"),  # well formed once, but not signed
        "nonsense",
        "abc.def",
        "%00",
        "x" * 1000,
    ],
)
async def test_a_malformed_page_token_is_a_400(
    cluster: Cluster, receiver: Receiver, token: str
) -> None:
    mine = await cluster.register(receiver.url)
    answer = await cluster.http.get(
        f"/api/webhooks/{mine}/deliveries", params={"pageToken": token}, headers=cluster.auth()
    )
    assert field_of(answer) == "pageToken"


@pytest.mark.parametrize(
    ("method", "path", "params", "field"),
    [
        ("GET", "/api/webhooks/wh_%00x/deliveries", {}, "webhookId"),
        ("GET", "/api/webhooks/WEBHOOK/deliveries", {"status": "held\x00"}, "status"),
        ("POST", "/api/deliveries/dlv_%00x/redeliver", {}, "deliveryId"),
        ("POST", "/api/deliveries/dlv_%1bx/redeliver", {}, "deliveryId"),
    ],
)
async def test_control_characters_in_delivery_requests_answer_400(
    cluster: Cluster,
    receiver: Receiver,
    method: str,
    path: str,
    params: dict[str, str],
    field: str,
) -> None:
    mine = await cluster.register(receiver.url)
    answer = await cluster.http.request(
        method, path.replace("WEBHOOK", mine), params=params, headers=cluster.auth()
    )
    assert field_of(answer) == field
    assert "control character" in answer.json()["message"]
