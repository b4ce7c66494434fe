"""The /api/rules routes end to end: REST API -> registry -> database, on
SQLite and on PostgreSQL: CRUD, versions, 400s naming the field, other
projects' rules, paging and the per-project limit."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from edgesense.common.config import Settings
from tests.integration.conftest import Api, serving_api

RULE_ID = re.compile(r"rule_[a-z2-7]{20}")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
BOILER = {"name": "Boiler too hot", "field": "temperature", "operator": "gt", "threshold": 80}


@pytest.fixture
async def api(settings: Settings, api_keys: dict[str, str]) -> AsyncIterator[Api]:
    async with serving_api(settings, api_keys) as running:
        yield running


async def create(api: Api, body: dict[str, Any] | None = None, project: str = "project-a") -> Any:
    answer = await api.http.post("/api/rules", json=body or BOILER, headers=api.auth(project))
    assert answer.status_code == 200, answer.text
    return answer.json()


def violation(answer: httpx.Response) -> str:
    """The field a 400's BadRequest detail names (the message starts with it too)."""
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["code"] == 3
    fields = [v["field"] for d in error["details"] for v in d.get("fieldViolations", [])]
    assert len(fields) == 1, error
    assert error["message"].startswith(f"{fields[0]}:"), error
    return str(fields[0])


async def test_create_with_defaults_then_get_and_list(api: Api) -> None:
    rule = await create(api)
    assert RULE_ID.fullmatch(rule["ruleId"])
    assert TIME.fullmatch(rule["createdAt"])
    assert rule["updatedAt"] == rule["createdAt"]
    assert {k: v for k, v in rule.items() if k not in ("ruleId", "createdAt", "updatedAt")} == {
        "name": "Boiler too hot",
        "description": "",
        "field": "temperature",
        "operator": "gt",
        "threshold": 80.0,
        "clearThreshold": 80.0,  # the threshold, spelt out
        "count": 1,
        "forSeconds": 0,
        "severity": "warning",
        "deviceIds": [],
        "gatewayIds": [],
        "enabled": True,
        "version": 1,
    }
    got = await api.http.get(f"/api/rules/{rule['ruleId']}", headers=api.auth())
    assert got.status_code == 200
    assert got.json() == rule
    listed = await api.http.get("/api/rules", headers=api.auth())
    assert listed.json() == {"rules": [rule], "nextPageToken": ""}


async def test_create_with_every_field(api: Api) -> None:
    body = {
        "name": "Pressure out of band",
        "description": "line 3\nboth pumps",
        "field": "hydraulics.pressure",
        "operator": "outside",
        "threshold": 1.5,
        "thresholdHigh": 4.25,
        "count": 3,
        "forSeconds": 600,
        "severity": "critical",
        "deviceIds": ["edge-node-321", "edge-node-322"],
        "gatewayIds": ["gw-1"],
        "enabled": False,
    }
    rule = await create(api, body)
    assert {k: rule[k] for k in body} == body
    assert "clearThreshold" not in rule  # a range has none
    low = await create(api, {**BOILER, "operator": "lte", "threshold": -5, "clearThreshold": 2.5})
    assert (low["threshold"], low["clearThreshold"]) == (-5.0, 2.5)
    assert "thresholdHigh" not in low


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"threshold": None}, "threshold"),
        ({"threshold": "NaN"}, "threshold"),
        ({"threshold": "Infinity"}, "threshold"),
        ({"operator": "above"}, "operator"),
        ({"operator": None}, "operator"),
        ({"clearThreshold": 85}, "clearThreshold"),  # gt: must be at or below 80
        ({"operator": "gte", "clearThreshold": 80.01}, "clearThreshold"),
        ({"operator": "lt", "clearThreshold": 75}, "clearThreshold"),  # lt: at or above
        ({"operator": "lte", "clearThreshold": 79.99}, "clearThreshold"),
        ({"operator": "inside", "thresholdHigh": 90, "clearThreshold": 85}, "clearThreshold"),
        ({"operator": "inside", "thresholdHigh": 79}, "thresholdHigh"),  # below threshold
        ({"operator": "outside"}, "thresholdHigh"),  # missing
        ({"thresholdHigh": 90}, "thresholdHigh"),  # gt takes none
        ({"count": 0}, "count"),
        ({"count": 10_001}, "count"),
        ({"forSeconds": -1}, "forSeconds"),
        ({"forSeconds": 604_801}, "forSeconds"),
        ({"severity": "fatal"}, "severity"),
        ({"field": "a..b"}, "field"),
        ({"field": None}, "field"),
        ({"field": "motor/rpm"}, "field"),
        ({"name": None}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"description": "d" * 1001}, "description"),
        ({"deviceIds": [f"dev-{n}" for n in range(1001)]}, "deviceIds"),
        ({"deviceIds": ["edge-1", "edge-1"]}, "deviceIds"),
        ({"deviceIds": ["not an id"]}, "deviceIds"),
        ({"gatewayIds": [f"gw-{n}" for n in range(1001)]}, "gatewayIds"),
        ({"gatewayIds": ["gw/1"]}, "gatewayIds"),
    ],
)
async def test_each_bad_rule_is_a_400_naming_the_field(
    api: Api, change: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in {**BOILER, **change}.items() if v is not None}
    answer = await api.http.post("/api/rules", json=body, headers=api.auth())
    assert violation(answer) == field
    assert (await api.http.get("/api/rules", headers=api.auth())).json()["rules"] == []


