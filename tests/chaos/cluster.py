"""The chaos test's cluster, and the chaos done to it.

A private PostgreSQL and a private persistent Mosquitto (both ours to
restart), a registry, two delivery processes on the one outbox and two
bridges on a shared subscription, bridge N publishing to delivery N: all
real processes (tests.support.processes). Each bridge and delivery is a
`Slot`, the part a supervisor (systemd, Kubernetes) plays: after we kill
its process it starts a new one with the same settings, the same client id
(the bridge's MQTT session) and the same port (delivery's, which its bridge
dials), trying again if the new process exits while starting (its database
may be down just then). The registry is never killed; no process is ever
started again unless we killed it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from edgesense.common.config import Settings
from edgesense.delivery.store.reads import OutboxReads
from edgesense.delivery.store.tables import deliveries
from edgesense.storage.engine import create_engine
from tests.support.broker import Mosquitto
from tests.support.ports import free_port
from tests.support.postgres import PrivatePostgres
from tests.support.processes import (
    Processes,
    ServiceExited,
    ServiceProcess,
    register_webhook,
    wait_routed,
)
from tests.support.receivers import Receiver

PROJECT = "project-a"
START_TRIES = 20  # starts of one slot's process that exit while starting, at most
RETRY_START_SECONDS = 1.0


@dataclass
class Slot:
    """One supervised bridge or delivery process, and what happened to it."""

    name: str
    service: str  # "bridge" or "delivery"
    env: dict[str, str]
    port: int | None = None  # delivery's gRPC port: its bridge dials it
    process: ServiceProcess | None = None
    restarting: bool = False
    killed: list[ServiceProcess] = field(default_factory=list)
    failed_starts: list[ServiceProcess] = field(default_factory=list)  # exited while starting

    @property
    def up(self) -> bool:
        return self.process is not None and self.process.running and not self.restarting


@dataclass
class Outage:
    what: str
    seconds: float


@dataclass
class ChaosCluster:
    directory: Path
    processes: Processes
    receiver: Receiver
    secret: str
    postgres: PrivatePostgres = field(default_factory=PrivatePostgres)
    mosquitto: Mosquitto | None = None
    registry: ServiceProcess | None = None
    slots: list[Slot] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    idle_turns: int = 0  # kill turns that found no process up to kill
    database_url: str = ""
    webhook_id: str = ""

    async def start(self, lease_seconds: float) -> None:
        await asyncio.to_thread(self.postgres.start)
        self.database_url = await asyncio.to_thread(self.postgres.create_database, "edgesense")
        self.mosquitto = Mosquitto(self.directory, persistent=True)
        await asyncio.to_thread(self.mosquitto.start)
        api_key = "chaos-key-" + secrets.token_hex(8)
        delivery_ports = [free_port(), free_port()]
        env = {
            "EDGESENSE_DATABASE_URL": self.database_url,
            "EDGESENSE_API_KEYS": f"{api_key}={PROJECT}",
            "EDGESENSE_SECRET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "EDGESENSE_ALLOW_INSECURE_URLS": "1",
            "EDGESENSE_ALLOW_PRIVATE_NETWORKS": "1",
            "EDGESENSE_MQTT_URL": self.mosquitto.url,
            "EDGESENSE_MQTT_SHARED_GROUP": "chaos-" + secrets.token_hex(8),
            # Reconnect within 2 s of the broker's return, not up to 30 s later.
            "EDGESENSE_MQTT_RECONNECT_MAX_SECONDS": "2",
            # Retries soon and often enough that the receiver's failures never use
            # up a delivery's attempts (11 in a row at a 4 % failure rate: never).
            "EDGESENSE_RETRY_BASE_SECONDS": "0.05",
            "EDGESENSE_RETRY_MAX_SECONDS": "2",
            "EDGESENSE_MAX_RETRIES": "10",
            "EDGESENSE_DELIVERY_TIMEOUT_SECONDS": "1",
            # What a killed delivery had claimed is due again this soon.
            "EDGESENSE_DELIVERY_LEASE_SECONDS": f"{lease_seconds:g}",
            "EDGESENSE_DELIVERY_ADDR": f"127.0.0.1:{delivery_ports[0]}",  # operational events
        }
        self.registry = await self.processes.start("registry", env)
        self.webhook_id = await register_webhook(
            self.registry, api_key, self.receiver.url, secret=self.secret
        )
        env["EDGESENSE_REGISTRY_ADDR"] = self.registry.address
        token = Settings.from_env(env).service_token()
        for n, port in enumerate(delivery_ports, 1):
            slot = Slot(f"delivery-{n}", "delivery", dict(env), port)
            await self._start(slot)
            assert slot.process is not None
            await wait_routed(slot.process, token, self.receiver, self.webhook_id, PROJECT)
            self.slots.append(slot)
        for n, port in enumerate(delivery_ports, 1):
            bridge_env = {
                **env,
                "EDGESENSE_MQTT_CLIENT_ID": f"chaos-bridge-{n}",
                "EDGESENSE_DELIVERY_ADDR": f"127.0.0.1:{port}",
            }
            slot = Slot(f"bridge-{n}", "bridge", bridge_env)
            await self._start(slot)  # SERVING: connected and subscribed
            self.slots.append(slot)

    async def kill_one(self, rng: random.Random, restart_after: float) -> str | None:
        """kill -9 a random bridge or delivery that is up; start it again
        `restart_after` seconds after it died. Answers its name."""
        up = [slot for slot in self.slots if slot.up]
        if not up:  # all four still starting again (on 2 busy cores a start takes seconds)
            self.idle_turns += 1
            return None
        slot = rng.choice(up)
        assert slot.process is not None
        slot.restarting = True
        try:
            slot.process.kill()
            await slot.process.wait_exit()
            slot.killed.append(slot.process)
            await asyncio.sleep(restart_after)  # the supervisor's pause before a restart
            await self._start(slot)
        finally:
            slot.restarting = False
        return slot.name

    async def restart_postgres(self, down_seconds: float) -> None:
        """Stop PostgreSQL as a crash would (-m immediate), keep it down, start it."""
        began = time.monotonic()
        await asyncio.to_thread(self.postgres.stop, "immediate")
        await asyncio.sleep(down_seconds)  # the outage itself
        await asyncio.to_thread(self.postgres.start)
        self.outages.append(
            Outage("PostgreSQL (stop -m immediate, start)", time.monotonic() - began)
        )

    async def restart_mosquitto(self, down_seconds: float) -> None:
        """SIGTERM (Mosquitto saves its persistence file), keep it down, start it."""
        assert self.mosquitto is not None
        began = time.monotonic()
        await asyncio.to_thread(self.mosquitto.stop)
        await asyncio.sleep(down_seconds)  # the outage itself
        await asyncio.to_thread(self.mosquitto.start)
        self.outages.append(Outage("Mosquitto (SIGTERM, start)", time.monotonic() - began))

    async def outbox(self) -> dict[str, int]:
        """Deliveries by status, and `stuck`: pending ones whose lease ran out
        (or that were due, unleased) more than a lease ago: nobody took them up."""
        lease = float(self.slots[0].env["EDGESENSE_DELIVERY_LEASE_SECONDS"])
        now = time.time()
        reads = OutboxReads(create_engine(self.database_url))
        try:
            counts = await reads.counts()
            async with reads.engine.connect() as conn:
                stuck = await conn.scalar(
                    select(func.count())
                    .select_from(deliveries)
                    .where(
                        deliveries.c.status == "pending",
                        func.coalesce(deliveries.c.lease_expires_at, deliveries.c.next_attempt_at)
                        < now - lease,
                    )
                )
        finally:
            await reads.close()
        return {**counts, "stuck": int(stuck or 0)}

    def unexpected_exits(self) -> list[str]:
        """Processes that ended though we did not kill them, a failed start
        aside: each one would have needed someone to start it again by hand."""
        expected = {id(p) for slot in self.slots for p in [*slot.killed, *slot.failed_starts]}
        return [
            f"{p.name} pid {p.process.pid} (exit {p.process.returncode})"
            for p in self.processes.started
            if not p.running and id(p) not in expected
        ]

    def log_lines(self, *texts: str) -> int:
        """Lines of every service process's log that contain one of `texts`."""
        return sum(
            1
            for p in self.processes.started
            for line in p.log().splitlines()
            if any(text in line for text in texts)
        )

    def stop_mosquitto(self) -> None:
        if self.mosquitto is not None:
            self.mosquitto.stop()

    async def _start(self, slot: Slot) -> None:
        for _ in range(START_TRIES):
            try:
                slot.process = await self.processes.start(slot.service, slot.env, slot.port)
                return
            except ServiceExited as exited:
                if exited.service is not None:
                    slot.failed_starts.append(exited.service)
                await asyncio.sleep(RETRY_START_SECONDS)  # the supervisor's restart backoff
        raise AssertionError(f"{slot.name} did not start in {START_TRIES} tries")
