"""The two systems under test, behind one small interface.

`System.start` brings the system up against a broker and the receivers'
targets; `pause`/`resume` stop and restart the part that delivers (for the
backlog); `processes` names the pids whose CPU and memory are ours to report;
`create_rules` and `active_alerts` are the alert rules (EdgeSense's only).
`Baseline` is one `bench.baseline` process; `EdgeSense` (in `bench.cluster`)
is the four services.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from bench.processes import Child, Children, python_module
from bench.receivers import Target

TOPIC_PREFIX = "edgesense"


class System(Protocol):
    name: str

    async def start(
        self,
        children: Children,
        broker_port: int,
        targets: list[Target],
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """Start, and know the targets (every one gets `device.data` of its project;
        the baseline has no projects: it sends every event to every target).
        `settings`: environment variables beside the system's defaults (EdgeSense's)."""

    async def database_bytes(self) -> int | None:
        """The size of what it stores now (None: it stores nothing)."""

    def processes(self) -> dict[str, int]:
        """Our processes now running: name -> pid."""

    async def pause(self) -> None:
        """Stop delivering (the broker keeps what arrives meanwhile)."""

    async def resume(self) -> None:
        """Deliver again."""

    def describe(self) -> dict[str, object]:
        """Settings worth printing beside the figures."""

    async def create_rules(self, rules: Sequence[Mapping[str, Any]]) -> list[str]:
        """Create alert rules (RuleSpecs as JSON) in the measured project, all
        answered before this returns; answers their ids, in the same order."""

    async def active_alerts(self, rule_id: str) -> int:
        """How many alerts of the rule are active now."""

    async def close(self) -> None:
        """After its processes have stopped: drop what it created (databases)."""


class Baseline:
    """The minimal forwarder (`bench.baseline`), one process."""

    name = "baseline"

    def __init__(self, in_flight: int = 64, mqtt: str = "5") -> None:
        self.in_flight = in_flight
        self.mqtt = mqtt
        self.children: Children | None = None
        self.child: Child | None = None
        self.argv: list[str] = []

    async def start(
        self,
        children: Children,
        broker_port: int,
        targets: list[Target],
        settings: Mapping[str, str] | None = None,
    ) -> None:
        spec = [
            {"url": t.url, "secret": t.secret, "webhookId": f"wh_{t.name}_{n}"}
            for n, t in enumerate(targets)
        ]
        self.children = children
        self.argv = python_module(
            "bench.baseline",
            "--port",
            str(broker_port),
            "--prefix",
            TOPIC_PREFIX,
            "--targets",
            json.dumps(spec),
            "--in-flight",
            str(self.in_flight),
            "--mqtt",
            self.mqtt,
        )
        await self.resume()

    def processes(self) -> dict[str, int]:
        return {"forwarder": self.child.pid} if self.child and self.child.running else {}

    async def database_bytes(self) -> int | None:
        return None

    async def pause(self) -> None:
        if self.child is not None:
            await self.child.stop()

    async def resume(self) -> None:
        assert self.children is not None
        self.child = await self.children.start("baseline", self.argv)
        # Subscribed once it says so; probes prove the rest.
        for _ in range(200):
            if "forwarding" in self.child.log() or not self.child.running:
                break
            await asyncio.sleep(0.05)
        if not self.child.running:
            raise RuntimeError(f"the baseline exited; its log:\n{self.child.log()}")

    def describe(self) -> dict[str, object]:
        return {
            "in_flight": self.in_flight,
            "mqtt": self.mqtt,
            "receive_maximum": 1000,
            "timeout_s": 3.0,
        }

    async def create_rules(self, rules: Sequence[Mapping[str, Any]]) -> list[str]:
        raise RuntimeError("the baseline has no alert rules")

    async def active_alerts(self, rule_id: str) -> int:
        raise RuntimeError("the baseline has no alert rules")

    async def close(self) -> None:
        self.child = None
