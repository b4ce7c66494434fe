"""The figures of a run, side by side with the baseline's, against the issue's targets.

`figures()` turns the phases' results into rows (figure, EdgeSense, baseline,
ratio, target, PASS/FAIL); `markdown()` prints them, then a table of CPU
seconds and peak RSS of every process in every phase. Both go into the JSON
file as well.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from typing import Any

from bench.mosquitto import MOSQUITTO
from bench.phases import (
    ORDERED,
    ORDERED_UNORDERED,
    RULES,
    RULES_WITHOUT,
    SPARKPLUG,
    SPARKPLUG_JSON,
)
from bench.scenarios import STALL_SECONDS

Row = dict[str, Any]
OURS = ("registry", "delivery", "senders", "bridge", "api", "forwarder")
OTHERS = ("mosquitto", "receiver", "publisher")
RSS_LIMIT_MB = 300.0
# The retention phase runs more than twice as long as the size takes to
# settle: a size that kept growing would end above 2x; flat, near 1x.
RETENTION_GROWTH_LIMIT = 1.2
# Issue 13: with 100 alert rules active, at least 0.9x the rate without.
RULES_RATIO_TARGET = 0.9
# Issue 15: Sparkplug B DDATA at least 0.8x the rate of our JSON topics.
SPARKPLUG_RATIO_TARGET = 0.8
# (figure, phase kind, a ratio to the healthy webhook alone?, target).
ISOLATION_ROWS: list[tuple[str, str, bool, float]] = [
    ("Isolation: healthy receiver alone, deliveries/s", "alone", False, 0.0),
    ("Isolation: healthy beside a 500 and a hanging one, deliveries/s", "beside", False, 0.0),
    ("Isolation ratio (beside / alone)", "beside", True, 0.9),
    (
        "Isolation: healthy beside another project's 300 hanging webhooks, deliveries/s",
        "projects",
        False,
        0.0,
    ),
    # Issue 10: within 3x of its time alone.
    ("Isolation ratio, other project (beside / alone)", "projects", True, 0.33),
]


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    mosquitto = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, check=False)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mosquitto": (mosquitto.stdout.splitlines() or ["?"])[0],
    }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or not theirs:
        return None
    return round(ours / theirs, 3)


def figures(phases: list[dict[str, Any]]) -> list[Row]:
    """Every figure of the run that both systems (or EdgeSense alone) produced."""
    got = {(p["system"], p["phase"]): p for p in phases}

    def pick(phase: str, system: str, *path: str) -> float | None:
        value: Any = got.get((system, phase))
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return float(value) if isinstance(value, int | float) else None

    rows: list[Row] = []

    def rate(system: str, phase: str) -> float | None:
        return pick(phase, system, "deliveries_per_s")

    def row(
        name: str, phase: str, path: tuple[str, ...], target: str = "", check: Any = None
    ) -> Row:
        ours, theirs = pick(phase, "edgesense", *path), pick(phase, "baseline", *path)
        entry: Row = {"figure": name, "edgesense": ours, "baseline": theirs}
        entry["ratio"] = _ratio(ours, theirs)
        entry["target"] = target
        entry["result"] = (
            "" if check is None or ours is None else ("PASS" if check(entry) else "FAIL")
        )
        if ours is not None or theirs is not None:
            rows.append(entry)
        return entry

    def one_sided(
        figure: str,
        edgesense: float | None = None,
        baseline: float | None = None,
        target: str = "",
        result: str = "",
    ) -> None:
        """A figure only one system has (no ratio)."""
        rows.append(
            {
                "figure": figure,
                "edgesense": edgesense,
                "baseline": baseline,
                "ratio": None,
                "target": target,
                "result": result,
            }
        )

    half = ">= 0.50 x baseline"
    row(
        "Sustained deliveries/s (saturation)",
        "saturation",
        ("deliveries_per_s",),
        half,
        lambda e: (e["ratio"] or 0) >= 0.5,
    )
    for q in ("p50", "p95", "p99", "max"):
        row(
            f"Latency {q} ms at 500 events/s",
            "latency",
            ("latency_ms", q),
            "≤ 50 ms" if q == "p99" else "",
            (lambda e: e["edgesense"] <= 50) if q == "p99" else None,
        )
    row(
        "Fan-out deliveries/s (1 event → 10 webhooks)",
        "fanout",
        ("deliveries_per_s",),
        half,
        lambda e: (e["ratio"] or 0) >= 0.5,
    )
    # Isolation runs in rounds (isolation-alone, isolation-alone#2, ...): the
    # figures are medians over the rounds, a ratio the median of each round's
    # beside / alone. "beside": the healthy webhook beside a failing and a
    # hanging one of its project; "projects": beside another project's
    # hanging webhooks (the baseline has no projects: the same load for it).
    rounds = {
        system: [
            {
                kind: rate(system, p["phase"].replace("alone", kind, 1))
                for kind in ("alone", "beside", "projects")
            }
            for p in phases
            if p["system"] == system and p["phase"].startswith("isolation-alone")
        ]
        for system in ("edgesense", "baseline")
    }
    for name, kind, ratio, target in ISOLATION_ROWS:
        entry: Row = {"figure": name}
        for system, measured in rounds.items():
            values = [
                _ratio(m[kind], m["alone"]) if ratio else m[kind]
                for m in measured
                if m[kind] is not None and m["alone"] is not None
            ]
            entry[system] = _median([v for v in values if v is not None])
        if entry["edgesense"] is None and entry["baseline"] is None:
            continue
        counted = max((len(measured) for measured in rounds.values()), default=1)
        if counted > 1:
            entry["figure"] += f" (median of {counted} rounds)"
        entry["ratio"] = _ratio(entry["edgesense"], entry["baseline"])
        entry["target"] = f"≥ {target:g}" if target else ""
        entry["result"] = (
            ""
            if not target or entry["edgesense"] is None
            else ("PASS" if entry["edgesense"] >= target else "FAIL")
        )
        rows.append(entry)
    row("Backlog drain deliveries/s", "backlog", ("deliveries_per_s",))
    for name in OURS:
        path = ("processes", name, "peak_rss_mb")
        if name == "forwarder":
            continue
        row(
            f"Backlog peak RSS MB, {name}",
            "backlog",
            path,
            f"< {RSS_LIMIT_MB:g} MB",
            lambda e: e["edgesense"] < RSS_LIMIT_MB,
        )
    fwd = pick("backlog", "baseline", "processes", "forwarder", "peak_rss_mb")
    if fwd is not None:
        one_sided("Backlog peak RSS MB, baseline forwarder", baseline=fwd)
    # Ordered webhooks (issue 12): one webhook, 100 devices, saturation's
    # load, unordered then ordered in the same run; EdgeSense only.
    unordered_rate = rate("edgesense", ORDERED_UNORDERED)
    ordered_rate = rate("edgesense", ORDERED)
    if unordered_rate is not None or ordered_rate is not None:
        reordered = pick(ORDERED, "edgesense", "out_of_order")
        late = None if reordered is None else int(reordered)
        ordered_rows: list[tuple[str, float | None, str, str]] = [
            ("Ordered: one webhook, 100 devices, unordered, deliveries/s", unordered_rate, "", ""),
            ("Ordered: the same webhook ordered, deliveries/s", ordered_rate, "", ""),
            ("Ordered ratio (ordered / unordered)", _ratio(ordered_rate, unordered_rate), "", ""),
            (
                "Ordered: deliveries out of their device's order",
                late,
                "0",
                "" if late is None else ("PASS" if late == 0 else "FAIL"),
            ),
        ]
        for name, value, goal, verdict in ordered_rows:
            one_sided(name, value, target=goal, result=verdict)
    # Alert rules (issue 13): saturation's load without rules, then with
    # bench.rules' mix active in the project, in the same run; EdgeSense only.
    without_rules = rate("edgesense", RULES_WITHOUT)
    with_rules = rate("edgesense", RULES)
    if without_rules is not None or with_rules is not None:
        count = pick(RULES, "edgesense", "rules")
        with_to_without = _ratio(with_rules, without_rules)
        one_sided("Rules: saturation without rules, deliveries/s", without_rules)
        rules = f"{count:g} alert rules" if count else "alert rules"
        one_sided(f"Rules: the same with {rules}, deliveries/s", with_rules)
        one_sided(
            "Rules ratio (with / without)",
            with_to_without,
            target=f"≥ {RULES_RATIO_TARGET:g}",
            result=""
            if with_to_without is None
            else ("PASS" if with_to_without >= RULES_RATIO_TARGET else "FAIL"),
        )
    # Sparkplug B (issue 15): saturation's load on our JSON topics, then the
    # same readings as Sparkplug DDATA by alias, in the same run; EdgeSense only.
    json_rate = rate("edgesense", SPARKPLUG_JSON)
    sparkplug_rate = rate("edgesense", SPARKPLUG)
    if json_rate is not None or sparkplug_rate is not None:
        to_json = _ratio(sparkplug_rate, json_rate)
        one_sided("Sparkplug: saturation on our JSON topics, deliveries/s", json_rate)
        one_sided("Sparkplug: the same readings as Sparkplug B DDATA, deliveries/s", sparkplug_rate)
        one_sided(
            "Sparkplug ratio (Sparkplug B / JSON)",
            to_json,
            target=f"≥ {SPARKPLUG_RATIO_TARGET:g} x JSON",
            result=""
            if to_json is None
            else ("PASS" if to_json >= SPARKPLUG_RATIO_TARGET else "FAIL"),
        )
    # Retention (issue 12): the database's size over a steady run several
    # times the retention long. last/peak is 1.0 for a size that grew to the
    # end as well; the growth after the size should have settled tells them
    # apart (without retention it is about the run's length over that time).
    growth = got.get(("edgesense", "retention"), {}).get("database")
    if growth:
        settled = growth["settled_after_s"]
        flat = growth["last_to_settled"]
        for figure, value in (
            ("Retention: database peak MB", growth["peak_mb"]),
            ("Retention: database size last / peak", growth["last_to_peak"]),
        ):
            one_sided(figure, value)
        one_sided(
            f"Retention: database size last / at {settled:g} s (growth once settled)",
            flat,
            target=f"≤ {RETENTION_GROWTH_LIMIT:g}",
            result="" if flat is None else ("PASS" if flat <= RETENTION_GROWTH_LIMIT else "FAIL"),
        )
    cpu: Row = {
        "figure": "CPU ms per delivery, our processes (saturation)",
        "target": "",
        "result": "",
    }
    for system in ("edgesense", "baseline"):
        phase = got.get((system, "saturation"))
        if phase and phase["delivered"]:
            total = sum(phase["processes"].get(n, {}).get("cpu_s", 0.0) for n in OURS)
            cpu[system] = round(total * 1000 / phase["delivered"], 3)
        else:
            cpu[system] = None
    cpu["ratio"] = _ratio(cpu["edgesense"], cpu["baseline"])
    if cpu["edgesense"] is not None or cpu["baseline"] is not None:
        rows.append(cpu)
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return (
            f"{value:,.3f}"
            if abs(value) < 10
            else f"{value:,.0f}"
            if value >= 1000
            else f"{value:,.1f}"
        )
    return str(value)


def markdown(rows: list[Row], phases: list[dict[str, Any]]) -> str:
    lines = [
        "| figure | EdgeSense | baseline | ratio | target | result |",
        "|---|---:|---:|---:|---|---|",
    ]
    if not rows:  # phases with figures of their own only (scale: bench.scaling)
        lines = []
    for r in rows:
        cells = [
            r["figure"],
            *(_cell(r[k]) for k in ("edgesense", "baseline", "ratio")),
            r["target"],
            r["result"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        *([""] if lines else []),
        "CPU seconds during the phase / peak RSS MB, per process; `others`: the share of the "
        "machine's cores kept busy by anything else meanwhile (other users, the kernel):",
        "",
    ]
    names = [n for n in (*OURS, *OTHERS) if any(n in p["processes"] for p in phases)]
    lines.append("| phase | system | delivered | s | " + " | ".join(names) + " | others |")
    lines.append("|---|---|---:|---:|" + "---:|" * len(names) + "---:|")
    for p in phases:
        cells = [p["phase"], p["system"], f"{p['delivered']:,}", f"{p['seconds']:.1f}"]
        for name in names:
            proc = p["processes"].get(name)
            cells.append(f"{proc['cpu_s']:.1f} s / {proc['peak_rss_mb']:.0f}" if proc else "")
        others = p.get("machine", {}).get("not_benchmark_share")
        cells.append("" if others is None else f"{others:.0%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def problems(phases: list[dict[str, Any]]) -> list[str]:
    """What did not add up: lost, late, duplicated or badly signed deliveries."""
    found: list[str] = []
    for p in phases:
        where = f"{p['phase']} ({p['system']})"
        if p["missing"] and p["ended"] == "limit":
            found.append(
                f"{where}: {p['missing']:,} of {p['expected']:,} deliveries not there "
                f"{p['limit_seconds']:g} s after the last publish (the phase's limit; "
                "its rate is over that window)"
            )
        elif p["missing"]:
            found.append(
                f"{where}: {p['missing']:,} of {p['expected']:,} deliveries MISSING "
                f"(nothing arrived for {STALL_SECONDS:g} s)"
            )
        if p["duplicates"]:
            found.append(f"{where}: {p['duplicates']:,} duplicate deliveries")
        if p["phase"] == ORDERED and p.get("out_of_order"):
            found.append(f"{where}: {p['out_of_order']:,} deliveries out of their device's order")
        if p["bad_signature"]:
            found.append(f"{where}: {p['bad_signature']:,} requests with a bad signature or body")
    return found
