"""What a phase costs PostgreSQL: counters of the bench's database, and its backends' waits.

`read_counters` takes the cumulative counters of one database from
`pg_stat_database` (transactions committed and rolled back, rows inserted,
updated and deleted, deadlocks), the server's WAL position, and the
transactions of every other database (other users of the same server write
WAL too: the WAL figure is the server's, and this says how busy the rest of
it was). `counters_delta` turns two readings into what happened between
them.

PostgreSQL's statistics lag: a backend reports its counters at most once a
second while busy and up to ten seconds late while idle, and always when it
exits. So the last reading is taken once the system's processes have stopped
and their backends have gone (`wait_no_backends`), which makes it exact; the
first, taken after start-up, may still miss a few of start-up's transactions,
which then count in the phase (tens, against tens of thousands).

`ActivitySampler` looks at `pg_stat_activity` every `SAMPLE_SECONDS` while
the load runs: per sample, the database's backends running a statement, and
of those the ones waiting, by wait type (`Lock`: a row or transaction lock
another backend holds, what claims with `SKIP LOCKED` should never do;
`LWLock`, `IO`, ...), and those idle inside a transaction (waiting for their
client's next statement). When the server runs on this machine it also adds
up the CPU time of the database's backends (from /proc, as `procstats` does
for our processes; a backend that appears meanwhile counts from its start).
The server's own processes (WAL writer, checkpointer, autovacuum) serve
every database and are left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bench.procstats import cpu_seconds

SAMPLE_SECONDS = 0.1
GONE_SECONDS = 30.0

_COUNTERS = (
    "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, deadlocks,"
    " pg_current_wal_lsn()::text AS wal_lsn,"
    " (SELECT coalesce(sum(xact_commit + xact_rollback), 0) FROM pg_stat_database"
    "  WHERE datname IS DISTINCT FROM $1) AS other_transactions"
    " FROM pg_stat_database WHERE datname = $1"
)
_ACTIVITY = (
    "SELECT pid, state, wait_event_type, wait_event FROM pg_stat_activity"
    " WHERE datname = $1 AND pid <> pg_backend_pid()"
)


async def read_counters(connection: asyncpg.Connection, database: str) -> dict[str, Any]:
    row = await connection.fetchrow(_COUNTERS, database)
    if row is None:
        raise RuntimeError(f"pg_stat_database has no row for {database!r}")
    return dict(row)


async def counters_delta(
    connection: asyncpg.Connection, first: dict[str, Any], last: dict[str, Any]
) -> dict[str, int]:
    wal = await connection.fetchval(
        "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)",
        last["wal_lsn"],
        first["wal_lsn"],
    )
    delta = {
        key: int(last[key]) - int(first[key])
        for key in (
            "xact_commit",
            "xact_rollback",
            "tup_inserted",
            "tup_updated",
            "tup_deleted",
            "deadlocks",
            "other_transactions",
        )
    }
    delta["transactions"] = delta["xact_commit"] + delta["xact_rollback"]
    delta["rows_written"] = delta["tup_inserted"] + delta["tup_updated"] + delta["tup_deleted"]
    delta["wal_bytes"] = int(wal)
    return delta


async def wait_no_backends(connection: asyncpg.Connection, database: str) -> None:
    """Until no backend of `database` is left (each reports its statistics as it exits)."""
    deadline = time.monotonic() + GONE_SECONDS
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
    while await connection.fetchval(query, database):
        if time.monotonic() > deadline:
            raise RuntimeError(f"backends of {database} still there after {GONE_SECONDS:g} s")
        await asyncio.sleep(0.05)


@dataclass
class ActivitySampler:
    """Samples `database`'s backends on `connection` while `run` runs."""

    connection: asyncpg.Connection
    database: str
    interval: float = SAMPLE_SECONDS
    samples: int = 0
    with_lock_wait: int = 0  # samples in which at least one backend waited on a Lock
    active: int = 0  # backends running a statement, summed over the samples
    idle_in_transaction: int = 0
    waiting: Counter[str] = field(default_factory=Counter)  # by wait_event_type, summed
    lock_events: Counter[str] = field(default_factory=Counter)  # Lock waits by wait_event
    # Backend pid -> [CPU seconds when first seen (0 if it started since), last seen].
    backend_cpu: dict[int, list[float]] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event) -> None:
        pids: list[int] = []
        while not stop.is_set():
            rows = await self.connection.fetch(_ACTIVITY, self.database)
            pids = [row[0] for row in rows]
            self.read_cpu(pids, first=self.samples == 0)
            self.take([tuple(row)[1:] for row in rows])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
        self.read_cpu(pids, first=False)

    def read_cpu(self, pids: list[int], first: bool) -> None:
        """The CPU seconds of these backends now, if they are this machine's
        PostgreSQL processes (`first`: the sample that starts the count)."""
        for pid in pids:
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if not f.read().startswith("postgres"):
                        continue
                used = cpu_seconds(pid)
            except (OSError, ValueError, IndexError):
                continue  # gone, or not on this machine
            entry = self.backend_cpu.setdefault(pid, [used if first else 0.0, used])
            entry[1] = used

    def take(self, rows: list[Any]) -> None:
        """Count one sample of (state, wait_event_type, wait_event) rows."""
        self.samples += 1
        locked = False
        for state, wait_type, wait_event in rows:
            if state == "idle in transaction":
                self.idle_in_transaction += 1
            if state != "active":
                continue
            self.active += 1
            if wait_type:
                self.waiting[wait_type] += 1
            if wait_type == "Lock":
                locked = True
                self.lock_events[wait_event or "?"] += 1
        self.with_lock_wait += locked

    def summary(self) -> dict[str, Any]:
        n = max(1, self.samples)
        return {
            "samples": self.samples,
            "every_s": self.interval,
            "samples_with_lock_wait": self.with_lock_wait,
            "lock_wait_share": round(self.with_lock_wait / n, 4),
            "mean_active": round(self.active / n, 3),
            "mean_idle_in_transaction": round(self.idle_in_transaction / n, 3),
            "mean_waiting": {kind: round(count / n, 3) for kind, count in self.waiting.items()},
            "lock_waits_by_event": dict(self.lock_events),
            "backends_seen": len(self.backend_cpu),
            # None: the server is not on this machine (or nothing was seen).
            "backend_cpu_s": (
                round(sum(last - first for first, last in self.backend_cpu.values()), 2)
                if self.backend_cpu
                else None
            ),
        }
