"""The `rules` scenario's own parts (issue 13): the rule mix, the figures,
probes that go on until the rules are live, and the REST calls that create
rules and read alerts.

The alert rules API (POST /api/rules, GET /api/alerts) is being built beside
this scenario, so the REST calls are checked against a real aiohttp server
answering what the API answers: the transcoder's 404 for a route it does not
have, a google.rpc.Status error, or canned Rule / ListAlerts JSON. A whole
`rules` phase through the four services is the scenario itself
(`python -m bench.run --scenarios rules`), once that API is served.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from google.protobuf import struct_pb2

from bench import scenarios
from bench.cluster import API_KEYS, EdgeSense
from bench.databases import Database
from bench.mosquitto import start_mosquitto
from bench.phases import RULES, RULES_WITHOUT, plan
from bench.processes import Children
from bench.publisher import DEVICES, GATEWAY, device_id, payload
from bench.receivers import PROJECT, EndpointSpec, Receivers
from bench.report import figures, markdown
from bench.rules import CANARY_NAME, Rule, rule_mix
from bench.systems import Baseline
from edgesense.common.thresholds import (
    OPERATORS,
    RANGE_OPERATORS,
    SEVERITIES,
    field_problem,
    number_at,
)
from edgesense.common.thresholds import Rule as Judged
from tests.bench.test_bench_smoke import _require_mosquitto
from tests.support.ports import free_port


def judged(n: int, spec: Rule) -> Judged:
    """A rule as delivery evaluates it (edgesense.common.thresholds), from its JSON."""
    return Judged(
        rule_id=f"rule_{n}",
        project_id=PROJECT,
        name=spec["name"],
        field=spec["field"],
        operator=spec["operator"],
        threshold=float(spec["threshold"]),
        threshold_high=spec.get("thresholdHigh"),
        clear_threshold=spec.get("clearThreshold"),
        count=spec.get("count", 1),
        for_seconds=spec.get("forSeconds", 0),
        severity=spec.get("severity", "warning"),
        device_ids=frozenset(spec.get("deviceIds", [])),
        gateway_ids=frozenset(spec.get("gatewayIds", [])),
        enabled=True,
        version=1,
    )


def reading(seq: int) -> struct_pb2.Struct:
    """A bench reading's payload as the bridge hands it on (a Struct)."""
    values = struct_pb2.Struct()
    values.update(json.loads(payload(seq, "rules", probe=seq < 0)))
    return values


def matching(rules: list[Judged], device: str, values: struct_pb2.Struct) -> list[Judged]:
    """The rules a reading is judged against: its field there, its device and gateway."""
    return [
        r for r in rules if r.applies_to(GATEWAY, device) and number_at(values, r.path) is not None
    ]


def test_the_mix_is_100_valid_rules_each_reading_judged_by_1_to_3_none_crossed() -> None:
    specs = rule_mix()
    assert len(specs) == 100
    assert len({s["name"] for s in specs}) == 100
    assert specs[-1]["name"] == CANARY_NAME
    assert [s["name"] for s in specs].count(CANARY_NAME) == 1
    for spec in specs:
        assert field_problem(spec["field"]) is None, spec
        assert spec["operator"] in OPERATORS, spec
        assert spec.get("severity", "warning") in SEVERITIES, spec
        assert ("thresholdHigh" in spec) == (spec["operator"] in RANGE_OPERATORS), spec
        assert 1 <= len(spec["name"]) <= 200
    rules = [judged(n, spec) for n, spec in enumerate(specs)]

    measured = reading(7)
    per_device = {}
    for n in range(DEVICES):
        device = device_id(n)
        found = matching(rules, device, measured)
        per_device[device] = len(found)
        crossed = [r.name for r in found if r.breaches(number_at(measured, r.path) or 0.0)]
        assert crossed == [], (device, crossed)
    assert set(per_device.values()) == {2, 3}
    assert 2.0 <= sum(per_device.values()) / DEVICES <= 2.5
    # 80 of the 100 can match no reading of the bench.
    judged_at_all = {
        r.rule_id for n in range(DEVICES) for r in matching(rules, device_id(n), measured)
    }
    assert len(judged_at_all) == 1 + 50 + 10 + 1

    # A probe (seq -1, from dev-0) crosses the canary and nothing else.
    probe = reading(-1)
    crossed = [
        r.name
        for r in matching(rules, device_id(0), probe)
        if r.breaches(number_at(probe, r.path) or 0.0)
    ]
    assert crossed == [CANARY_NAME]
    # The first measured reading of dev-0 (seq 0) clears it.
    [canary] = [r for r in rules if r.name == CANARY_NAME]
    assert canary.clears(0.0)


def test_the_scenario_is_saturation_without_then_with_the_rules() -> None:
    for quick in (True, False):
        phases = plan(quick)
        [saturation] = phases["saturation"]
        without, with_rules = phases["rules"]
        assert (without.name, with_rules.name) == (RULES_WITHOUT, RULES)
        for phase in (without, with_rules):
            assert (phase.count, phase.rate) == (saturation.count, saturation.rate)
            assert [e.name for e in phase.endpoints] == ["hook"]
            assert phase.systems == ("edgesense",)
        assert (without.rules, list(with_rules.rules)) == ((), rule_mix())
        names = list(phases)
        assert names.index("rules") == names.index("ordered") + 1


