"""Child processes of a benchmark run: started with a log file, stopped by their pid.

Everything the benchmark starts (services, broker, receivers, publishers)
goes through `Child`, so that each one's output lands in the run's folder and
whatever is left running is killed when the run ends, even on an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STOP_SECONDS = 20.0


def python_module(module: str, *args: str) -> list[str]:
    """argv running `module` with this interpreter (the venv's)."""
    return [sys.executable, "-m", module, *args]


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Our environment without EDGESENSE_* (a developer's settings must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGESENSE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env | dict(extra)


@dataclass
class Child:
    """One running process; stdout goes to a pipe (when asked) or to its log file."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def log(self, last: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-last:]

    async def stop(self, seconds: float = STOP_SECONDS) -> int:
        """SIGTERM, then SIGKILL if it has not exited within `seconds`."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(seconds):
                return await self.process.wait()
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()


@dataclass
class Children:
    """The processes of one run, in the folder where their logs go."""

    directory: Path
    started: list[Child] = field(default_factory=list)

    async def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        stdout_pipe: bool = False,
    ) -> Child:
        log_path = self.directory / f"{len(self.started) + 1:02d}-{name}.log"
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else log_file,
                stderr=log_file,
                env=child_env(env or {}),
                cwd=self.directory,
            )
        child = Child(name, process, log_path)
        self.started.append(child)
        return child

    async def stop_all(self) -> None:
        running = [c for c in self.started if c.running]
        await asyncio.gather(*(c.stop(5.0) for c in running), return_exceptions=True)


async def wait_for_port(port: int, child: Child, seconds: float = 30.0) -> None:
    """Until something accepts connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + seconds
    while True:
        if not child.running:
            raise RuntimeError(f"{child.name} exited while starting; its log:\n{child.log()}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} not listening after {seconds} s:\n{child.log()}")
        await asyncio.sleep(0.05)
