"""The scale scenario's figures: per layout, the rate, CPU per delivery by
process kind, the database's work per delivery, and how the work divided.

Pure: it reads phase results (`bench.scenarios`, with the `cluster` part a
watched phase adds, `bench.clusterwatch`) and answers rows and tables.
"""

from __future__ import annotations

from typing import Any

from bench.phases import SCALE
from bench.procstats import kind_of

KINDS = ("registry", "delivery", "senders", "bridge", "api")


def _per(value: float, delivered: int, digits: int = 3) -> float | None:
    return round(value / delivered, digits) if delivered else None


def _shares(values: dict[str, float]) -> dict[str, float]:
    total = sum(values.values())
    return {name: round(v / total, 3) if total else 0.0 for name, v in values.items()}


def _number(name: str) -> tuple[int, str]:
    """Sort key: "delivery" before "delivery#2" before "delivery#10"."""
    kind, number = kind_of(name)
    return number, kind


def delivery_cpu(by_process: dict[str, float]) -> dict[str, float]:
    """CPU seconds per delivery process with its senders' ("senders#2.1"
    belongs to "delivery#2"; "senders" and "senders#1.2" to "delivery")."""
    found: dict[str, float] = {}
    for name, seconds in by_process.items():
        kind, owner = kind_of(name)
        if kind not in ("delivery", "senders"):
            continue
        key = "delivery" if owner == 1 else f"delivery#{owner}"
        found[key] = round(found.get(key, 0.0) + seconds, 2)
    return dict(sorted(found.items(), key=lambda item: _number(item[0])))


def layout_figures(result: dict[str, Any]) -> dict[str, Any]:
    """The figures of one watched phase of EdgeSense."""
    delivered = int(result["delivered"])
    cluster = result["cluster"]
    database, activity = cluster["database"], cluster["activity"]
    cpu = {
        kind: _per(result["processes"].get(kind, {}).get("cpu_s", 0.0) * 1000, delivered)
        for kind in KINDS
    }
    cpu["all"] = _per(
        sum(result["processes"].get(kind, {}).get("cpu_s", 0.0) for kind in KINDS) * 1000,
        delivered,
    )
    # The database's backends (None when the server is not on this machine).
    backends = activity.get("backend_cpu_s")
    cpu["postgresql"] = None if backends is None else _per(backends * 1000, delivered)
    processes = dict(sorted(cluster["per_process"].items(), key=lambda item: _number(item[0])))
    deliveries = {n: c for n, c in processes.items() if kind_of(n)[0] == "delivery"}
    bridges = {n: c for n, c in processes.items() if kind_of(n)[0] == "bridge"}
    return {
        "phase": result["phase"],
        "delivery_processes": result["settings"].get("delivery_processes", 1),
        "bridges": result["settings"].get("bridges", 1),
        "delivered": delivered,
        "deliveries_per_s": result["deliveries_per_s"],
        "cpu_ms_per_delivery": cpu,
        "transactions_per_delivery": _per(database["transactions"], delivered),
        "rollbacks_per_delivery": _per(database["xact_rollback"], delivered),
        "deadlocks": database["deadlocks"],
        "rows_written_per_delivery": _per(database["rows_written"], delivered),
        "wal_bytes_per_delivery": _per(database["wal_bytes"], delivered, 0),
        "other_databases_transactions": database["other_transactions"],
        "lock_wait_share": activity["lock_wait_share"],
        "activity": activity,
        "sent_share": _shares({n: c["succeeded"] for n, c in deliveries.items()}),
        "accepted_share": _shares({n: c["accepted"] for n, c in deliveries.items()}),
        "cpu_share": _shares(delivery_cpu(cluster["cpu_s_by_process"])),
        "forwarded_share": _shares({n: c["forwarded"] for n, c in bridges.items()}),
    }


def scale_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per scale layout EdgeSense ran, in run order, with its rate
    against the first layout's and against the baseline's in the same run."""
    ours = [
        r
        for r in results
        if r["system"] == "edgesense" and r["phase"].startswith(SCALE) and "cluster" in r
    ]
    baseline = next(
        (r for r in results if r["system"] == "baseline" and r["phase"].startswith(SCALE)), None
    )
    rows = [layout_figures(r) for r in ours]
    first = rows[0]["deliveries_per_s"] if rows else 0
    for row in rows:
        rate = row["deliveries_per_s"]
        row["to_first"] = round(rate / first, 3) if first else None
        row["baseline_deliveries_per_s"] = baseline["deliveries_per_s"] if baseline else None
        row["to_baseline"] = (
            round(rate / baseline["deliveries_per_s"], 3)
            if baseline and baseline["deliveries_per_s"]
            else None
        )
    return rows


def layout_line(result: dict[str, Any]) -> str:
    """One line under a watched phase's rate: the database's work and the shares."""
    row = layout_figures(result)
    activity = row["activity"]
    backends = row["cpu_ms_per_delivery"]["postgresql"]
    return (
        f"  per delivery: {row['transactions_per_delivery']} transactions "
        f"({row['rollbacks_per_delivery']} rolled back), "
        f"{row['rows_written_per_delivery']} rows written, "
        f"{row['wal_bytes_per_delivery'] or 0:,.0f} WAL bytes (server-wide; other databases "
        f"made {row['other_databases_transactions']:,} transactions meanwhile), "
        f"{_cell(backends)} CPU ms in PostgreSQL's backends; "
        f"a Lock wait in {activity['samples_with_lock_wait']} of {activity['samples']} samples; "
        f"sent by each delivery process {_split(row['sent_share'])}, "
        f"accepted {_split(row['accepted_share'])}, "
        f"forwarded by each bridge {_split(row['forwarded_share'])}"
    )


def _cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _split(shares: dict[str, float]) -> str:
    return " / ".join(f"{share:.2f}" for share in shares.values()) or "-"


def scale_table(rows: list[dict[str, Any]]) -> str:
    """Two markdown tables: rate and CPU; the database and the shares."""
    if not rows:
        return ""
    lines = [
        "| delivery processes, bridges | deliveries/s | to the first | to the baseline "
        "| CPU ms per delivery: registry | delivery | senders | bridge | api | all ours "
        "| PostgreSQL backends |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cpu = row["cpu_ms_per_delivery"]
        cells = [
            f"{row['delivery_processes']}, {row['bridges']}",
            f"{row['deliveries_per_s']:,.0f}",
            _cell(row["to_first"], 2),
            _cell(row["to_baseline"], 2),
            *(_cell(cpu[kind]) for kind in (*KINDS, "all", "postgresql")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| delivery processes, bridges | DB transactions per delivery (rolled back) "
        "| rows written per delivery | WAL bytes per delivery (server-wide) "
        "| samples with a Lock wait | mean backends active (idle in a transaction) "
        "| sent by each delivery process | accepted by each | CPU of each (with its senders) "
        "| forwarded by each bridge |",
        "|---|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    for row in rows:
        activity = row["activity"]
        cells = [
            f"{row['delivery_processes']}, {row['bridges']}",
            f"{_cell(row['transactions_per_delivery'], 3)} "
            f"({_cell(row['rollbacks_per_delivery'], 3)})",
            _cell(row["rows_written_per_delivery"], 2),
            _cell(row["wal_bytes_per_delivery"], 0),
            f"{activity['samples_with_lock_wait']} of {activity['samples']}",
            f"{_cell(activity['mean_active'], 2)} "
            f"({_cell(activity['mean_idle_in_transaction'], 2)})",
            _split(row["sent_share"]),
            _split(row["accepted_share"]),
            _split(row["cpu_share"]),
            _split(row["forwarded_share"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