def test_rules_figures_are_with_without_and_their_ratio() -> None:
    def phase(name: str, rate: float, rules: int) -> dict[str, Any]:
        return {
            "system": "edgesense",
            "phase": name,
            "deliveries_per_s": rate,
            "rules": rules,
            "processes": {},
            "delivered": 1,
            "seconds": 1.0,
        }

    phases = [phase(RULES_WITHOUT, 4000.0, 0), phase(RULES, 3800.0, 100)]
    rows = {r["figure"]: r for r in figures(phases)}
    assert rows["Rules: saturation without rules, deliveries/s"]["edgesense"] == 4000.0
    assert rows["Rules: the same with 100 alert rules, deliveries/s"]["edgesense"] == 3800.0
    ratio = rows["Rules ratio (with / without)"]
    assert (ratio["edgesense"], ratio["target"], ratio["result"]) == (0.95, "≥ 0.9", "PASS")
    assert "| Rules ratio (with / without) | 0.950 | - | - | ≥ 0.9 | PASS |" in markdown(
        list(rows.values()), phases
    )
    phases[1]["deliveries_per_s"] = 3500.0
    rows = {r["figure"]: r for r in figures(phases)}
    assert rows["Rules ratio (with / without)"]["result"] == "FAIL"
    # The rules phase failed (no rules API yet): no ratio, no verdict.
    rows = {r["figure"]: r for r in figures(phases[:1])}
    assert rows["Rules ratio (with / without)"]["result"] == ""
    assert "Rules: the same with alert rules, deliveries/s" in rows


@pytest.mark.mosquitto
@pytest.mark.timeout(60)
async def test_probes_go_on_until_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _require_mosquitto()
    children = Children(tmp_path)
    receivers = None
    try:
        _, port = await start_mosquitto(children)
        receivers = await Receivers.start(children, [EndpointSpec("a")])
        await Baseline().start(children, port, receivers.targets)
        asked: list[int] = []

        async def ready() -> str | None:
            asked.append((await receivers.stats())["a"]["probes"])
            return None if len(asked) == 3 else f"not yet ({len(asked)})"

        sent = await scenarios.wait_routed(port, receivers, [PROJECT], ready)
        # Asked only once the target was routed, and until it said ready.
        assert len(asked) == 3
        assert asked[0] >= 1
        assert sent >= 1

        monkeypatch.setattr(scenarios, "ROUTE_SECONDS", 1.0)

        async def never() -> str:
            return "the canary rule rule_x has no active alert"

        with pytest.raises(RuntimeError, match=r"not ready after 1.0 s: the canary rule rule_x"):
            await scenarios.wait_routed(port, receivers, [PROJECT], never)
    finally:
        if receivers is not None:
            await receivers.close()
        await children.stop_all()


class RulesApi:
    """POST /api/rules and GET /api/alerts as told: canned answers, every request kept."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.keys: set[str] = set()
        self.serves_rules = True

    async def create(self, request: web.Request) -> web.Response:
        self.keys.add(request.headers["Authorization"])
        if not self.serves_rules:
            message = "Not Found: no route for POST /api/rules"
            return web.json_response({"code": 5, "message": message, "details": []}, status=404)
        self.created.append(await request.json())
        return web.json_response({"ruleId": f"rule_{len(self.created)}", "version": "1"})

    async def alerts(self, request: web.Request) -> web.Response:
        if request.query.get("ruleId") == "rule_unserved":
            body = {"code": 12, "message": "Method not implemented!", "details": []}
            return web.json_response(body, status=501)
        assert dict(request.query) == {"ruleId": "rule_1", "state": "active"}
        return web.json_response({"alerts": [{"alertId": "alr_1", "state": "active"}]})


@pytest.fixture
async def rules_api() -> AsyncIterator[tuple[RulesApi, EdgeSense]]:
    api = RulesApi()
    app = web.Application()
    app.router.add_post("/api/rules", api.create)
    app.router.add_get("/api/alerts", api.alerts)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    system = EdgeSense(Database())
    system.env = {"EDGESENSE_HTTP_ADDR": f"127.0.0.1:{port}"}
    try:
        yield api, system
    finally:
        await runner.cleanup()


async def test_rules_are_created_over_rest_in_order(rules_api: tuple[RulesApi, EdgeSense]) -> None:
    api, system = rules_api
    specs = rule_mix()
    ids = await system.create_rules(specs)
    assert len(ids) == 100
    assert len(set(ids)) == 100
    # Created as given (in chunks), each answer's id in its rule's place.
    assert sorted(api.created, key=lambda r: str(r["name"])) == sorted(
        specs, key=lambda r: str(r["name"])
    )
    assert [api.created[int(i.split("_")[1]) - 1]["name"] for i in ids] == [
        s["name"] for s in specs
    ]
    assert api.keys == {f"Bearer {API_KEYS[PROJECT]}"}
    assert await system.active_alerts("rule_1") == 1


async def test_a_missing_rules_api_fails_naming_the_route(
    rules_api: tuple[RulesApi, EdgeSense],
) -> None:
    api, system = rules_api
    api.serves_rules = False
    with pytest.raises(RuntimeError) as failed:
        await system.create_rules(rule_mix()[:3])
    assert str(failed.value) == (
        "POST /api/rules answered 404: Not Found: no route for POST /api/rules "
        "(not served by this EdgeSense)"
    )
    with pytest.raises(RuntimeError) as failed:
        await system.active_alerts("rule_unserved")
    assert str(failed.value) == (
        "GET /api/alerts answered 501: Method not implemented! (not served by this EdgeSense)"
    )
    with pytest.raises(RuntimeError, match="the baseline has no alert rules"):
        await Baseline().create_rules(rule_mix())