async def test_a_wrongly_typed_or_unknown_member_is_a_400_naming_it(api: Api) -> None:
    typed = await api.http.post("/api/rules", json={**BOILER, "count": "many"}, headers=api.auth())
    assert typed.status_code == 400
    assert "count" in typed.json()["message"]
    unknown = await api.http.post("/api/rules", json={**BOILER, "ruleId": "x"}, headers=api.auth())
    assert unknown.status_code == 400
    assert "ruleId" in unknown.json()["message"]


async def test_patch_keeps_the_other_fields_and_versions_the_condition(api: Api) -> None:
    body = {**BOILER, "description": "boiler room", "deviceIds": ["edge-node-321"], "count": 2}
    rule = await create(api, body)
    path = f"/api/rules/{rule['ruleId']}"

    raised = await api.http.patch(path, json={"threshold": 85}, headers=api.auth())
    assert raised.status_code == 200, raised.text
    after = raised.json()
    assert after["threshold"] == 85.0
    assert after["clearThreshold"] == 85.0  # unset: it follows the threshold
    assert after["version"] == 2
    unchanged = ("ruleId", "name", "description", "field", "operator", "count", "deviceIds")
    assert {k: after[k] for k in unchanged} == {k: rule[k] for k in unchanged}
    assert after["createdAt"] == rule["createdAt"]
    assert after["updatedAt"] >= rule["updatedAt"]

    renamed = await api.http.patch(path, json={"name": "Boiler hot"}, headers=api.auth())
    assert renamed.json()["name"] == "Boiler hot"
    assert renamed.json()["version"] == 2  # not the condition
    unversioned: list[dict[str, Any]] = [
        {"severity": "critical"},
        {"description": ""},
    ]
    for change in unversioned:
        answer = await api.http.patch(path, json=change, headers=api.auth())
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == 2, change
    same = await api.http.patch(path, json={"threshold": 85.0}, headers=api.auth())
    assert same.json()["version"] == 2  # the same condition

    versioned: list[dict[str, Any]] = [
        {"enabled": False},  # delivery compares versions: disabling is one too
        {"count": 3},
        {"forSeconds": 30},
        {"gatewayIds": ["gw-1"]},
        {"clearThreshold": 84},
    ]
    for version, change in enumerate(versioned, 3):
        answer = await api.http.patch(path, json=change, headers=api.auth())
        assert answer.json()["version"] == version, change

    got = (await api.http.get(path, headers=api.auth())).json()
    assert got == answer.json()
    assert (got["name"], got["severity"], got["enabled"], got["description"]) == (
        "Boiler hot",
        "critical",
        False,
        "",
    )


async def test_patch_is_validated_merged(api: Api) -> None:
    rule = await create(api, {**BOILER, "clearThreshold": 75})
    path = f"/api/rules/{rule['ruleId']}"
    for change, field in [
        ({"operator": "inside"}, "thresholdHigh"),  # no thresholdHigh stored
        ({"threshold": 70}, "clearThreshold"),  # 75 would be above it
        ({"operator": "lt"}, "clearThreshold"),  # 75 would be below 80
        ({"threshold": None}, "threshold"),  # null clears: then missing
        ({"count": 0}, "count"),
    ]:
        assert violation(await api.http.patch(path, json=change, headers=api.auth())) == field
    assert (await api.http.get(path, headers=api.auth())).json() == rule  # nothing changed

    ranged = await api.http.patch(
        path, json={"operator": "inside", "thresholdHigh": 90}, headers=api.auth()
    )
    assert ranged.status_code == 200, ranged.text
    assert (ranged.json()["thresholdHigh"], ranged.json()["version"]) == (90.0, 2)
    assert "clearThreshold" not in ranged.json()  # dropped: a range takes none
    cleared = await api.http.patch(path, json={"clearThreshold": None}, headers=api.auth())
    assert cleared.status_code == 200
    back = await api.http.patch(path, json={"operator": "gte"}, headers=api.auth())
    assert back.status_code == 200, back.text
    assert "thresholdHigh" not in back.json()
    assert back.json()["clearThreshold"] == 80.0


