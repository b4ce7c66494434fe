"""Threshold alert rules end to end (issue 13): rules over REST, readings
published as the bridge does, device.alert events at real receivers, and
GET /api/alerts; on SQLite and PostgreSQL.

The process tests (kill -9 between two breaching readings, two delivery
processes on one PostgreSQL) are in test_alert_rules_processes.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgesense.v1 import events_pb2
from tests.integration.cluster import Cluster, reading
from tests.support.receivers import Receiver
from tests.support.waiting import eventually

BOILER = {"name": "Boiler too hot", "field": "temperature", "operator": "gt", "threshold": 80}


async def create_rule(cluster: Cluster, body: dict[str, Any], project: str = "project-a") -> str:
    answer = await cluster.http.post("/api/rules", json=body, headers=cluster.auth(project))
    assert answer.status_code == 200, answer.text
    rule_id = str(answer.json()["ruleId"])
    await rule_known(cluster, rule_id, answer.json()["version"], answer.json()["enabled"])
    return rule_id


async def rule_known(cluster: Cluster, rule_id: str, version: int, enabled: bool = True) -> None:
    """Wait until delivery's rule index has this version of the rule."""
    rules = cluster.delivery.service.acceptor.rules

    def known() -> bool:
        rule = rules.get(rule_id)
        return rule is not None and rule.version == int(version) and rule.enabled == enabled

    await eventually(known, 10, f"delivery to have {rule_id} v{version}")


def gateway_alert(device: str) -> events_pb2.Event:
    event = reading(device=device)
    event.alert.details.update({"code": "E42", "message": "pump fault"})
    return event


def bodies(receiver: Receiver, path: str) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.received if r.path == path]


def alerts_at(receiver: Receiver, path: str) -> list[tuple[str, str, str]]:
    """(device, source, state) of each device.alert body that reached `path`."""
    return [
        (
            b["deviceId"],
            b["payload"].get("source", "gateway"),
            b["payload"].get("state", b["payload"].get("code", "")),
        )
        for b in bodies(receiver, path)
        if b["event"] == "device.alert"
    ]


async def test_rule_alerts_reach_the_webhooks_that_want_them(
    cluster: Cluster, receiver: Receiver
) -> None:
    everything = await cluster.register(receiver.base + "/all", events=["device.alert"])
    only_d2 = await cluster.register(
        receiver.base + "/d2", events=["device.alert"], deviceIds=["d2"]
    )
    await cluster.register(receiver.base + "/data", events=["device.data"])
    rule_id = await create_rule(cluster, {**BOILER, "severity": "critical", "clearThreshold": 75})

    await cluster.publish([reading(device="d1", values={"temperature": 85.5})])
    await cluster.publish([reading(device="d2", values={"temperature": 90})])
    await cluster.publish([gateway_alert("d1")])
    # Still in breach, then within the hysteresis band: nothing; then clear.
    for value in (99, 78, 74):
        await cluster.publish([reading(device="d1", values={"temperature": value})])

    await eventually(lambda: len(alerts_at(receiver, "/all")) == 4, 20, "four alerts at /all")
    await eventually(lambda: len(bodies(receiver, "/data")) == 5, 20, "five readings at /data")
    await eventually(lambda: len(alerts_at(receiver, "/d2")) == 1, 20, "one alert at /d2")
    assert sorted(alerts_at(receiver, "/all")) == [
        ("d1", "gateway", "E42"),
        ("d1", "rule", "resolved"),
        ("d1", "rule", "triggered"),
        ("d2", "rule", "triggered"),
    ]
    assert alerts_at(receiver, "/d2") == [("d2", "rule", "triggered")]

    envelope = next(
        b
        for b in bodies(receiver, "/all")
        if b["payload"].get("state") == "triggered" and b["deviceId"] == "d1"
    )
    assert envelope["webhookId"] == everything
    assert envelope["gatewayId"] == "gw-1"
    assert envelope["eventId"].startswith("evt_")
    # The reading's own time (cluster.reading's fixed timestamp).
    assert envelope["timestamp"] == "2025-07-24T10:35:17Z"
    triggered = envelope["payload"]
    assert {k: triggered[k] for k in ("ruleId", "ruleName", "severity", "field", "value")} == {
        "ruleId": rule_id,
        "ruleName": "Boiler too hot",
        "severity": "critical",
        "field": "temperature",
        "value": 85.5,
    }
    assert (triggered["operator"], triggered["threshold"], triggered["clearThreshold"]) == (
        "gt",
        80,
        75,
    )
    assert triggered["since"] == "2025-07-24T10:35:17Z"
    assert not any(b["webhookId"] == only_d2 for b in bodies(receiver, "/all"))

    # GET /api/alerts: newest first; filters; pages.
    listing = await alerts(cluster)
    assert [(a["deviceId"], a["state"]) for a in listing] == [("d2", "active"), ("d1", "resolved")]
    d1 = listing[1]
    assert d1["value"] == 85.5
    assert d1["resolvedValue"] == 74
    assert d1["resolvedReason"] == "cleared"
    assert d1["ruleId"] == rule_id
    assert d1["severity"] == "critical"
    assert "resolvedAt" in d1
    assert [a["deviceId"] for a in await alerts(cluster, state="active")] == ["d2"]
    assert [a["deviceId"] for a in await alerts(cluster, deviceId="d1")] == ["d1"]
    assert await alerts(cluster, ruleId="rule_none") == []
    assert await alerts(cluster, project="project-b") == []
    first = await cluster.http.get("/api/alerts", params={"pageSize": 1}, headers=cluster.auth())
    token = first.json()["nextPageToken"]
    second = await cluster.http.get(
        "/api/alerts", params={"pageSize": 1, "pageToken": token}, headers=cluster.auth()
    )
    assert [a["deviceId"] for a in second.json()["alerts"]] == ["d1"]
    assert "nextPageToken" not in second.json() or not second.json()["nextPageToken"]
    bad = await cluster.http.get("/api/alerts", params={"state": "open"}, headers=cluster.auth())
    assert bad.status_code == 400
    assert "state" in bad.text


