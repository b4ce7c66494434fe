"""EdgeSense services as real operating-system processes, for tests that kill,
stop and restart them.

`Processes` starts `python -m edgesense.cli <service>` with a given
environment on free ports, waits until its gRPC health check answers SERVING,
sends each process's output to a log file, and kills whatever is still
running when the test ends. The helpers below talk to the processes the way
our own services and users do: the registry over gRPC with an API key,
delivery's Publish with the internal token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from bench.procstats import child_pids
from edgesense.common.auth import bearer_metadata
from edgesense.v1 import (
    delivery_pb2,
    delivery_pb2_grpc,
    events_pb2,
    registry_pb2,
    registry_pb2_grpc,
)
from tests.integration.cluster import reading
from tests.support.ports import free_port
from tests.support.receivers import Receiver
from tests.support.waiting import eventually

START_SECONDS = 30.0
STOP_SECONDS = 20.0
PROBE_SECONDS = 1.0


class ServiceExited(AssertionError):
    """A service process (`service`) ended while a test waited for it."""

    def __init__(self, message: str, service: ServiceProcess | None = None) -> None:
        super().__init__(message)
        self.service = service


@dataclass
class ServiceProcess:
    """One running service; `port` is its gRPC port, `metrics_port` its Prometheus one."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    port: int
    metrics_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[int]:
        """Pids of the processes it started that still run (delivery's senders)."""
        return child_pids(self.process.pid)

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or handed back."""
        self.process.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM: the graceful stop every EdgeSense process promises."""
        self.process.send_signal(signal.SIGTERM)

    async def wait_exit(self, seconds: float = STOP_SECONDS) -> int:
        try:
            async with asyncio.timeout(seconds):
                return await self.process.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.name} did not exit within {seconds} s; its log:\n{self.log()}"
            ) from None

    async def wait_serving(self, seconds: float = START_SECONDS) -> None:
        """Poll grpc.health.v1 until the server answers SERVING."""
        async with grpc.aio.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def serving() -> bool:
                if not self.running:
                    raise ServiceExited(
                        f"{self.name} exited with {self.process.returncode} while starting; "
                        f"its log:\n{self.log()}",
                        self,
                    )
                try:
                    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.aio.AioRpcError:
                    return False  # not listening yet
                return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

            try:
                await eventually(serving, seconds, f"{self.name} SERVING", interval=0.05)
            except ServiceExited:
                raise
            except AssertionError as timed_out:
                raise AssertionError(f"{timed_out}; its log:\n{self.log()}") from None

    async def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """One sample from the process's Prometheus endpoint (0 when absent)."""
        async with httpx.AsyncClient(timeout=5) as http:
            answer = await http.get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        answer.raise_for_status()
        wanted = dict(labels or {})
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in wanted.items()
                ):
                    return float(sample.value)
        return 0.0


@dataclass
class Processes:
    """Starts services as subprocesses and kills the ones left at `close()`."""

    directory: Path
    started: list[ServiceProcess] = field(default_factory=list)

    async def start(
        self, service: str, env: Mapping[str, str], port: int | None = None
    ) -> ServiceProcess:
        """Start `edgesense <service>` with `env` (plus its listen and metrics
        addresses) and wait until it is SERVING."""
        port = port or free_port()
        metrics_port = free_port()
        upper = service.upper()
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("EDGESENSE_")}
        child_env |= dict(env)
        child_env |= {
            f"EDGESENSE_{upper}_ADDR": f"127.0.0.1:{port}",
            f"EDGESENSE_{upper}_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
            "PYTHONUNBUFFERED": "1",
        }
        log_path = self.directory / f"{len(self.started) + 1:02d}-{service}.log"
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "edgesense.cli",
                service,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=child_env,
                cwd=self.directory,
            )
        running = ServiceProcess(service, process, log_path, port, metrics_port)
        self.started.append(running)
        await running.wait_serving()
        return running

    def logs(self) -> str:
        return "\n".join(
            f"===== {p.log_path.name} (exit {p.process.returncode}) =====\n{p.log()}"
            for p in self.started
        )

    async def close(self) -> None:
        for service in self.started:
            if service.running:
                service.kill()
        for service in self.started:
            async with asyncio.timeout(STOP_SECONDS):
                await service.process.wait()


