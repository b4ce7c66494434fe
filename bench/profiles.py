"""Sampling profiles of our processes during a phase, with py-spy (`--profile DIR`).

`Profiler.start` attaches `py-spy record --gil --format raw` to each process
while the load runs; `stop` interrupts them (py-spy writes its file on
SIGINT). `--gil` samples only the thread holding the GIL, so the shares are
of the Python work done (py-spy cannot tell idle threads apart on this kind
of VM: without it, a loop waiting in epoll counts as busy); the time SQLite
and the kernel spend with the GIL released is not in them.
`hot_spots` reads a raw (collapsed stacks) file back into the functions with
the largest inclusive and self shares of the samples, which is what the
summary prints.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import Child, Children

_VENV_PY_SPY = Path(sys.executable).parent / "py-spy"
PY_SPY = str(_VENV_PY_SPY) if _VENV_PY_SPY.exists() else shutil.which("py-spy")
RATE = 100  # samples/s: enough for shares of a few percent, cheap for the target
ENTRY_FRAMES = frozenset(
    (
        "_run_module_as_main",
        "_run_code",
        "<module>",
        "main",
        "run_service",
        "run",
        "Runner.run",
        "Thread._bootstrap",
        "Thread._bootstrap_inner",
        "Thread.run",
    )
)


@dataclass
class Profiler:
    directory: Path
    prefix: str
    running: list[tuple[Child, Path]] = field(default_factory=list)

    async def start(self, children: Children, pids: dict[str, int]) -> None:
        binary = PY_SPY
        if binary is None:
            raise RuntimeError("--profile needs py-spy (pip install py-spy)")
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            out = self.directory / f"{self.prefix}-{name}.txt"
            argv = [
                binary,
                "record",
                "--gil",
                "--function",
                "-f",
                "raw",
                "-r",
                str(RATE),
                "-o",
                str(out),
            ]
            child = await children.start(f"py-spy-{name}", [*argv, "--pid", str(pid)])
            self.running.append((child, out))

    async def stop(self) -> list[Path]:
        for child, _ in self.running:
            if child.running:
                child.process.send_signal(signal.SIGINT)
        for child, _ in self.running:
            try:  # SIGINT is py-spy's Ctrl-C: it writes the file, then exits
                await asyncio.wait_for(child.process.wait(), 30)
            except TimeoutError:
                await child.stop(5.0)
        return [out for _, out in self.running if out.exists()]


@dataclass(frozen=True)
class HotSpots:
    """Shares of the samples in percent, largest first, as (share, function)."""

    samples: int
    inclusive: list[tuple[float, str]]
    own: list[tuple[float, str]]


def hot_spots(path: Path, most: int = 15) -> HotSpots:
    """The `most` functions with the largest inclusive and self shares of `path`'s samples."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples

    def top(counter: Counter[str], skip_roots: bool) -> list[tuple[float, str]]:
        rows = []
        for frame, samples in counter.most_common():
            share = round(100 * samples / max(1, total), 1)
            if skip_roots and frame.split(" (", 1)[0] in ENTRY_FRAMES:
                continue  # the way into the event loop or a thread: in (nearly) every sample
            rows.append((share, frame))
            if len(rows) == most:
                break
        return rows

    return HotSpots(total, top(inclusive, True), top(own, False))
