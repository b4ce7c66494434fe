"""The `sparkplug` scenario (issue 15): its plan, its figures, and both of its
phases run small through the real pieces (Mosquitto, the receiver, the
publisher as a JSON gateway and as a Sparkplug B edge node, the four
EdgeSense services)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from bench.cluster import EdgeSense
from bench.databases import Database
from bench.phases import SPARKPLUG, SPARKPLUG_JSON, plan
from bench.report import figures, markdown
from bench.run import describe
from bench.scenarios import PhaseRun
from tests.bench.test_bench_smoke import _require_mosquitto


def test_the_scenario_is_saturation_on_json_then_as_sparkplug() -> None:
    for quick in (True, False):
        phases = plan(quick)
        [saturation] = phases["saturation"]
        on_json, on_sparkplug = phases["sparkplug"]
        assert (on_json.name, on_sparkplug.name) == (SPARKPLUG_JSON, SPARKPLUG)
        assert (on_json.sparkplug, on_sparkplug.sparkplug) == (False, True)
        for phase in (on_json, on_sparkplug):
            assert (phase.count, phase.rate) == (saturation.count, saturation.rate)
            assert [e.name for e in phase.endpoints] == ["hook"]
            assert phase.systems == ("edgesense",)
            assert phase.settings == {}  # the bridge takes both kinds of topic in both
    assert describe(on_sparkplug).endswith("(as Sparkplug B DDATA by alias, after the births)")


def test_sparkplug_figures_are_both_rates_and_their_ratio() -> None:
    def phase(name: str, rate: float) -> dict[str, Any]:
        return {
            "system": "edgesense",
            "phase": name,
            "deliveries_per_s": rate,
            "processes": {},
            "delivered": 1,
            "seconds": 1.0,
        }

    phases = [phase(SPARKPLUG_JSON, 4000.0), phase(SPARKPLUG, 3400.0)]
    rows = {r["figure"]: r for r in figures(phases)}
    assert rows["Sparkplug: saturation on our JSON topics, deliveries/s"]["edgesense"] == 4000.0
    assert (
        rows["Sparkplug: the same readings as Sparkplug B DDATA, deliveries/s"]["edgesense"]
        == 3400.0
    )
    ratio = rows["Sparkplug ratio (Sparkplug B / JSON)"]
    assert (ratio["edgesense"], ratio["target"], ratio["result"]) == (0.85, "≥ 0.8 x JSON", "PASS")
    assert "| Sparkplug ratio (Sparkplug B / JSON) | 0.850 | - | - | ≥ 0.8 x JSON | PASS |" in (
        markdown(list(rows.values()), phases)
    )
    phases[1]["deliveries_per_s"] = 3000.0
    rows = {r["figure"]: r for r in figures(phases)}
    assert rows["Sparkplug ratio (Sparkplug B / JSON)"]["result"] == "FAIL"
    # The Sparkplug phase failed: no ratio, no verdict.
    rows = {r["figure"]: r for r in figures(phases[:1])}
    assert rows["Sparkplug ratio (Sparkplug B / JSON)"]["result"] == ""


@pytest.mark.mosquitto
@pytest.mark.timeout(120)
async def test_both_phases_deliver_every_reading(tmp_path: Path) -> None:
    _require_mosquitto()
    on_json, on_sparkplug = (
        dataclasses.replace(phase, count=400) for phase in plan(True)["sparkplug"]
    )
    results = {}
    for phase in (on_json, on_sparkplug):
        result = await PhaseRun(EdgeSense(Database()), phase, tmp_path / phase.name).run()
        assert (result["delivered"], result["missing"], result["duplicates"]) == (400, 0, 0), (
            phase.name,
            result,
        )
        assert (result["bad_signature"], result["ended"]) == (0, "complete")
        results[phase.name] = result
    # The births' readings (one per device) were counted apart, not measured.
    assert results[SPARKPLUG]["endpoints"]["hook"]["background"] == 100
    assert results[SPARKPLUG_JSON]["endpoints"]["hook"]["background"] == 0
    # The receiver read each Sparkplug reading's seq and sent back by name:
    # the bridge resolved the aliases, and latencies are real.
    latency = results[SPARKPLUG]["latency_ms"]
    assert 0 < latency["p50"] <= latency["max"] < 60_000, latency
    rows = {r["figure"]: r for r in figures(list(results.values()))}
    assert rows["Sparkplug ratio (Sparkplug B / JSON)"]["edgesense"] is not None