@contextlib.asynccontextmanager
async def processes_of(
    directory: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[Processes]:
    """Service subprocesses of one test, killed at its end; their logs are
    printed if it failed."""
    running = Processes(directory)
    failed_before = request.session.testsfailed
    try:
        yield running
    finally:
        await running.close()
        if request.session.testsfailed > failed_before and running.started:
            with capsys.disabled():
                print(f"\n{request.node.nodeid}: service logs\n{running.logs()}")


async def register_webhook(
    registry: ServiceProcess,
    api_key: str,
    url: str,
    events: Sequence[str] = ("device.data",),
    secret: str = "your_shared_secret",
) -> str:
    async with grpc.aio.insecure_channel(registry.address) as channel:
        stub = registry_pb2_grpc.WebhookRegistryStub(channel)
        answer = await stub.RegisterWebhook(
            registry_pb2.RegisterWebhookRequest(url=url, events=list(events), secret=secret),
            metadata=bearer_metadata(api_key),
            timeout=10,
        )
    return str(answer.webhook_id)


async def publish(
    delivery: ServiceProcess,
    token: str,
    events: Sequence[events_pb2.Event],
    batch: int = 50,
    first_batch_id: int = 1,
) -> list[delivery_pb2.PublishResponse]:
    """Publish over one Publish stream, as the bridge does; returns the confirmations."""
    requests = [
        delivery_pb2.PublishRequest(batch_id=first_batch_id + n, events=events[i : i + batch])
        for n, i in enumerate(range(0, len(events), batch))
    ]
    async with grpc.aio.insecure_channel(delivery.address) as channel:
        stub = delivery_pb2_grpc.DeliveryStub(channel)
        call = stub.Publish(iter(requests), metadata=bearer_metadata(token), timeout=60)
        return [answer async for answer in call]


def arrived(receiver: Receiver, webhook_id: str, wanted: Collection[str]) -> Callable[[], bool]:
    """A condition for `eventually`: every event id in `wanted` reached `receiver`
    for `webhook_id` (bodies are parsed once, as they arrive)."""
    missing = set(wanted)
    read = 0

    def check() -> bool:
        nonlocal read
        for got in receiver.received[read:]:
            body = json.loads(got.body)
            if body["webhookId"] == webhook_id:
                missing.discard(body["eventId"])
        read = len(receiver.received)
        return not missing

    return check


def delivery_counts(receiver: Receiver) -> Counter[str]:
    """How many requests the receiver got for each X-EdgeSense-Delivery."""
    return Counter(r.delivery_id for r in receiver.received)


async def wait_routed(
    delivery: ServiceProcess,
    token: str,
    receiver: Receiver,
    webhook_id: str,
    project: str = "project-a",
    seconds: float = 30.0,
) -> None:
    """Publish probe events until one reaches `receiver` for `webhook_id`.

    An event is matched against delivery's webhook index when it is accepted,
    so a probe arriving proves that delivery knows the webhook (and sends).
    """
    loop = asyncio.get_running_loop()
    probes: set[str] = set()
    last_probe = -PROBE_SECONDS
    read = 0

    async def routed() -> bool:
        nonlocal last_probe, read
        for got in receiver.received[read:]:
            body = json.loads(got.body)
            if body["webhookId"] == webhook_id and body["eventId"] in probes:
                return True
        read = len(receiver.received)
        if loop.time() - last_probe >= PROBE_SECONDS:  # one probe a second
            last_probe = loop.time()
            probe = reading(project=project, device="probe")
            probes.add(probe.event_id)
            await publish(delivery, token, [probe])
        return False

    try:
        await eventually(routed, seconds, "a probe event")
    except AssertionError:
        raise AssertionError(
            f"delivery {delivery.address} did not route to {webhook_id} "
            f"within {seconds} s; its log:\n{delivery.log()}"
        ) from None
