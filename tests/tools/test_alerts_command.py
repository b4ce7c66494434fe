"""`edgesense alerts list` as a user runs it (a subprocess with EDGESENSE_API_URL
and EDGESENSE_API_KEY) against a real HTTP server on loopback.

The server side of GET /api/alerts (Delivery.ListAlerts) is being built beside
this command, so the server here is a small aiohttp app answering canned JSON
in the transcoder's shape (camelCase, RFC 3339 times, proto3 JSON: absent
fields left out), paging by an offset token and applying the three filters.
It records every query, so the tests check what the command asked as well as
what it printed. Once ListAlerts is served, the same command runs against the
real cluster in the alert rules' end-to-end tests.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tests.support.ports import free_port
from tests.tools.conftest import run_cli

KEY = "esk_test_alerts"

# Newest first, as the API lists them.
ALERTS: list[dict[str, Any]] = [
    {
        "alertId": "alr_3",
        "ruleId": "rule_hot",
        "ruleName": "Boiler too hot",
        "deviceId": "edge-node-321",
        "gatewayId": "gw-1",
        "state": "active",
        "severity": "critical",
        "field": "temperature",
        "value": 95.2,
        "triggeredAt": "2025-07-24T10:05:00Z",
        "since": "2025-07-24T10:04:50Z",
        "triggeredEventId": "evt_3",
    },
    {
        "alertId": "alr_2",
        "ruleId": "rule_hot",
        "ruleName": "Boiler too hot",
        "deviceId": "edge-node-7",
        "gatewayId": "gw-1",
        "state": "resolved",
        "severity": "critical",
        "field": "temperature",
        "value": 82.4,
        "triggeredAt": "2025-07-24T10:01:00Z",
        "since": "2025-07-24T10:01:00Z",
        "resolvedAt": "2025-07-24T10:03:00Z",
        "resolvedValue": 70.1,
        "resolvedReason": "cleared",
        "triggeredEventId": "evt_2",
        "resolvedEventId": "evt_2b",
    },
    {
        "alertId": "alr_1",
        "ruleId": "rule_dry",
        "ruleName": "Dry \x1b[31mair",
        "deviceId": "edge-node-321",
        "gatewayId": "gw-2",
        "state": "resolved",
        "severity": "info",
        "field": "humidity",
        "value": 12,
        "triggeredAt": "2025-07-24T09:00:00Z",
        "since": "2025-07-24T09:00:00Z",
        "resolvedAt": "2025-07-24T09:30:00Z",
        "resolvedReason": "rule deleted",
        "triggeredEventId": "evt_1",
        "resolvedEventId": "evt_1b",
    },
]
FILTERS = {"state": "state", "ruleId": "ruleId", "deviceId": "deviceId"}


@dataclass
class AlertsApi:
    """GET /api/alerts with canned alerts; `queries` holds what was asked."""

    url: str = ""
    queries: list[dict[str, str]] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.queries.append(query)
        self.authorizations.append(request.headers.get("Authorization", ""))
        if query.get("deviceId") == "unavailable":
            body = {"code": 14, "message": "delivery is unavailable", "details": []}
            return web.json_response(body, status=503)
        chosen = [a for a in ALERTS if all(a[k] == query[k] for k in FILTERS if k in query)]
        start = int(query.get("pageToken") or 0)
        end = start + int(query.get("pageSize") or 50)
        page: dict[str, Any] = {"alerts": chosen[start:end]}
        if end < len(chosen):
            page["nextPageToken"] = str(end)  # proto3 JSON leaves out an empty token
        return web.json_response(page)


@pytest.fixture
async def alerts_api() -> AsyncIterator[AlertsApi]:
    api = AlertsApi()
    app = web.Application()
    app.router.add_get("/api/alerts", api.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    api.url = f"http://127.0.0.1:{port}"
    try:
        yield api
    finally:
        await runner.cleanup()


def env(api: AlertsApi) -> dict[str, str]:
    return {"EDGESENSE_API_URL": api.url, "EDGESENSE_API_KEY": KEY}


async def test_list_shows_a_table_of_the_newest_page(alerts_api: AlertsApi) -> None:
    listed = await run_cli("alerts", "list", env=env(alerts_api))
    assert listed.code == 0, listed.err
    assert listed.err == ""
    # One page of 50, no filter, the key as a bearer token.
    assert alerts_api.queries == [{"pageSize": "50"}]
    assert alerts_api.authorizations == [f"Bearer {KEY}"]
    header, *rows = listed.lines
    assert header.split() == [
        *("ALERT", "ID", "STATE", "SEVERITY", "DEVICE", "GATEWAY", "VALUE", "TRIGGERED"),
        *("RESOLVED", "RESOLVED", "BY", "RULE", "ID", "RULE", "NAME"),
    ]
    assert [row.split()[0] for row in rows] == ["alr_3", "alr_2", "alr_1"]
    cells = {row.split()[0]: row for row in rows}
    # Aligned: every column starts where its header does.
    for alert, name, value in (
        ("alr_3", "VALUE", "temperature=95.2"),
        ("alr_3", "RESOLVED", "-"),
        ("alr_2", "RESOLVED BY", "temperature=70.1"),
        ("alr_1", "RESOLVED BY", "rule deleted"),
        ("alr_1", "VALUE", "humidity=12"),
        ("alr_2", "TRIGGERED", "2025-07-24T10:01:00Z"),
        ("alr_2", "RULE ID", "rule_hot"),
    ):
        row = cells[alert]
        assert row[header.index(name) :].startswith(value), (name, header, row)
    assert cells["alr_3"].split()[1:5] == ["active", "critical", "edge-node-321", "gw-1"]
    assert cells["alr_3"].endswith("Boiler too hot")
    # A name is shown, never obeyed: the escape sequence is written out.
    assert cells["alr_1"].endswith("Dry \\x1b[31mair")


async def test_filters_and_page_size_are_the_query(alerts_api: AlertsApi) -> None:
    listed = await run_cli(
        "alerts", "list", "--state", "resolved", "--rule-id", "rule_hot",
        "--device-id", "edge-node-7", "--page-size", "7", env=env(alerts_api),
    )  # fmt: skip
    assert listed.code == 0, listed.err
    assert alerts_api.queries == [
        {"state": "resolved", "ruleId": "rule_hot", "deviceId": "edge-node-7", "pageSize": "7"}
    ]
    assert [row.split()[0] for row in listed.lines[1:]] == ["alr_2"]

    nothing = await run_cli("alerts", "list", "--state", "active", "--device-id", "edge-node-7",
                            env=env(alerts_api))  # fmt: skip
    assert nothing.code == 0, nothing.err
    assert nothing.out == ""
    assert nothing.err == "no active alerts on device edge-node-7\n"
    none_of_rule = await run_cli("alerts", "list", "--rule-id", "rule_x", env=env(alerts_api))
    assert none_of_rule.err == "no alerts of rule rule_x\n"


async def test_one_page_says_there_are_more_and_all_follows_the_tokens(
    alerts_api: AlertsApi,
) -> None:
    first = await run_cli("alerts", "list", "--page-size", "2", env=env(alerts_api))
    assert first.code == 0, first.err
    assert [row.split()[0] for row in first.lines[1:]] == ["alr_3", "alr_2"]
    assert first.err == "showing the newest 2; there are more: --all shows every page\n"
    assert alerts_api.queries == [{"pageSize": "2"}]

    alerts_api.queries.clear()
    every = await run_cli(
        "alerts", "list", "--all", "--page-size", "2", "--state", "resolved", "--json",
        env=env(alerts_api),
    )  # fmt: skip
    assert every.code == 0, every.err
    assert every.err == ""
    body = json.loads(every.out)
    assert body == {"alerts": [ALERTS[1], ALERTS[2]], "nextPageToken": ""}
    assert alerts_api.queries == [{"state": "resolved", "pageSize": "2"}]

    alerts_api.queries.clear()
    every = await run_cli("alerts", "list", "--all", "--page-size", "1", env=env(alerts_api))
    assert [row.split()[0] for row in every.lines[1:]] == ["alr_3", "alr_2", "alr_1"]
    assert alerts_api.queries == [
        {"pageSize": "1"},
        {"pageSize": "1", "pageToken": "1"},
        {"pageSize": "1", "pageToken": "2"},
    ]

    # --json without --all: the token of the next page, for a script to go on.
    one = await run_cli("alerts", "list", "--page-size", "2", "--json", env=env(alerts_api))
    assert json.loads(one.out)["nextPageToken"] == "2"


async def test_api_errors_exit_1_and_bad_options_exit_2(alerts_api: AlertsApi) -> None:
    failed = await run_cli(
        "alerts", "list", "--device-id", "unavailable", env=env(alerts_api)
    )  # fmt: skip
    assert failed.code == 1
    assert failed.out == ""
    assert failed.err == "error: delivery is unavailable (HTTP 503)\n"

    for bad, says in (
        (["--state", "open"], "invalid choice: 'open'"),
        (["--page-size", "0"], "must be at least 1 and at most 500, not 0"),
        (["--page-size", "501"], "must be at least 1 and at most 500, not 501"),
        (["--all", "extra"], "unrecognized arguments: extra"),
    ):
        answer = await run_cli("alerts", "list", *bad, env=env(alerts_api))
        assert answer.code == 2, (bad, answer.err)
        assert says in answer.err, (bad, answer.err)
    assert all(q.get("deviceId") == "unavailable" for q in alerts_api.queries)

    unreachable = f"http://127.0.0.1:{free_port()}"
    gone = await run_cli(
        "alerts", "list", env={"EDGESENSE_API_URL": unreachable, "EDGESENSE_API_KEY": KEY}
    )
    assert gone.code == 3
    assert gone.err == f"error: cannot reach the API at {unreachable}; is `edgesense up` running?\n"
