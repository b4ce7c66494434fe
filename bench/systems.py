"""The two systems under test, behind one small interface.

`System.start` brings the system up against a broker and the receivers'
targets; `pause`/`resume` stop and restart the part that delivers (for the
backlog); `processes` names the pids whose CPU and memory are ours to report;
`create_rules` and `active_alerts` are the alert rules (EdgeSense's only);
`watch` follows how the work divides among the processes and what it costs
the database (EdgeSense's on PostgreSQL only). `Replicas` says how many
delivery processes and bridges EdgeSense runs (the baseline is one process
whatever it says).
`Baseline` is one `bench.baseline` process; `EdgeSense` (in `bench.cluster`)
is the four services.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bench.processes import Child, Children, python_module
from bench.receivers import Target

TOPIC_PREFIX = "edgesense"
SHARED_GROUP = "edgesense-bench"  # EDGESENSE_MQTT_SHARED_GROUP of several bridges


@dataclass(frozen=True)
class Replicas:
    """How many delivery processes and bridges run side by side on one database.
    Bridge i publishes to delivery process i (modulo their number): a bridge
    has one Publish stream to one delivery address; a delivery process no
    bridge publishes to sends what it claims from the outbox."""

    deliveries: int = 1
    bridges: int = 1

    def __post_init__(self) -> None:
        if self.deliveries < 1 or self.bridges < 1:
            raise ValueError(f"at least one delivery process and one bridge, not {self}")

    def __str__(self) -> str:
        def count(n: int, what: str) -> str:
            return f"{n} {what}{'' if n == 1 else 'es' if what.endswith('s') else 's'}"

        return f"{count(self.deliveries, 'delivery process')}, {count(self.bridges, 'bridge')}"


class Watch(Protocol):
    async def finish(self) -> dict[str, Any]:
        """Once the load is delivered: stop watching and answer the figures
        (this may stop the system, to read its database's counters exactly)."""

    async def close(self) -> None:
        """Stop watching without figures (the phase failed); again is harmless."""


class System(Protocol):
    name: str

    async def start(
        self,
        children: Children,
        broker_port: int,
        targets: list[Target],
        settings: Mapping[str, str] | None = None,
        replicas: Replicas | None = None,
    ) -> None:
        """Start, and know the targets (every one gets `device.data` of its project;
        the baseline has no projects: it sends every event to every target).
        `settings`: environment variables beside the system's defaults (EdgeSense's);
        `replicas`: how many delivery processes and bridges (EdgeSense's; default one each)."""

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

    async def watch(self) -> Watch | None:
        """Start following how the work divides and what the database does
        (None: nothing to follow)."""

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
        replicas: Replicas | None = None,
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

    async def watch(self) -> Watch | None:
        return None

    async def close(self) -> None:
        self.child = None