async def alerts(cluster: Cluster, project: str = "project-a", **query: str) -> list[Any]:
    answer = await cluster.http.get("/api/alerts", params=query, headers=cluster.auth(project))
    assert answer.status_code == 200, answer.text
    return list(answer.json().get("alerts", []))


@pytest.mark.parametrize("ending", ["disable", "delete"])
async def test_disabling_or_deleting_a_rule_resolves_its_alerts_with_an_event(
    cluster: Cluster, receiver: Receiver, ending: str
) -> None:
    await cluster.register(receiver.url, events=["device.alert"])
    rule_id = await create_rule(cluster, BOILER)
    await cluster.publish([reading(device=d, values={"temperature": 90}) for d in ("d1", "d2")])
    await eventually(lambda: len(receiver.received) == 2, 20, "two triggered alerts")

    if ending == "disable":
        answer = await cluster.http.patch(
            f"/api/rules/{rule_id}", json={"enabled": False}, headers=cluster.auth()
        )
    else:
        answer = await cluster.http.delete(f"/api/rules/{rule_id}", headers=cluster.auth())
    assert answer.status_code == 200, answer.text

    reason = "rule disabled" if ending == "disable" else "rule deleted"
    await eventually(lambda: len(receiver.received) == 4, 20, "two resolved alerts")
    resolved = [b for b in bodies(receiver, "/hook") if b["payload"]["state"] == "resolved"]
    assert sorted(b["deviceId"] for b in resolved) == ["d1", "d2"]
    assert {b["payload"]["reason"] for b in resolved} == {reason}
    assert all("value" not in b["payload"] for b in resolved)
    assert await alerts(cluster, state="active") == []
    assert {a["resolvedReason"] for a in await alerts(cluster)} == {reason}
    # The rule judges nothing any more (its alerts are stored with the
    # reading, so once Publish confirms, GET /api/alerts is the whole story);
    # the webhook still gets the gateway's own alerts.
    await cluster.publish([reading(device="d3", values={"temperature": 99}), gateway_alert("d3")])
    assert await alerts(cluster, deviceId="d3") == []
    await eventually(lambda: len(receiver.received) == 5, 20, "the gateway's alert")
    assert json.loads(receiver.received[-1].body)["payload"].get("code") == "E42"


async def test_narrowing_a_rule_resolves_the_alerts_of_devices_it_no_longer_judges(
    cluster: Cluster, receiver: Receiver
) -> None:
    await cluster.register(receiver.url, events=["device.alert"])
    rule_id = await create_rule(cluster, BOILER)
    await cluster.publish([reading(device=d, values={"temperature": 90}) for d in ("d1", "d2")])
    await eventually(lambda: len(receiver.received) == 2, 20, "two triggered alerts")
    answer = await cluster.http.patch(
        f"/api/rules/{rule_id}", json={"deviceIds": ["d1"]}, headers=cluster.auth()
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == 2
    await eventually(lambda: len(receiver.received) == 3, 20, "d2's alert resolved")
    body = json.loads(receiver.received[-1].body)
    assert (body["deviceId"], body["payload"]["state"], body["payload"]["reason"]) == (
        "d2",
        "resolved",
        "rule changed",
    )
    assert [a["deviceId"] for a in await alerts(cluster, state="active")] == ["d1"]


async def test_device_and_gateway_filters_and_nested_fields(
    cluster: Cluster, receiver: Receiver
) -> None:
    await cluster.register(receiver.url, events=["device.alert"])
    await create_rule(
        cluster,
        {
            "name": "Overspeed",
            "field": "motor.rpm",
            "operator": "outside",
            "threshold": 100,
            "thresholdHigh": 3000,
            "deviceIds": ["m1", "m2"],
            "gatewayIds": ["gw-1"],
        },
    )
    other_gateway = reading(device="m2", values={"motor": {"rpm": 5000}})
    other_gateway.gateway_id = "gw-2"
    await cluster.publish(
        [
            reading(device="m3", values={"motor": {"rpm": 5000}}),  # not its device
            other_gateway,  # not its gateway
            reading(device="m1", values={"motor": {"rpm": "fast"}}),  # not a number
            reading(device="m1", values={"rpm": 5000}),  # not its field
            reading(device="m1", values={"motor": {"rpm": 3500}}),  # this one
        ]
    )
    await eventually(lambda: len(receiver.received) == 1, 20, "one alert")
    body = json.loads(receiver.received[0].body)
    payload = body["payload"]
    assert (body["deviceId"], payload["state"], payload["value"], payload["thresholdHigh"]) == (
        "m1",
        "triggered",
        3500,
        3000,
    )
    # A marker reading after the ignored ones: nothing else was raised before it.
    await cluster.publish([reading(device="m2", values={"motor": {"rpm": 50}})])
    await eventually(lambda: len(receiver.received) == 2, 20, "the marker's alert")
    assert json.loads(receiver.received[1].body)["deviceId"] == "m2"
