"""The scale scenario (issue 14): its selection on the command line, its pure
figures, and a tiny run of two of its layouts on the machine's PostgreSQL
(1 delivery process and 1 bridge; 2 and 2 on a shared subscription) through
the real processes, to prove the harness works: no timing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from bench.cluster import EdgeSense, process_names
from bench.clusterwatch import counters_of
from bench.databases import Database
from bench.dbstats import ActivitySampler
from bench.phases import SCALE, plan, scale_phases, watched
from bench.procstats import kind_of
from bench.run import choose
from bench.scaling import delivery_cpu, layout_figures, scale_rows, scale_table
from bench.scenarios import PhaseRun
from bench.systems import Replicas
from tests.bench.test_bench_smoke import _require_mosquitto
from tests.conftest import postgres_admin_url

EVENTS = 300


def options(scenarios: str = "", scale: bool = False, postgres: str | None = "pg") -> Any:
    return argparse.Namespace(scenarios=scenarios, scale=scale, postgres=postgres)


def test_scale_runs_only_when_asked_for_and_only_on_postgresql() -> None:
    names = list(plan(quick=True))
    assert SCALE in names
    assert SCALE not in choose(options(), names)
    assert choose(options(scale=True), names) == [SCALE]
    assert choose(options("saturation", scale=True), names) == ["saturation", SCALE]
    assert choose(options(SCALE), names) == [SCALE]
    with pytest.raises(SystemExit, match="needs --postgres"):
        choose(options(scale=True, postgres=None), names)
    with pytest.raises(SystemExit, match="unknown scenarios"):
        choose(options("scales"), names)


def test_on_postgresql_the_throughput_phases_are_watched_too() -> None:
    """Saturation and fan-out print what they cost the database, as the
    scale layouts do; on SQLite (no database server to watch) only the
    scale layouts are watched, and those need PostgreSQL anyway."""
    phases = [phase for phases in plan(quick=True).values() for phase in phases]
    on_postgres = {phase.name: phase.watch for phase in watched(phases, postgres=True)}
    assert on_postgres["saturation"]
    assert on_postgres["fanout"]
    assert not on_postgres["latency"]
    assert not on_postgres["backlog"]
    assert all(on_postgres[name] for name in on_postgres if name.startswith(SCALE))
    on_sqlite = watched(phases, postgres=False)
    assert [phase.name for phase in on_sqlite if phase.watch] == [
        phase.name for phase in phases if phase.name.startswith(SCALE)
    ]


def test_the_layouts_name_their_processes_apart() -> None:
    names = process_names(Replicas(3, 2))
    assert names == [
        "registry",
        "delivery",
        "delivery#2",
        "delivery#3",
        "bridge",
        "bridge#2",
        "api",
    ]
    assert [kind_of(n) for n in ("delivery#3", "senders#2.1", "senders")] == [
        ("delivery", 3),
        ("senders", 2),
        ("senders", 1),
    ]
    assert str(Replicas(1, 2)) == "1 delivery process, 2 bridges"
    with pytest.raises(ValueError, match="at least one"):
        Replicas(0, 1)


def test_each_delivery_process_counts_with_its_senders() -> None:
    by_process = {
        "delivery": 1.0,
        "senders": 0.5,
        "senders#1.2": 0.25,
        "delivery#2": 2.0,
        "senders#2.1": 1.0,
        "bridge": 9.0,
    }
    assert delivery_cpu(by_process) == {"delivery": 1.75, "delivery#2": 3.0}


def test_prometheus_counters_of_each_kind() -> None:
    text = (
        "# TYPE edgesense_deliveries_total counter\n"
        'edgesense_deliveries_total{outcome="succeeded"} 7.0\n'
        'edgesense_deliveries_total{outcome="retried"} 2.0\n'
        "# TYPE edgesense_events_accepted_total counter\n"
        "edgesense_events_accepted_total 9.0\n"
    )
    assert counters_of("delivery", text) == {"accepted": 9.0, "succeeded": 7.0}
    assert counters_of("bridge", text) == {"forwarded": 0.0}


def test_activity_samples_count_lock_waits_of_running_statements() -> None:
    sampler = ActivitySampler(connection=None, database="db")
    sampler.take(
        [("active", "Lock", "transactionid"), ("active", None, None), ("idle", None, None)]
    )
    sampler.take([("active", "LWLock", "WALWrite"), ("idle in transaction", "Client", "x")])
    summary = sampler.summary()
    assert (summary["samples"], summary["samples_with_lock_wait"]) == (2, 1)
    assert summary["lock_wait_share"] == 0.5
    assert summary["mean_active"] == 1.5
    assert summary["mean_idle_in_transaction"] == 0.5
    assert summary["mean_waiting"] == {"Lock": 0.5, "LWLock": 0.5}
    assert summary["lock_waits_by_event"] == {"transactionid": 1}


def canned(phase: str, system: str, rate: float, deliveries: int = 1) -> dict[str, Any]:
    """A watched phase's result as PhaseRun answers it, with round numbers."""
    names = ["delivery"] + [f"delivery#{n}" for n in range(2, deliveries + 1)]
    return {
        "system": system,
        "phase": phase,
        "delivered": 1000,
        "deliveries_per_s": rate,
        "settings": {"delivery_processes": deliveries, "bridges": 1},
        "processes": {"delivery": {"cpu_s": 0.5}, "senders": {"cpu_s": 0.25}},
        "cluster": {
            "database": {
                "transactions": 1500,
                "xact_rollback": 0,
                "deadlocks": 0,
                "rows_written": 4000,
                "wal_bytes": 2_000_000,
                "other_transactions": 10,
            },
            "activity": ActivitySampler(None, "db").summary(),
            "per_process": {n: {"accepted": 1000 // deliveries, "succeeded": 500} for n in names}
            | {"bridge": {"forwarded": 1000}},
            "cpu_s_by_process": {n: 0.25 for n in names},
        },
    }


def test_layout_figures_are_per_delivery_and_shares_of_the_work() -> None:
    row = layout_figures(canned("scale-d2-b1", "edgesense", 2000.0, deliveries=2))
    assert row["cpu_ms_per_delivery"]["delivery"] == 0.5
    assert row["cpu_ms_per_delivery"]["all"] == 0.75
    assert row["cpu_ms_per_delivery"]["bridge"] == 0.0
    assert row["cpu_ms_per_delivery"]["postgresql"] is None  # no backend seen
    assert (row["transactions_per_delivery"], row["rows_written_per_delivery"]) == (1.5, 4.0)
    assert row["wal_bytes_per_delivery"] == 2000
    assert row["sent_share"] == {"delivery": 0.5, "delivery#2": 0.5}
    assert row["forwarded_share"] == {"bridge": 1.0}
    rows = scale_rows(
        [
            canned("scale-d1-b1", "baseline", 4000.0) | {"cluster": None},
            canned("scale-d1-b1", "edgesense", 2000.0),
            canned("scale-d2-b1", "edgesense", 3000.0, deliveries=2),
            canned("saturation", "edgesense", 9000.0),
        ]
    )
    assert [(r["to_first"], r["to_baseline"]) for r in rows] == [(1.0, 0.5), (1.5, 0.75)]
    assert "| 2, 1 | 3,000 | 1.50 | 0.75 |" in scale_table(rows)


@pytest.mark.postgres
@pytest.mark.mosquitto
@pytest.mark.timeout(90)
async def test_two_layouts_run_and_the_work_divides_between_two_pairs(tmp_path: Path) -> None:
    _require_mosquitto()
    database = Database("postgresql", postgres_admin_url())
    layouts = (Replicas(1, 1), Replicas(2, 2))
    results = []
    for scale_phase in scale_phases(EVENTS, layouts):
        # One sender per delivery process, which the default leaves out beside
        # a local PostgreSQL on few cores: each must be counted with its own.
        settings = {**scale_phase.settings, "EDGESENSE_DELIVERY_SENDERS": "1"}
        phase = dataclasses.replace(scale_phase, settings=settings)
        result = await PhaseRun(EdgeSense(database), phase, tmp_path / phase.name).run()
        assert (result["delivered"], result["missing"], result["duplicates"]) == (EVENTS, 0, 0)
        database_work = result["cluster"]["database"]
        # Each event is stored, and so is its delivery and its outcome.
        assert database_work["rows_written"] >= 2 * EVENTS, database_work
        assert database_work["transactions"] > 0
        assert database_work["wal_bytes"] > 0
        assert result["cluster"]["activity"]["samples"] > 0
        assert result["cluster"]["activity"]["backend_cpu_s"] > 0  # the server is local
        results.append(result)
    pairs = results[1]["cluster"]["per_process"]
    assert set(pairs) == {"delivery", "delivery#2", "bridge", "bridge#2"}
    # The shared subscription splits the events between the bridges, and each
    # delivery process sends what its bridge published to it.
    for name in ("bridge", "bridge#2"):
        assert pairs[name]["forwarded"] > 0, pairs
    for name in ("delivery", "delivery#2"):
        assert pairs[name]["accepted"] > 0, pairs
        assert pairs[name]["succeeded"] > 0, pairs
    probes = results[1]["probes_sent"]
    accepted = sum(pairs[n]["accepted"] for n in ("delivery", "delivery#2"))
    assert EVENTS <= accepted <= EVENTS + probes
    assert {"delivery#2", "senders#2.1", "bridge#2"} <= set(
        results[1]["cluster"]["cpu_s_by_process"]
    )
    rows = scale_rows(results)
    assert [(r["delivery_processes"], r["bridges"]) for r in rows] == [(1, 1), (2, 2)]
    assert "| 2, 2 |" in scale_table(rows)
    assert not database.created  # every database dropped after its phase
