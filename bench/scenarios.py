"""The measurements: each scenario is one or more phases, run once per system.

A phase starts everything fresh in its own folder (broker, receivers, the
system, an empty database), proves that every target is routed with probe
events, then publishes its load and waits until every event has reached
every healthy receiver (or nothing has arrived for `STALL_SECONDS`, or the
phase's own limit passed). A phase with alert rules creates them (over REST)
before the probes, and the probes go on until the rules are live where
readings are judged (see `bench.rules`: its canary rule's alert is active).
A phase with background load first publishes it to the other projects and
waits until their hanging receivers hold requests, so that the measured load
meets them holding their share. The rate of a
phase is the unique deliveries counted at the receivers over the time from
the first publish (for the backlog: from the moment delivery was started
again) to the last arrival. A phase that asks to `watch` also answers what
the system's watch saw (`System.watch`: for EdgeSense on PostgreSQL, each
process's share of the work and the database's counters and lock waits).
The phases themselves are planned in `phases`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.mosquitto import start_mosquitto
from bench.mqtt import MqttClient
from bench.phases import Phase
from bench.processes import Children, python_module
from bench.procstats import ProcSampler
from bench.profiles import Profiler
from bench.publisher import payload, topic
from bench.receivers import PROJECT, Receivers
from bench.rules import CANARY_NAME
from bench.systems import TOPIC_PREFIX, System

STALL_SECONDS = 20.0
ROUTE_SECONDS = 60.0
POLL_SECONDS = 0.2
PROBE_EVERY_SECONDS = 0.5
# The measured load starts once the other project's receiver holds this many
# requests (the baseline's whole pool: 64 in flight).
BACKGROUND_HOLD = 64


# None once ready, else what is still missing.
ReadyCheck = Callable[[], Awaitable[str | None]]


@dataclass
class Outcome:
    ended: str  # complete | stalled | limit
    ended_ns: int

    @property
    def complete(self) -> bool:
        return self.ended == "complete"


async def wait_routed(
    broker_port: int, receivers: Receivers, projects: list[str], ready: ReadyCheck | None = None
) -> int:
    """Publish probe events (to every project) until every target has seen one
    and `ready` (if given) has nothing missing; answers how many were sent."""
    client = MqttClient(broker_port, "bench-probe")
    await client.connect()
    deadline, next_probe, sent = time.monotonic() + ROUTE_SECONDS, 0.0, 0
    try:
        while True:
            stats = await receivers.stats()
            missing: str | None = f"targets not routed: {stats}"
            if all(s["probes"] if s["mode"] == "ok" else s["requests"] for s in stats.values()):
                missing = await ready() if ready is not None else None
                if missing is None:
                    return sent
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"not ready after {ROUTE_SECONDS} s: {missing}")
            if now >= next_probe:
                for project in projects:
                    client.publish(
                        topic(TOPIC_PREFIX, project, 0), payload(-1, "probe", probe=True)
                    )
                sent, next_probe = sent + 1, now + PROBE_EVERY_SECONDS
            await asyncio.sleep(0.05)
    finally:
        await client.disconnect()


async def wait_delivered(receivers: Receivers, phase: Phase, expected: int) -> Outcome:
    """Until `expected` deliveries reached the healthy receivers, or no progress, or the limit."""
    limit = time.monotonic() + phase.limit_seconds
    last, last_change = -1, time.monotonic()
    while True:
        delivered = await receivers.delivered(phase.healthy)
        now = time.monotonic()
        if delivered >= expected:
            return Outcome("complete", time.time_ns())
        if delivered != last:
            last, last_change = delivered, now
        if now - last_change > STALL_SECONDS:
            return Outcome("stalled", time.time_ns())
        if now > limit:
            return Outcome("limit", time.time_ns())
        await asyncio.sleep(POLL_SECONDS)


@dataclass
class PhaseRun:
    """One phase of one system, from start to teardown."""

    system: System
    phase: Phase
    directory: Path
    profile: Path | None = None  # py-spy our processes, writing here
    sampler: ProcSampler = field(default_factory=ProcSampler)

    def track(self, children: Children) -> None:
        for name, pid in self.system.processes().items():
            if pid not in self.sampler.pids:
                self.sampler.track(name, pid)
        for child in children.started:
            if child.running and child.pid not in self.sampler.pids:
                self.sampler.track(child.name, child.pid)

    async def run(self) -> dict[str, Any]:
        """Start everything, measure, stop everything; answers the phase's figures."""
        started = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        children = Children(self.directory)
        receivers: Receivers | None = None
        try:
            _, broker_port = await start_mosquitto(children)
            receivers = await Receivers.start(children, self.phase.endpoints)
            await self.system.start(
                children,
                broker_port,
                receivers.targets,
                self.phase.settings,
                self.phase.replicas,
            )
            ready = await self._create_rules() if self.phase.rules else None
            probes = await wait_routed(broker_port, receivers, self.phase.projects, ready)
            result = await self._measure(children, broker_port, receivers, probes)
            return result | {"wall_seconds": round(time.monotonic() - started, 1)}
        finally:
            if receivers is not None:
                await receivers.close()
            await children.stop_all()
            await self.system.close()

    async def _create_rules(self) -> ReadyCheck:
        """Create the phase's alert rules, the canary last; answers the check
        that they are live (the canary's alert, which probes trigger, is active)."""
        rules = list(self.phase.rules)
        canary = [rule for rule in rules if rule["name"] == CANARY_NAME]
        if len(canary) != 1:
            raise ValueError(f"a phase's rules need one canary rule named {CANARY_NAME!r}")
        await self.system.create_rules([rule for rule in rules if rule not in canary])
        [canary_id] = await self.system.create_rules(canary)

        async def live() -> str | None:
            if await self.system.active_alerts(canary_id):
                return None
            return (
                f"the canary rule {canary_id} has no active alert: the rules are not "
                "live where readings are judged"
            )

        return live

    async def _measure(
        self, children: Children, broker_port: int, receivers: Receivers, probes: int
    ) -> dict[str, Any]:
        phase = self.phase
        if phase.backlog:
            await self.system.pause()
        watch = await self.system.watch() if phase.watch else None
        self.track(children)
        self.sampler.mark()
        stop = asyncio.Event()
        sampling = asyncio.create_task(self.sampler.run(stop))
        sizes: list[tuple[float, int]] = []
        sizing = None
        if phase.sample_database_seconds:
            sizing = asyncio.create_task(
                sample_database(self.system, phase.sample_database_seconds, sizes, stop)
            )
        profiler = None
        if self.profile is not None:
            profiler = Profiler(self.profile, f"{phase.name}-{self.system.name}")
            await profiler.start(children, self.system.processes())
        try:
            if phase.background:
                await self._background(children, broker_port, receivers)
            argv = python_module(
                "bench.publisher",
                *("--port", str(broker_port), "--prefix", TOPIC_PREFIX, "--project", PROJECT),
                *("--run", phase.name, "--count", str(phase.count), "--rate", str(phase.rate)),
                *(["--sparkplug"] if phase.sparkplug else []),
            )
            publisher = await children.start("publisher", argv, stdout_pipe=True)
            self.track(children)
            out, _ = await publisher.process.communicate()
            if publisher.process.returncode != 0:
                raise RuntimeError(f"the publisher failed:\n{publisher.log()}")
            published = json.loads(out)
            start_ns = published["start_ns"]
            if phase.backlog:
                start_ns = time.time_ns()
                await self.system.resume()
                self.track(children)
            expected = published["published"] * len(phase.healthy)
            outcome = await wait_delivered(receivers, phase, expected)
        except BaseException:
            if watch is not None:
                await watch.close()
            raise
        finally:
            stop.set()
            await sampling
            if sizing is not None:
                await sizing
            profiles = [str(path) for path in await profiler.stop()] if profiler else []
        # After the last sample of CPU: finishing may stop the system.
        cluster = await watch.finish() if watch is not None else None
        stats = await receivers.stats(full=True)
        processes = self.sampler.report()
        processes["publisher"] = {k: published[k] for k in ("cpu_s", "peak_rss_mb")}
        result = summarise(self.system, phase, published, start_ns, outcome, stats, probes)
        if sizes:
            result["database"] = database_growth(sizes, phase.settled_after_seconds)
        if cluster is not None:
            result["cluster"] = cluster | {"cpu_s_by_process": self.sampler.by_process()}
        ours = sum(p["cpu_s"] for name, p in processes.items() if not name.startswith("py-spy"))
        machine = self.sampler.machine(ours)
        return result | {"processes": processes, "profiles": profiles, "machine": machine}

    async def _background(self, children: Children, broker_port: int, receivers: Receivers) -> None:
        """Publish the other projects' events; wait until their receivers hold requests."""
        others = [p for p in self.phase.projects if p != PROJECT]
        for project in others:
            argv = python_module(
                "bench.publisher",
                *("--port", str(broker_port), "--prefix", TOPIC_PREFIX, "--project", project),
                *("--run", "background", "--count", str(self.phase.background), "--background"),
            )
            publisher = await children.start(f"publisher-{project}", argv, stdout_pipe=True)
            await publisher.process.communicate()
            if publisher.process.returncode != 0:
                raise RuntimeError(f"the background publisher failed:\n{publisher.log()}")
        hanging = [e for e in self.phase.endpoints if e.project in others and e.mode == "hang"]
        deadline = time.monotonic() + ROUTE_SECONDS
        while True:
            stats = await receivers.stats()
            if all(
                stats[e.name]["requests"]
                >= min(BACKGROUND_HOLD, e.webhooks * self.phase.background)
                for e in hanging
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the background load is not held after {ROUTE_SECONDS} s")
            await asyncio.sleep(0.05)


async def sample_database(
    system: System, every: float, sizes: list[tuple[float, int]], stop: asyncio.Event
) -> None:
    """Append (seconds since the start, bytes) every `every` seconds, and once
    more when `stop` is set."""
    started = time.monotonic()
    while True:
        size = await system.database_bytes()
        if size is not None:
            sizes.append((round(time.monotonic() - started, 1), size))
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


def database_growth(sizes: list[tuple[float, int]], settled_after: float) -> dict[str, Any]:
    """The sampled sizes in MB, and how they grew: `last_to_peak` (the brief's
    figure: 1.0 also when the size grew to the very end), and `last_to_settled`,
    the last size over the first one sampled at or after `settled_after`
    (about 1.0 when the size stayed flat from then on; without retention, the
    run's length over `settled_after`)."""
    mb = [(t, round(size / 2**20, 2)) for t, size in sizes]
    peak = max(size for _, size in mb)
    last = mb[-1][1]
    settled = next((size for t, size in mb if t >= settled_after), None)
    return {
        "mb": mb,
        "peak_mb": peak,
        "last_mb": last,
        "settled_after_s": settled_after,
        "settled_mb": settled,
        "last_to_peak": round(last / peak, 3) if peak else None,
        "last_to_settled": round(last / settled, 3) if settled else None,
    }


def summarise(
    system: System,
    phase: Phase,
    published: dict[str, Any],
    start_ns: int,
    outcome: Outcome,
    stats: dict[str, dict[str, Any]],
    probes: int,
) -> dict[str, Any]:
    """The figures of one phase, from the publisher's summary and the receivers' counters."""
    ok = [stats[name] for name in phase.healthy]
    delivered = sum(s["delivered"] for s in ok)
    expected = published["published"] * len(ok)
    last_ns = max(s["last_ns"] for s in ok) if outcome.complete else outcome.ended_ns
    seconds = max(1e-9, (last_ns - start_ns) / 1e9)
    publish_seconds = max(1e-9, (published["end_ns"] - published["start_ns"]) / 1e9)
    return {
        "system": system.name,
        "phase": phase.name,
        "settings": system.describe(),
        "rules": len(phase.rules),
        "published": published["published"],
        "rate_asked": phase.rate,
        "publish_seconds": round(publish_seconds, 3),
        "publish_rate": round(published["published"] / publish_seconds, 1),
        "expected": expected,
        "delivered": delivered,
        "missing": expected - delivered,
        "ended": outcome.ended,
        "limit_seconds": phase.limit_seconds,
        "duplicates": sum(s["duplicates"] for s in ok),
        "out_of_order": sum(s["out_of_order"] for s in ok),
        "bad_signature": sum(s["bad_signature"] + s["bad_body"] for s in stats.values()),
        "probes_sent": probes,
        "seconds": round(seconds, 3),
        "deliveries_per_s": round(delivered / seconds, 1),
        "latency_ms": ok[0].get("latency_ms", {}) if len(ok) == 1 else {},
        "p50_ms_by_quarter": ok[0].get("p50_ms_by_quarter", []) if len(ok) == 1 else [],
        "endpoints": stats,
    }
