"""`edgesense up`: the whole local cluster in the foreground.

Starts registry, delivery, gateway and bridge as child processes in that
order, each only once the one before is healthy; prefixes every log line
with the service's name; prints where everything listens. Ctrl-C (or
SIGTERM) stops them all, newest first, each with SIGTERM and a grace period;
if one dies, `up` says which and why and stops the rest. If no MQTT broker
answers at EDGESENSE_MQTT_URL, an embedded one (amqtt) is started there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import httpx

from edgesense.config import Settings
from edgesense.embedded_broker import broker_address, broker_answers
from edgesense.healthcheck import grpc_serving

HEALTH_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 20.0
NAME_WIDTH = 8


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def say(line: str) -> None:
    """A line of `up`'s own, prefixed like the services' lines."""
    out(f"{'up':<{NAME_WIDTH}} | {line}")


@dataclass
class Child:
    name: str
    argv: list[str]
    healthy: Callable[[], Awaitable[bool]]
    process: asyncio.subprocess.Process | None = None
    pump: asyncio.Task[None] | None = None
    last_lines: list[str] = field(default_factory=list)

    async def start(self, env: Mapping[str, str]) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches `up` only; it stops children in order
        )
        self.pump = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.last_lines = [*self.last_lines[-19:], line]
            out(f"{self.name:<{NAME_WIDTH}} | {line}")

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), STOP_GRACE_SECONDS)
        except TimeoutError:
            say(f"{self.name} did not stop within {STOP_GRACE_SECONDS:g} s; killing it")
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        if self.pump is not None:
            await self.pump


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}" + (" (configuration error)" if code == 2 else "")


async def http_healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


def child_env(settings: Settings, dev: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["EDGESENSE_LOG_FORMAT"] = "short"
    env["PYTHONUNBUFFERED"] = "1"
    if dev:
        env["EDGESENSE_DEV"] = "1"
        if not env.get("EDGESENSE_API_KEYS"):
            env["EDGESENSE_API_KEYS"] = ",".join(f"{k}={p}" for k, p in settings.api_keys.items())
        if not env.get("EDGESENSE_SECRET_KEY") and settings.secret_key:
            env["EDGESENSE_SECRET_KEY"] = settings.secret_key.decode()
    return env


def children(settings: Settings, services: list[str]) -> list[Child]:
    python = [sys.executable, "-m", "edgesense.cli"]
    checks: dict[str, Callable[[], Awaitable[bool]]] = {
        "registry": lambda: grpc_serving(settings.registry_addr, settings.grpc_tls),
        "delivery": lambda: grpc_serving(settings.delivery_addr, settings.grpc_tls),
        "gateway": lambda: http_healthy(f"http://{settings.http_addr}/healthz"),
        "bridge": lambda: http_healthy(f"http://{settings.metrics_addr('bridge')}/healthz"),
    }
    return [Child(name, [*python, name], checks[name]) for name in services if name in checks]


async def wait_healthy(child: Child) -> None:
    async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
        while not await child.healthy():
            if child.process is not None and child.process.returncode is not None:
                raise ChildDied(child)
            await asyncio.sleep(0.2)


class ChildDied(Exception):
    def __init__(self, child: Child) -> None:
        assert child.process is not None
        assert child.process.returncode is not None
        super().__init__(f"{child.name} {describe_exit(child.process.returncode)}")
        self.child = child


async def run_up(settings: Settings, services: list[str], dev: bool) -> int:
    env = child_env(settings, dev)
    host, port = broker_address(settings.mqtt_url)
    started: list[Child] = []
    if "bridge" in services and not broker_answers(host, port):
        broker = Child(
            "broker",
            [sys.executable, "-m", "edgesense.embedded_broker", host, str(port)],
            lambda: asyncio.to_thread(broker_answers, host, port),
        )
        say(f"no MQTT broker answers at {host}:{port}; starting an embedded one (amqtt) there")
        started.append(broker)
    started += children(settings, services)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        for child in started:
            await child.start(env)
            await wait_healthy(child)
            say(f"{child.name} is healthy")
        print_summary(settings, dev, started)
        waits = {
            asyncio.ensure_future(c.process.wait()): c for c in started if c.process is not None
        }
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait([stopper, *waits], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task in waits:
                raise ChildDied(waits[task])
        stopper.cancel()
        for task in waits:
            task.cancel()
        say("stopping")
    except ChildDied as exc:
        code = 1
        say(f"{exc}; its last lines:")
        for line in exc.child.last_lines[-10:]:
            say(f"  {line}")
        say("stopping the others")
    except TimeoutError:
        code = 1
        say(f"a service did not become healthy within {HEALTH_TIMEOUT_SECONDS:g} s; stopping")
    finally:
        for child in reversed(started):
            await child.stop()
    say("all stopped")
    return code


def print_summary(settings: Settings, dev: bool, started: list[Child]) -> None:
    names = {c.name for c in started}
    rows = [
        (
            "registry",
            f"gRPC {settings.registry_addr}",
            f"http://{settings.metrics_addr('registry')}/metrics",
        ),
        (
            "delivery",
            f"gRPC {settings.delivery_addr}",
            f"http://{settings.metrics_addr('delivery')}/metrics",
        ),
        (
            "gateway",
            f"REST http://{settings.http_addr}/api",
            f"http://{settings.http_addr}/metrics",
        ),
        (
            "bridge",
            f"MQTT {settings.mqtt_url}" + (" (embedded)" if "broker" in names else ""),
            f"http://{settings.metrics_addr('bridge')}/metrics",
        ),
    ]
    out("")
    out(f"EdgeSense is up{' (development mode)' if dev else ''}:")
    for name, where, metrics in rows:
        if name in names:
            out(f"  {name:<9} {where:<40} metrics {metrics}")
    out(f"  OpenAPI   http://{settings.http_addr}/openapi.json")
    if dev and not os.environ.get("EDGESENSE_API_KEYS"):
        key = next(iter(settings.api_keys))
        out(f"  API key   {key}   (project 'dev'; also in var/dev-api-key)")
    out("Ctrl-C stops everything.")
    out("")
