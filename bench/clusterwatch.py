"""How the work divides among EdgeSense's processes, and what it costs PostgreSQL.

A `ClusterWatch` starts when a phase's load starts and finishes once it has
been delivered. Meanwhile it samples the database's backends
(`dbstats.ActivitySampler`); at both ends it reads each process's own
counters from its /metrics (events a delivery process accepted, deliveries
it sent successfully, events a bridge forwarded) and the database's
counters. To read those exactly it stops the system first (see `dbstats`):
a watched phase ends with the system stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from bench.databases import admin_dsn
from bench.dbstats import (
    ActivitySampler,
    counters_delta,
    read_counters,
    wait_no_backends,
)
from bench.procstats import kind_of

# The counters each process kind reports per process (Prometheus sample name, labels).
COUNTERS: dict[str, tuple[tuple[str, str, dict[str, str]], ...]] = {
    "delivery": (
        ("accepted", "edgesense_events_accepted_total", {}),
        ("succeeded", "edgesense_deliveries_total", {"outcome": "succeeded"}),
    ),
    "bridge": (("forwarded", "edgesense_bridge_events_forwarded_total", {}),),
}


def counters_of(kind: str, exposition: str) -> dict[str, float]:
    """The `COUNTERS` of a process of `kind` in its Prometheus text."""
    wanted = COUNTERS.get(kind, ())
    found = dict.fromkeys((name for name, _, _ in wanted), 0.0)
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            for name, metric, labels in wanted:
                if sample.name == metric and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    found[name] += sample.value
    return found


async def scrape(http: aiohttp.ClientSession, metrics: Mapping[str, str]) -> dict[str, Any]:
    """Process name ("delivery#2") -> its counters, from http://addr/metrics."""

    async def one(name: str, addr: str) -> dict[str, float]:
        async with http.get(f"http://{addr}/metrics") as answer:
            answer.raise_for_status()
            return counters_of(kind_of(name)[0], await answer.text())

    values = await asyncio.gather(*(one(name, addr) for name, addr in metrics.items()))
    return dict(zip(metrics, values, strict=True))


@dataclass
class ClusterWatch:
    """`start` when the load starts; `finish` once it is delivered (it stops the system)."""

    server_url: str  # SQLAlchemy URL of the server's admin database
    database: str  # the database under test
    metrics: dict[str, str]  # process name -> its metrics address
    stop_system: Callable[[], Awaitable[None]]
    _connections: list[Any] = field(default_factory=list)
    _http: aiohttp.ClientSession | None = None
    _sampler: ActivitySampler | None = None
    _sampling: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _first: dict[str, Any] = field(default_factory=dict)
    _first_counters: dict[str, Any] = field(default_factory=dict)

    async def start(self) -> None:
        dsn = admin_dsn(self.server_url)
        try:
            for _ in range(2):  # one samples activity, the other reads counters
                self._connections.append(await asyncpg.connect(dsn))
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
            self._first_counters = await scrape(self._http, self.metrics)
            self._first = await read_counters(self._connections[1], self.database)
        except BaseException:
            await self.close()
            raise
        self._sampler = ActivitySampler(self._connections[0], self.database)
        self._sampling = asyncio.create_task(self._sampler.run(self._stop))

    async def finish(self) -> dict[str, Any]:
        """Stop sampling, read the processes' counters, stop the system, read
        the database's; answers the differences since `start`."""
        assert self._http is not None
        assert self._sampler is not None
        try:
            self._stop.set()
            if self._sampling is not None:
                await self._sampling
            last_counters = await scrape(self._http, self.metrics)
            await self.stop_system()
            connection = self._connections[1]
            await wait_no_backends(connection, self.database)
            last = await read_counters(connection, self.database)
            database = await counters_delta(connection, self._first, last)
        finally:
            await self.close()
        per_process = {
            name: {
                key: round(value - self._first_counters[name].get(key, 0.0))
                for key, value in counters.items()
            }
            for name, counters in last_counters.items()
        }
        return {
            "database": database,
            "activity": self._sampler.summary(),
            "per_process": per_process,
        }

    async def close(self) -> None:
        self._stop.set()
        if self._sampling is not None:
            # It ends at the stop just set, or has failed (its error is finish's to raise).
            await asyncio.gather(self._sampling, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        while self._connections:
            await self._connections.pop().close()
