"""CPU time and memory of running processes, read from /proc (Linux).

CPU seconds are utime + stime from /proc/<pid>/stat; peak RSS is VmHWM from
/proc/<pid>/status (the kernel's own high-water mark, so a short spike
between two samples is not missed); VmRSS is sampled over time as well, to
show whether memory stays bounded. A name may have several pids over a phase
(delivery stopped and started again): CPU adds up over them, the peak is the
highest of them. `name#2` is a second process of the kind `name`: `report`
adds the kinds up, `by_process` keeps them apart. The last sample of a pid
that has exited is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_SECONDS = 0.5


def kind_of(name: str) -> tuple[str, int]:
    """A process name's kind and number: ("delivery", 2) for "delivery#2",
    ("senders", 2) for "senders#2.1" (a sender of delivery#2), ("bridge", 1)
    for "bridge"."""
    kind, _, number = name.partition("#")
    return kind, int(number.split(".")[0]) if number else 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` so far; OSError once it is gone."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        # The command name (field 2) may hold spaces: split after its ')'.
        rest = f.read().rsplit(b")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLOCK_TICKS


def child_pids(pid: int) -> list[int]:
    """The processes `pid` has started and that still run (empty once it is gone)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with (
            contextlib.suppress(OSError, IndexError, ValueError),
            open(f"/proc/{entry}/stat", "rb") as f,
        ):
            if int(f.read().rsplit(b")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return sorted(found)


def machine_busy_seconds() -> float:
    """CPU seconds all cores have been busy since boot (/proc/stat: all but idle, iowait)."""
    with open("/proc/stat", "rb") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of `pid` in KiB; OSError once it is gone."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith(b"VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


@dataclass
class Tracked:
    """What we know of one pid."""

    name: str  # its kind: "delivery" for "delivery#2"
    label: str = ""  # as tracked: "delivery#2"
    cpu_at_mark: float = 0.0
    cpu: float = 0.0
    hwm_kb: int = 0


@dataclass
class ProcSampler:
    """Samples named processes every `interval` seconds while `run` runs."""

    interval: float = SAMPLE_SECONDS
    pids: dict[int, Tracked] = field(default_factory=dict)
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    machine_at_mark: float = 0.0
    machine_now: float = 0.0
    last_sample: float = 0.0

    def track(self, name: str, pid: int) -> None:
        """Follow `pid` as `name`; `name#2` counts as `name` (several processes of one kind)."""
        self.pids[pid] = Tracked(kind_of(name)[0], name)
        self._sample_one(pid, self.pids[pid], record=False)

    def mark(self) -> None:
        """Start counting CPU from now (start-up work is not measured)."""
        self.sample(record=False)
        for tracked in self.pids.values():
            tracked.cpu_at_mark = tracked.cpu
        self.series.clear()
        self.started = time.monotonic()
        self.machine_at_mark = self.machine_now = machine_busy_seconds()

    def sample(self, record: bool = True) -> None:
        for pid, tracked in self.pids.items():
            self._sample_one(pid, tracked, record)
        self.machine_now = machine_busy_seconds()
        self.last_sample = time.monotonic()

    def _sample_one(self, pid: int, tracked: Tracked, record: bool) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            tracked.cpu = cpu_seconds(pid)
            rss, hwm = memory_kb(pid)
            tracked.hwm_kb = max(tracked.hwm_kb, hwm)
            if record:
                at = round(time.monotonic() - self.started, 2)
                self.series.setdefault(tracked.name, []).append((at, round(rss / 1024, 1)))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
        self.sample()

    def machine(self, ours_cpu_s: float) -> dict[str, float]:
        """The whole machine since `mark`: CPU seconds busy, and how much of it was not
        the benchmark's processes (`ours_cpu_s`): other users, the kernel's own work."""
        wall = max(1e-9, self.last_sample - self.started)
        busy = self.machine_now - self.machine_at_mark
        others = max(0.0, busy - ours_cpu_s)
        cores = os.cpu_count() or 1
        return {
            "wall_s": round(wall, 1),
            "cores": cores,
            "busy_cpu_s": round(busy, 1),
            "not_benchmark_cpu_s": round(others, 1),
            "not_benchmark_share": round(others / wall / cores, 3),
        }

    def report(self) -> dict[str, dict[str, Any]]:
        """Per name: CPU seconds since `mark`, peak RSS (MB), and the RSS samples."""
        answer: dict[str, dict[str, Any]] = {}
        for tracked in self.pids.values():
            entry = answer.setdefault(tracked.name, {"cpu_s": 0.0, "peak_rss_mb": 0.0})
            entry["cpu_s"] = round(entry["cpu_s"] + tracked.cpu - tracked.cpu_at_mark, 2)
            entry["peak_rss_mb"] = max(entry["peak_rss_mb"], round(tracked.hwm_kb / 1024, 1))
        for name, samples in self.series.items():
            if name in answer:
                answer[name]["max_sampled_rss_mb"] = max(rss for _, rss in samples)
                answer[name]["rss_mb_samples"] = thin(samples, 60)
        return answer

    def by_process(self) -> dict[str, float]:
        """CPU seconds since `mark` per name as tracked ("delivery#2" apart from "delivery")."""
        answer: dict[str, float] = {}
        for tracked in self.pids.values():
            used = tracked.cpu - tracked.cpu_at_mark
            answer[tracked.label] = round(answer.get(tracked.label, 0.0) + used, 2)
        return answer


def thin(samples: list[tuple[float, float]], most: int) -> list[tuple[float, float]]:
    """At most `most` samples, evenly spread, the last one always kept."""
    if len(samples) <= most:
        return samples
    step = len(samples) / most
    kept = [samples[int(i * step)] for i in range(most - 1)]
    return [*kept, samples[-1]]
