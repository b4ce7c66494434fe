"""The orchestrator's side of the receiver process: start it, read its counters.

An `EndpointSpec` names one receiver endpoint (its behaviour and secret), the
project whose webhooks point at it, and how many (each at its own path); the
receiver process answers which port each got. `Receivers.stats()` returns the
counters of `bench.receiver` per endpoint name.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.processes import Child, Children, python_module

PROJECT = "bench"  # the project whose healthy webhooks are measured
OTHER_PROJECT = "bench-other"  # a project beside it

START_SECONDS = 20.0


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    mode: str = "ok"  # ok | fail | hang
    secret: str = field(default_factory=lambda: "whsec-bench-" + secrets.token_hex(8))
    project: str = PROJECT
    webhooks: int = 1  # registered to this endpoint, at /hook, /hook/2, ...
    ordered: bool = False  # EdgeSense only: its webhooks registered `ordered`


@dataclass(frozen=True)
class Target:
    """A webhook target as the system under test is told about it."""

    name: str
    mode: str
    url: str
    secret: str
    project: str = PROJECT
    ordered: bool = False


@dataclass
class Receivers:
    child: Child
    control_port: int
    targets: list[Target]
    session: aiohttp.ClientSession

    @classmethod
    async def start(cls, children: Children, specs: list[EndpointSpec]) -> Receivers:
        spec = json.dumps([{"name": s.name, "mode": s.mode, "secret": s.secret} for s in specs])
        child = await children.start(
            "receiver", python_module("bench.receiver", spec), stdout_pipe=True
        )
        assert child.process.stdout is not None
        try:
            line = await asyncio.wait_for(child.process.stdout.readline(), START_SECONDS)
            ports = json.loads(line)
        except (TimeoutError, ValueError):
            raise RuntimeError(f"the receiver did not start; its log:\n{child.log()}") from None
        targets = [
            Target(
                s.name,
                s.mode,
                f"http://127.0.0.1:{ports['endpoints'][s.name]}/hook{'' if n == 1 else f'/{n}'}",
                s.secret,
                s.project,
                s.ordered,
            )
            for s in specs
            for n in range(1, s.webhooks + 1)
        ]
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return cls(child, int(ports["control"]), targets, session)

    async def stats(self, full: bool = False) -> dict[str, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.control_port}/stats" + ("?full=1" if full else "")
        async with self.session.get(url) as answer:
            answer.raise_for_status()
            result: dict[str, dict[str, Any]] = await answer.json()
            return result

    async def delivered(self, names: list[str]) -> int:
        stats = await self.stats()
        return sum(int(stats[name]["delivered"]) for name in names)

    async def close(self) -> None:
        await self.session.close()
