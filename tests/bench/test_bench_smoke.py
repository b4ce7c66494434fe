"""A fast smoke test of the benchmark harness (`bench/`), not the benchmark itself.

One tiny phase per system through the real pieces (Mosquitto, receiver,
publisher, the baseline forwarder or the four EdgeSense services), plus the
pure parts: percentiles, /proc reading and the figures table.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench.cluster import EdgeSense
from bench.databases import Database
from bench.mosquitto import MOSQUITTO
from bench.phases import ORDERED, ORDERED_UNORDERED, Phase
from bench.procstats import cpu_seconds, memory_kb
from bench.receiver import percentiles
from bench.receivers import OTHER_PROJECT, EndpointSpec
from bench.report import figures, markdown, problems
from bench.scenarios import PhaseRun, database_growth
from bench.systems import Baseline, System


def _require_mosquitto() -> None:
    if not (shutil.which("mosquitto") or os.path.exists(MOSQUITTO)):
        pytest.skip(f"the benchmark smoke test needs Mosquitto at {MOSQUITTO}")


def test_percentiles_are_nearest_rank_in_ms() -> None:
    got = percentiles(list(range(1000, 101_000, 1000)))  # 1..100 ms
    assert (got["p50"], got["p95"], got["p99"], got["max"]) == (50.0, 95.0, 99.0, 100.0)
    assert percentiles([]) == {}


def test_procstats_reads_this_process() -> None:
    rss, hwm = memory_kb(os.getpid())
    assert 0 < rss <= hwm
    assert cpu_seconds(os.getpid()) > 0


@pytest.mark.mosquitto
@pytest.mark.timeout(60)
@pytest.mark.parametrize("system_name", ["baseline", "edgesense"])
async def test_one_small_phase_end_to_end(tmp_path: Path, system_name: str) -> None:
    _require_mosquitto()
    system: System = Baseline() if system_name == "baseline" else EdgeSense(Database())
    # One sender process whatever the cores (the default's depends on them):
    # the run must find and measure it too.
    phase = Phase(
        "smoke",
        [EndpointSpec("a"), EndpointSpec("b")],
        count=200,
        settings={"EDGESENSE_DELIVERY_SENDERS": "1"},
    )
    result = await PhaseRun(system, phase, tmp_path / system_name).run()
    assert result["delivered"] == 400, result
    assert (result["missing"], result["duplicates"], result["bad_signature"]) == (0, 0, 0)
    assert result["ended"] == "complete"
    ours = {
        "baseline": {"forwarder"},
        "edgesense": {"registry", "delivery", "senders", "bridge", "api"},
    }
    assert ours[system_name] <= set(result["processes"])
    assert all(p["peak_rss_mb"] > 0 for p in result["processes"].values())
    renamed = result | {"phase": "fanout"}
    rows = figures([renamed])
    assert rows[0]["figure"].startswith("Fan-out")
    assert system_name in markdown(rows, [renamed])
    assert not [found for found in problems([renamed]) if "deliveries" in found]


def test_isolation_figures_are_medians_over_rounds() -> None:
    rates = {
        "isolation-alone": 1000.0,
        "isolation-beside": 950.0,  # 0.95
        "isolation-alone#2": 1100.0,
        "isolation-beside#2": 770.0,  # 0.70
        "isolation-alone#3": 900.0,
        "isolation-beside#3": 810.0,  # 0.90
        "isolation-projects": 500.0,  # 0.5
        "isolation-projects#2": 330.0,  # 0.3
        "isolation-projects#3": 270.0,  # 0.3
    }
    phases = [
        {"system": "edgesense", "phase": name, "deliveries_per_s": rate, "processes": {}}
        for name, rate in rates.items()
    ]
    rows = {r["figure"]: r for r in figures(phases)}
    alone = rows["Isolation: healthy receiver alone, deliveries/s (median of 3 rounds)"]
    beside = rows[
        "Isolation: healthy beside a 500 and a hanging one, deliveries/s (median of 3 rounds)"
    ]
    ratio = rows["Isolation ratio (beside / alone) (median of 3 rounds)"]
    assert (alone["edgesense"], beside["edgesense"]) == (1000.0, 810.0)
    assert ratio["edgesense"] == 0.9  # the median of each round's ratio, not 810 / 1000
    assert (ratio["target"], ratio["result"]) == ("≥ 0.9", "PASS")
    assert ratio["baseline"] is None
    projects = rows["Isolation ratio, other project (beside / alone) (median of 3 rounds)"]
    assert projects["edgesense"] == 0.3
    assert (projects["target"], projects["result"]) == ("≥ 0.33", "FAIL")


def test_ordered_figures_are_a_ratio_in_one_run_and_order_is_checked() -> None:
    def phase(name: str, rate: float, out_of_order: int) -> dict[str, Any]:
        return {
            "system": "edgesense",
            "phase": name,
            "deliveries_per_s": rate,
            "out_of_order": out_of_order,
            "missing": 0,
            "duplicates": 0,
            "bad_signature": 0,
            "processes": {},
        }

    phases = [phase(ORDERED_UNORDERED, 4000.0, 900), phase(ORDERED, 1000.0, 0)]
    rows = {r["figure"]: r for r in figures(phases)}
    assert rows["Ordered ratio (ordered / unordered)"]["edgesense"] == 0.25
    assert rows["Ordered: deliveries out of their device's order"]["result"] == "PASS"
    assert problems(phases) == []  # the unordered phase may reorder
    phases[1]["out_of_order"] = 3
    rows = {r["figure"]: r for r in figures(phases)}
    assert rows["Ordered: deliveries out of their device's order"]["result"] == "FAIL"
    assert problems(phases) == ["ordered (edgesense): 3 deliveries out of their device's order"]


@pytest.mark.mosquitto
@pytest.mark.timeout(60)
async def test_an_ordered_phase_delivers_each_device_in_order(tmp_path: Path) -> None:
    _require_mosquitto()
    phase = Phase(ORDERED, [EndpointSpec("a", ordered=True)], count=300, systems=("edgesense",))
    result = await PhaseRun(EdgeSense(Database()), phase, tmp_path / "ordered").run()
    assert (result["delivered"], result["missing"], result["out_of_order"]) == (300, 0, 0), result


@pytest.mark.mosquitto
@pytest.mark.timeout(90)
@pytest.mark.parametrize("system_name", ["baseline", "edgesense"])
async def test_a_phase_beside_another_project_s_hanging_webhooks(
    tmp_path: Path, system_name: str
) -> None:
    """The other project's events go first and hang at its receiver; only the
    measured project's events count (the baseline sends every event everywhere)."""
    _require_mosquitto()
    system: System = Baseline() if system_name == "baseline" else EdgeSense(Database())
    other = EndpointSpec("other", "hang", project=OTHER_PROJECT, webhooks=3)
    phase = Phase("smoke", [EndpointSpec("a"), other], count=100, limit_seconds=20, background=5)
    result = await PhaseRun(system, phase, tmp_path / system_name).run()
    assert (result["delivered"], result["missing"], result["duplicates"]) == (100, 0, 0), result
    assert result["endpoints"]["other"]["requests"] >= 15
    background = result["endpoints"]["a"]["background"]
    assert background == (5 if system_name == "baseline" else 0)


def test_database_growth_tells_a_flat_size_from_a_growing_one() -> None:
    mb = 2**20
    flat = database_growth([(0.0, 0), (10.0, 8 * mb), (20.0, 10 * mb), (40.0, 10 * mb)], 20.0)
    assert (flat["peak_mb"], flat["last_to_peak"], flat["last_to_settled"]) == (10.0, 1.0, 1.0)
    growing = database_growth([(0.0, 0), (20.0, 10 * mb), (60.0, 30 * mb)], 20.0)
    assert (growing["last_to_peak"], growing["last_to_settled"]) == (1.0, 3.0)
    rows = figures([{"system": "edgesense", "phase": "retention", "database": growing}])
    [settled] = [r for r in rows if "once settled" in r["figure"]]
    assert (settled["edgesense"], settled["result"]) == (3.0, "FAIL")
