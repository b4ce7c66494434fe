"""EdgeSense under test: registry, delivery, bridge and api as real processes.

Each runs as `python -m edgesense.cli <service>` with production settings
(not `--dev`), except that http:// and loopback targets are allowed, on free
ports, against one fresh database (a SQLite file in the run's folder, or a
new PostgreSQL database). Several delivery processes and bridges may run
(`Replicas`): each on its own ports, the bridges with their own MQTT client
ids on a shared subscription, bridge i publishing to delivery process i. A
service counts as started when its gRPC health check answers SERVING (the
api: `GET /healthz`). Webhooks and alert rules are created the way users
do, over REST at the api.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.clusterwatch import COUNTERS, ClusterWatch
from bench.databases import Database
from bench.processes import Child, Children, python_module
from bench.procstats import child_pids, kind_of
from bench.receivers import OTHER_PROJECT, PROJECT, Target
from bench.systems import SHARED_GROUP, TOPIC_PREFIX, Replicas, Watch
from tests.support.ports import free_port

API_KEYS = {
    project: "esk_bench_" + base64.urlsafe_b64encode(os.urandom(18)).decode()
    for project in (PROJECT, OTHER_PROJECT)
}
REGISTER_AT_ONCE = 50
# What the API answers for a route it does not have (or an RPC not served yet).
NO_ROUTE_STATUSES = (404, 405, 501)
START_SECONDS = 60.0


class EdgeSense:
    """The four services, delivery and bridge as `Replicas` say; `pause`/`resume`
    stop and restart every delivery process."""

    name = "edgesense"

    def __init__(self, database: Database) -> None:
        self.database = database
        self.children: Children | None = None
        self.running: dict[str, Child] = {}
        self.env: dict[str, str] = {}
        # Per process ("delivery#2"): its own variables (addresses, MQTT client id).
        self.own_env: dict[str, dict[str, str]] = {}
        self.ports: dict[str, int] = {}
        self.replicas = Replicas()
        self.webhook_ids: dict[str, str] = {}
        self.database_url = ""

    async def start(
        self,
        children: Children,
        broker_port: int,
        targets: list[Target],
        settings: Mapping[str, str] | None = None,
        replicas: Replicas | None = None,
    ) -> None:
        self.children, self.running, self.webhook_ids = children, {}, {}
        self.replicas = replicas or Replicas()
        url = self.database_url = await self.database.create(children.directory)
        names = process_names(self.replicas)
        self.ports = {name: free_port() for name in names}
        deliveries = [name for name in names if name.startswith("delivery")]
        self.env = {
            "EDGESENSE_DATABASE_URL": url,
            "EDGESENSE_API_KEYS": ",".join(f"{k}={p}" for p, k in API_KEYS.items()),
            "EDGESENSE_SECRET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "EDGESENSE_ALLOW_INSECURE_URLS": "1",
            "EDGESENSE_ALLOW_PRIVATE_NETWORKS": "1",
            # the isolation phase's other project has 300 webhooks (default limit 100)
            "EDGESENSE_MAX_WEBHOOKS_PER_PROJECT": "0",
            "EDGESENSE_MQTT_URL": f"mqtt://127.0.0.1:{broker_port}",
            "EDGESENSE_MQTT_TOPIC_PREFIX": TOPIC_PREFIX,
            "EDGESENSE_REGISTRY_ADDR": f"127.0.0.1:{self.ports['registry']}",
            # the registry and the api call the first delivery process
            "EDGESENSE_DELIVERY_ADDR": f"127.0.0.1:{self.ports['delivery']}",
            "EDGESENSE_BRIDGE_ADDR": f"127.0.0.1:{self.ports['bridge']}",
            "EDGESENSE_HTTP_ADDR": f"127.0.0.1:{self.ports['api']}",
        }
        if self.replicas.bridges > 1:
            # Without a shared subscription every bridge would take every event.
            self.env["EDGESENSE_MQTT_SHARED_GROUP"] = SHARED_GROUP
        self.env.update(settings or {})
        self.own_env = {}
        for name in names:
            kind, number = kind_of(name)
            own: dict[str, str] = {}
            if kind != "api":
                own[f"EDGESENSE_{kind.upper()}_METRICS_ADDR"] = f"127.0.0.1:{free_port()}"
            if kind in ("delivery", "bridge"):
                own[f"EDGESENSE_{kind.upper()}_ADDR"] = f"127.0.0.1:{self.ports[name]}"
            if kind == "bridge":
                publishes_to = deliveries[(number - 1) % len(deliveries)]
                own["EDGESENSE_DELIVERY_ADDR"] = f"127.0.0.1:{self.ports[publishes_to]}"
                if self.replicas.bridges > 1:
                    own["EDGESENSE_MQTT_CLIENT_ID"] = f"edgesense-bench-bridge-{number}"
            self.own_env[name] = own
        for name in names:
            await self._start_service(name)
        async with aiohttp.ClientSession() as http:
            for start in range(0, len(targets), REGISTER_AT_ONCE):
                chunk = targets[start : start + REGISTER_AT_ONCE]
                ids = await asyncio.gather(*(self.register(http, t) for t in chunk))
                for target, webhook_id in zip(chunk, ids, strict=True):
                    self.webhook_ids.setdefault(target.name, webhook_id)

    async def _start_service(self, name: str) -> None:
        """Start one process (each once the one before answers: delivery
        processes migrate the database in turn)."""
        assert self.children is not None
        kind, _ = kind_of(name)
        env = self.env | self.own_env[name]
        child = await self.children.start(name, python_module("edgesense.cli", kind), env)
        self.running[name] = child
        if kind == "api":
            await wait_http_healthy(child, self.ports[name])
        else:
            await wait_serving(child, self.ports[name])

    async def register(self, http: aiohttp.ClientSession, target: Target) -> str:
        body: dict[str, object] = {
            "url": target.url,
            "events": ["device.data"],
            "secret": target.secret,
        }
        if target.ordered:
            body["ordered"] = True
        reply = await self.call(http, "POST", "/api/webhooks/register", target.project, body)
        return str(reply["webhookId"])

    async def create_rules(self, rules: Sequence[Mapping[str, Any]]) -> list[str]:
        """POST /api/rules for each, REGISTER_AT_ONCE at a time; their ruleIds."""
        ids: list[str] = []
        async with aiohttp.ClientSession() as http:
            for start in range(0, len(rules), REGISTER_AT_ONCE):
                chunk = rules[start : start + REGISTER_AT_ONCE]
                replies = await asyncio.gather(
                    *(self.call(http, "POST", "/api/rules", PROJECT, rule) for rule in chunk)
                )
                ids += [str(reply["ruleId"]) for reply in replies]
        return ids

    async def active_alerts(self, rule_id: str) -> int:
        """GET /api/alerts?ruleId=…&state=active: how many it lists."""
        query = {"ruleId": rule_id, "state": "active"}
        async with aiohttp.ClientSession() as http:
            reply = await self.call(http, "GET", "/api/alerts", PROJECT, query=query)
        return len(reply.get("alerts") or [])

    async def call(
        self,
        http: aiohttp.ClientSession,
        method: str,
        path: str,
        project: str,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One REST call as `project`; an error answer raises, naming the route
        and, when the API has no such route, saying so."""
        url = f"http://{self.env['EDGESENSE_HTTP_ADDR']}{path}"
        headers = {"Authorization": f"Bearer {API_KEYS[project]}"}
        async with http.request(method, url, json=body, params=query, headers=headers) as answer:
            try:
                reply = await answer.json(content_type=None)
            except ValueError:
                reply = await answer.text()
            if answer.status == 200 and isinstance(reply, dict):
                return reply
        message = reply.get("message", reply) if isinstance(reply, dict) else reply
        problem = f"{method} {path} answered {answer.status}: {message}"
        if answer.status in NO_ROUTE_STATUSES:
            problem += " (not served by this EdgeSense)"
        raise RuntimeError(problem)

    def processes(self) -> dict[str, int]:
        """Our processes, and each delivery process's senders: those of
        `delivery` as `senders`, `senders#1.2`, ..., those of `delivery#2` as
        `senders#2.1`, ... (`bench.scaling` adds them to their delivery process)."""
        found = {name: c.pid for name, c in self.running.items() if c.running}
        for name, pid in list(found.items()):
            kind, number = kind_of(name)
            if kind != "delivery":
                continue
            for n, sender in enumerate(child_pids(pid), 1):
                found["senders" if (number, n) == (1, 1) else f"senders#{number}.{n}"] = sender
        return found

    async def database_bytes(self) -> int | None:
        return await self.database.size(self.database_url)

    def _deliveries(self) -> list[str]:
        return [name for name in self.own_env if kind_of(name)[0] == "delivery"]

    async def pause(self) -> None:
        for name in self._deliveries():
            await self.running[name].stop()

    async def resume(self) -> None:
        for name in self._deliveries():
            await self._start_service(name)

    async def watch(self) -> Watch | None:
        """On PostgreSQL: a ClusterWatch over the delivery processes and
        bridges; its `finish` stops every process (bridges first)."""
        if self.database.kind != "postgresql":
            return None
        metrics = {
            name: own[f"EDGESENSE_{kind_of(name)[0].upper()}_METRICS_ADDR"]
            for name, own in self.own_env.items()
            if kind_of(name)[0] in COUNTERS
        }
        watch = ClusterWatch(
            self.database.server_url,
            self.database_url.rsplit("/", 1)[1],
            metrics,
            self.stop_processes,
        )
        await watch.start()
        return watch

    async def stop_processes(self) -> None:
        """Bridges first (they hand delivery what they hold), the registry last."""
        order = ("bridge", "api", "delivery", "registry")
        for kind in order:
            running = [c for name, c in self.running.items() if kind_of(name)[0] == kind]
            await asyncio.gather(*(c.stop() for c in running))

    async def close(self) -> None:
        await self.database.drop_all()

    def describe(self) -> dict[str, object]:
        return {
            "database": self.database.kind,
            "settings": "defaults (delivery 256 in flight, 64 per webhook, timeout 3 s; "
            "bridge 1,000 unacknowledged, batches of 200)",
            "delivery_processes": self.replicas.deliveries,
            "bridges": self.replicas.bridges,
        }


def process_names(replicas: Replicas) -> list[str]:
    """In start order: registry, delivery, delivery#2, ..., bridge, bridge#2, ..., api."""

    def numbered(kind: str, count: int) -> list[str]:
        return [kind if n == 1 else f"{kind}#{n}" for n in range(1, count + 1)]

    return [
        "registry",
        *numbered("delivery", replicas.deliveries),
        *numbered("bridge", replicas.bridges),
        "api",
    ]


async def wait_serving(child: Child, port: int, seconds: float = START_SECONDS) -> None:
    """Poll grpc.health.v1 until the server answers SERVING."""
    deadline = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if not child.running:
                raise RuntimeError(f"{child.name} exited while starting; its log:\n{child.log()}")
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} not SERVING after {seconds} s:\n{child.log()}")
            await asyncio.sleep(0.05)


async def wait_http_healthy(child: Child, port: int, seconds: float = START_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
        while True:
            if not child.running:
                raise RuntimeError(f"{child.name} exited while starting; its log:\n{child.log()}")
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as answer:
                    if answer.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} not healthy after {seconds} s:\n{child.log()}")
            await asyncio.sleep(0.05)
