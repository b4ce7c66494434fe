"""`edgesense up`: the whole local cluster in the foreground.

Starts registry, delivery, api and bridge as child processes in that
order, each only once the one before is healthy (the bridge: once it is
connected to the broker); prefixes every log line with the service's name;
prints where everything listens. Ctrl-C (or SIGTERM, SIGHUP) stops them all,
newest first, each with SIGTERM and a grace period, whatever happened to
`up`'s own output; if one dies, `up` says which and why and stops the rest.
If no MQTT broker answers at EDGESENSE_MQTT_URL, an embedded one (amqtt) is
started there, and the bridge speaks MQTT 3.1.1 to it (amqtt has no MQTT 5).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable

import httpx

from edgesense.common.config import Settings
from edgesense.common.healthcheck import grpc_serving
from edgesense.common.listen import local_address
from edgesense.common.mqtt_probe import broker_address, broker_answers
from edgesense.common.runtime import stop_on_signals
from edgesense.up_child import Child, ChildDied, out, say

HEALTH_TIMEOUT_SECONDS = 60.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the terminal closed


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM, SIGHUP) while the cluster was starting."""


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
        "api": lambda: http_healthy(f"http://{local_address(settings.http_addr)}/healthz"),
        "bridge": lambda: grpc_serving(
            settings.bridge_addr, settings.grpc_tls
        ),  # SERVING once subscribed
    }
    return [Child(name, [*python, name], checks[name]) for name in services if name in checks]


async def wait_healthy(child: Child, stop: asyncio.Event) -> None:
    async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
        while not await child.healthy():
            if child.process is not None and child.process.returncode is not None:
                raise ChildDied(child)
            if stop.is_set():
                raise Interrupted
            await asyncio.sleep(0.2)


def use_embedded_broker(env: dict[str, str]) -> None:
    """The bridge speaks MQTT 3.1.1 to amqtt, which has no MQTT 5; say what is lost."""
    asked = env.get("EDGESENSE_MQTT_PROTOCOL", "").strip()
    env["EDGESENSE_MQTT_PROTOCOL"] = "3.1.1"
    say(
        "the embedded broker speaks MQTT 3.1.1 only: the bridge uses 3.1.1"
        + (f" (instead of EDGESENSE_MQTT_PROTOCOL={asked})" if asked not in ("", "3.1.1") else "")
        + "; the MQTT 5 event-id deduplication and content types need a broker such as Mosquitto"
    )


async def stop_all(started: list[Child]) -> None:
    """Stop every child, newest first; one that fails to stop does not spare the others."""
    for child in reversed(started):
        try:
            await child.stop()
        except Exception as exc:  # keep going: the others must stop too
            say(f"stopping {child.name} failed: {exc!r}")


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
        use_embedded_broker(env)
        started.append(broker)
    started += children(settings, services)
    stop = asyncio.Event()
    # Kept through the stop as well: a second Ctrl-C must not cut it short.
    with stop_on_signals(stop, STOP_SIGNALS):
        return await run_children(started, env, stop, settings, dev)


async def run_children(
    started: list[Child], env: dict[str, str], stop: asyncio.Event, settings: Settings, dev: bool
) -> int:
    """Start `started` in order, each once healthy; wait for `stop` or a death; stop all."""
    code, starting = 0, ""
    try:
        for child in started:
            starting = child.name
            await child.start(env)
            await wait_healthy(child, stop)
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
    except Interrupted:
        say("stopping")
    except TimeoutError:
        code = 1
        waited = f"{starting} did not become healthy within {HEALTH_TIMEOUT_SECONDS:g} s"
        why = " (it is once connected and subscribed to the broker)" if starting == "bridge" else ""
        say(f"{waited}{why}; stopping")
    finally:
        await stop_all(started)
    say("all stopped")
    return code


def print_summary(settings: Settings, dev: bool, started: list[Child]) -> None:
    names = {c.name for c in started}
    http = local_address(settings.http_addr)  # what a browser on this machine opens

    def metrics(service: str) -> str:
        return f"http://{local_address(settings.metrics_addr(service))}/metrics"

    rows = [
        ("registry", f"gRPC {settings.registry_addr}", metrics("registry")),
        ("delivery", f"gRPC {settings.delivery_addr}", metrics("delivery")),
        (
            "api",
            f"REST http://{http}/api",
            f"http://{http}/metrics",
        ),
        (
            "bridge",
            f"MQTT {settings.mqtt_url}" + (" (embedded)" if "broker" in names else ""),
            metrics("bridge"),
        ),
    ]
    out("")
    out(f"EdgeSense is up{' (development mode)' if dev else ''}:")
    for name, where, metrics_url in rows:
        if name in names:
            out(f"  {name:<9} {where:<40} metrics {metrics_url}")
    out(f"  OpenAPI   http://{http}/openapi.json")
    if "api" in names:
        # The key is never put in the URL: the console asks for it (and keeps it in the tab).
        where = (
            "the API key below"
            if dev and not os.environ.get("EDGESENSE_API_KEYS")
            else "an API key"
        )
        out(f"  Console   http://{http}/console   (sign in with {where})")
    if dev and not os.environ.get("EDGESENSE_API_KEYS"):
        key = next(iter(settings.api_keys))
        out(f"  API key   {key}   (project 'dev'; also in var/dev-api-key)")
    out("Ctrl-C stops everything.")
    out("")
