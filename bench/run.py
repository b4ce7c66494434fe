"""`make bench`: run the scenarios on EdgeSense and on the baseline, print and save the figures.

    python -m bench.run [--postgres [URL]] [--quick] [--scenarios a,b] [--json out.json]
                        [--systems baseline,edgesense] [--profile DIR] [--keep]
                        [--isolation-rate EVENTS_PER_S] [--baseline-mqtt 5|3.1.1] [--scale]

Scenarios, in order: saturation, latency, fanout, isolation, backlog,
ordered, rules, sparkplug, retention; and scale, which runs only when asked for
(`--scale`, or by name in `--scenarios`), on PostgreSQL only: saturation's
load on 1, 2 and 3 delivery processes and 1, 2 and 3 bridges, with each
kind of process's CPU per delivery, the database's work per delivery and
each process's share (see `bench.scaling`). For each phase the baseline runs first, then
EdgeSense, each from a fresh start, so the two meet the same machine at about
the same time (ordered, rules, sparkplug and retention run on EdgeSense only:
the baseline has no ordered webhooks, no alert rules, no Sparkplug B and
stores nothing). Logs of every process
go to a temporary folder, kept with `--keep` (or when a phase fails).
`--profile` attaches py-spy to our processes (it slows them: profile in a
separate run from the one whose figures you keep).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import aio
from bench.cluster import EdgeSense
from bench.databases import DEFAULT_POSTGRES, Database
from bench.phases import ORDERED, ORDERED_UNORDERED, SCALE, Phase, plan, watched
from bench.profiles import hot_spots
from bench.receivers import PROJECT
from bench.report import figures, machine, markdown, problems
from bench.scaling import layout_line, scale_rows, scale_table
from bench.scenarios import PhaseRun
from bench.systems import Baseline, Replicas, System

MIN_PROFILE_SAMPLES = 50
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def make_systems(database: Database, names: list[str], baseline_mqtt: str) -> list[System]:
    made: dict[str, System] = {
        "baseline": Baseline(mqtt=baseline_mqtt),
        "edgesense": EdgeSense(database),
    }
    unknown = set(names) - set(made)
    if unknown:
        raise SystemExit(f"unknown systems {sorted(unknown)}; choose from {list(made)}")
    return [made[name] for name in names]


def describe(phase: Phase) -> str:
    load = f"{phase.rate:g} events/s" if phase.rate else "as fast as the broker accepts"
    modes = ", ".join(
        f"{e.name}:{e.mode}"
        + (f" x{e.webhooks}" if e.webhooks > 1 else "")
        + (" ordered" if e.ordered else "")
        + (f" of project {e.project}" if e.project != PROJECT else "")
        for e in phase.endpoints
    )
    extra = " (published while delivery is stopped, then drained)" if phase.backlog else ""
    if phase.background:
        extra += f" (first {phase.background} events to each other project)"
    if phase.rules:
        extra += f" (with {len(phase.rules)} alert rules in the project, see bench/rules.py)"
    if phase.sparkplug:
        extra += " (as Sparkplug B DDATA by alias, after the births)"
    if phase.replicas != Replicas() or phase.watch:
        extra += f" (EdgeSense on {phase.replicas})"
    return f"{phase.name}: {phase.count:,} events, {load}, webhooks [{modes}]{extra}"


def one_line(result: dict[str, Any]) -> str:
    latency = result["latency_ms"]
    tail = f", p50 {latency['p50']:.1f} / p99 {latency['p99']:.1f} ms" if latency else ""
    lost = f", {result['missing']:,} not delivered ({result['ended']})" if result["missing"] else ""
    busy = result["machine"]["not_benchmark_share"]
    noise = f"; other processes kept {busy:.0%} of the machine busy" if busy >= 0.05 else ""
    if result["phase"] in (ORDERED, ORDERED_UNORDERED):
        lost += f", {result['out_of_order']:,} out of their device's order"
    return (
        f"  {result['system']:>9}: {result['delivered']:,} delivered in {result['seconds']:.1f} s "
        f"= {result['deliveries_per_s']:,.0f}/s (published at {result['publish_rate']:,.0f}/s)"
        f"{tail}{lost}{noise}"
    )


def database_line(growth: dict[str, Any]) -> str:
    sizes = ", ".join(f"{t:g} s {mb:.1f}" for t, mb in growth["mb"])
    return (
        f"  database MB: {sizes}; peak {growth['peak_mb']:.1f}, last/peak "
        f"{growth['last_to_peak']}, last / at {growth['settled_after_s']:g} s "
        f"{growth['last_to_settled']}"
    )


def choose(args: argparse.Namespace, scenarios: list[str]) -> list[str]:
    """The scenarios to run, in plan order: those named, else all but scale;
    `--scale` adds scale (alone when no others are named)."""
    named = args.scenarios.split(",") if args.scenarios else []
    unknown = set(named) - set(scenarios)
    if unknown:
        raise SystemExit(f"unknown scenarios {sorted(unknown)}; choose from {scenarios}")
    if args.scale:
        named.append(SCALE)
    elif not named:
        named = [name for name in scenarios if name != SCALE]
    if SCALE in named and not args.postgres:
        raise SystemExit(
            "the scale scenario needs --postgres: several delivery processes share "
            "one outbox only on PostgreSQL"
        )
    return [name for name in scenarios if name in named]


async def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="edgesense-bench-"))
    database = Database("postgresql", args.postgres) if args.postgres else Database()
    scenarios = plan(args.quick, args.isolation_rate)
    chosen = choose(args, list(scenarios))
    info = machine() | {"database": database.kind}
    print(f"machine: {json.dumps(info)}")
    print(f"logs: {workdir}")
    phases = watched([p for name in chosen for p in scenarios[name]], bool(args.postgres))
    for phase in phases:
        print(f"plan: {describe(phase)}")
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    for phase in phases:
        print(f"\n{describe(phase)}", flush=True)
        for system in make_systems(database, args.systems.split(","), args.baseline_mqtt):
            if phase.systems and system.name not in phase.systems:
                continue
            directory = workdir / f"{phase.name}-{system.name}"
            try:
                result = await PhaseRun(system, phase, directory, args.profile).run()
            except Exception as exc:
                errors.append(f"{phase.name} ({system.name}): {exc}")
                print(f"  {system.name:>9}: FAILED, logs in {directory}")
                traceback.print_exc()
                continue
            results.append(result)
            print(one_line(result), flush=True)
            if "database" in result:
                print(database_line(result["database"]), flush=True)
            if "cluster" in result:
                print(layout_line(result), flush=True)
    rows = figures(results)
    found = problems(results) + errors
    table = markdown(rows, results)
    scaled = scale_rows(results)
    scaled_table = scale_table(scaled)
    minutes = (time.monotonic() - started) / 60
    print(f"\n{table}\n")
    if scaled:
        print(f"Scale-out (EdgeSense on PostgreSQL, same load each):\n\n{scaled_table}\n")
    print(
        f"machine: {info['nproc']} cores ({info['cpu_model']}), Python {info['python']}, "
        f"{info['mosquitto']}, database {database.kind}; run took {minutes:.1f} min"
    )
    for problem in found:
        print(f"PROBLEM: {problem}")
    profiles = {path: hot_spots(Path(path)) for r in results for path in r["profiles"]}
    for path, spots in profiles.items():
        if spots.samples < MIN_PROFILE_SAMPLES:
            continue  # an idle process (the api, the registry)
        print(f"\nprofile {path} ({spots.samples:,} samples), inclusive share:")
        print("\n".join(f"  {share:5.1f}%  {frame}" for share, frame in spots.inclusive))
        print("  self share:")
        print("\n".join(f"  {share:5.1f}%  {frame}" for share, frame in spots.own[:10]))
    document = {
        "machine": info,
        "command": "python -m bench.run " + " ".join(args.argv),
        "quick": args.quick,
        "minutes": round(minutes, 2),
        "plan": [describe(p) for p in phases],
        "figures": rows,
        "problems": found,
        "phases": results,
        "table": table,
        "scale": scaled,
        "scale_table": scaled_table,
        "profiles": {path: dataclasses.asdict(spots) for path, spots in profiles.items()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    print(f"results: {args.json}")
    if args.keep or errors:
        print(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--postgres",
        nargs="?",
        const=DEFAULT_POSTGRES,
        default=None,
        metavar="URL",
        help=f"PostgreSQL instead of SQLite (default {DEFAULT_POSTGRES})",
    )
    parser.add_argument(
        "--isolation-rate",
        type=float,
        default=0.0,
        metavar="EVENTS_PER_S",
        help="run the isolation phases at this fixed rate instead of at saturation",
    )
    parser.add_argument(
        "--baseline-mqtt",
        choices=("5", "3.1.1"),
        default="5",
        help="the baseline's MQTT version (5: the bridge's default)",
    )
    parser.add_argument("--quick", action="store_true", help="smaller loads (a few minutes)")
    parser.add_argument(
        "--scale",
        action="store_true",
        help="the scale scenario (1-3 delivery processes, 1-3 bridges; needs --postgres): "
        "alone, or beside those --scenarios names",
    )
    parser.add_argument("--scenarios", default="", help="comma-separated subset")
    parser.add_argument("--systems", default="baseline,edgesense", help="comma-separated subset")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where the results go")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="py-spy our processes during each phase (raw stacks into DIR; slows them)",
    )
    parser.add_argument("--keep", action="store_true", help="keep every process's log")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    return aio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