async def test_delete_then_gone(api: Api) -> None:
    rule = await create(api)
    path = f"/api/rules/{rule['ruleId']}"
    deleted = await api.http.delete(path, headers=api.auth())
    assert deleted.status_code == 200
    assert deleted.json() == {"ruleId": rule["ruleId"], "status": "deleted"}
    assert (await api.http.get(path, headers=api.auth())).status_code == 404
    assert (await api.http.delete(path, headers=api.auth())).status_code == 404
    assert (await api.http.patch(path, json={"name": "x"}, headers=api.auth())).status_code == 404
    assert (await api.http.get("/api/rules", headers=api.auth())).json()["rules"] == []


async def test_another_projects_rule_is_not_found(api: Api) -> None:
    rule = await create(api, project="project-a")
    path = f"/api/rules/{rule['ruleId']}"
    other = api.auth("project-b")
    for answer in [
        await api.http.get(path, headers=other),
        await api.http.patch(path, json={"threshold": 1}, headers=other),
        await api.http.delete(path, headers=other),
    ]:
        assert answer.status_code == 404, answer.text
        assert answer.json()["code"] == 5
        assert answer.json()["message"] == f"rule {rule['ruleId']} not found"
    assert (await api.http.get("/api/rules", headers=other)).json()["rules"] == []
    # ...and it is untouched for its owner.
    assert (await api.http.get(path, headers=api.auth())).json() == rule


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Basic abc"}]
)
async def test_unauthenticated(api: Api, headers: dict[str, str]) -> None:
    for method, path in [
        ("POST", "/api/rules"),
        ("GET", "/api/rules"),
        ("GET", "/api/rules/rule_x"),
        ("PATCH", "/api/rules/rule_x"),
        ("DELETE", "/api/rules/rule_x"),
    ]:
        body = BOILER if method in ("POST", "PATCH") else None
        answer = await api.http.request(method, path, json=body, headers=headers)
        assert answer.status_code == 401, (method, path, answer.text)


async def test_list_pages_oldest_first(api: Api) -> None:
    made = [(await create(api, {**BOILER, "name": f"rule {n}"}))["ruleId"] for n in range(5)]
    await create(api, project="project-b")
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        params: dict[str, Any] = {"pageSize": 2} | ({"pageToken": token} if token else {})
        page = (await api.http.get("/api/rules", params=params, headers=api.auth())).json()
        seen += [r["ruleId"] for r in page["rules"]]
        pages += 1
        token = page["nextPageToken"]
        if not token:
            break
    assert seen == made
    assert pages == 3
    # A token pages its own project's listing only.
    foreign = await api.http.get(
        "/api/rules", params={"pageToken": token or "x.y"}, headers=api.auth("project-b")
    )
    assert violation(foreign) == "pageToken"


async def test_rules_per_project_are_limited(api: Api) -> None:
    api.registry.rules.max_per_project = 2
    first = await create(api)
    await create(api)
    over = await api.http.post("/api/rules", json=BOILER, headers=api.auth())
    assert over.status_code == 429, over.text
    assert over.json()["code"] == 8  # RESOURCE_EXHAUSTED
    assert "already has 2 rules, the limit (2 per project)" in over.json()["message"]
    # Another project has its own allowance; deleting one frees a place.
    await create(api, project="project-b")
    await api.http.delete(f"/api/rules/{first['ruleId']}", headers=api.auth())
    await create(api)


async def test_openapi_describes_the_rule_routes(api: Api) -> None:
    paths = (await api.http.get("/openapi.json")).json()["paths"]
    assert set(paths["/api/rules"]) == {"get", "post"}
    assert set(paths["/api/rules/{ruleId}"]) == {"get", "patch", "delete"}
