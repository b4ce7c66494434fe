"""The whole cluster as real processes, started the way users start it:
`edgesense up`, with a private Mosquitto, once on SQLite and once on
PostgreSQL. One cluster per database for the module; tests use their own
webhooks, devices and receivers."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import trustme

from tests.conftest import ENGINES, engine_url
from tests.support.broker import MOSQUITTO, Mosquitto
from tests.support.ports import free_port
from tests.support.waiting import eventually

UP_SECONDS = 90.0
PROJECT = "acme"


@dataclass
class UpCluster:
    """`edgesense up` as a subprocess, and how to talk to it."""

    env: dict[str, str]
    workdir: Path
    api_key: str
    process: asyncio.subprocess.Process | None = None
    output: list[str] = field(default_factory=list)
    argv: tuple[str, ...] = ("up",)
    _pump: asyncio.Task[None] | None = None

    @property
    def api(self) -> str:
        return f"http://{self.env['EDGESENSE_HTTP_ADDR']}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edgesense.cli",
            *self.argv,
            env=self.env,
            cwd=self.workdir,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        ready = asyncio.get_running_loop().create_future()
        self._pump = asyncio.create_task(self._read(ready))
        try:
            await asyncio.wait_for(asyncio.shield(ready), UP_SECONDS)
        except TimeoutError:
            raise AssertionError("edgesense up did not come up:\n" + self.log()) from None

    async def _read(self, ready: asyncio.Future[None]) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.output.append(line)
            if "EdgeSense is up" in line and not ready.done():
                ready.set_result(None)
        if not ready.done():
            ready.set_exception(AssertionError("edgesense up exited:\n" + self.log()))

    async def stop(self) -> int:
        """Ctrl-C, as a user would; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(self.process.wait(), 60)
        if self._pump is not None:
            await self._pump
        return code

    def log(self) -> str:
        return "\n".join(self.output[-200:])

    async def register(self, url: str, events: list[str], secret: str) -> str:
        async with httpx.AsyncClient(base_url=self.api, headers=self.auth, timeout=10) as http:
            answer = await http.post(
                "/api/webhooks/register", json={"url": url, "events": events, "secret": secret}
            )
            assert answer.status_code == 200, answer.text
            webhook_id = str(answer.json()["webhookId"])

            # Delivery learns of webhooks from the registry's change stream; its
            # deliveries route answers 404 until it has.
            async def routed() -> bool:
                answer = await http.get(f"/api/webhooks/{webhook_id}/deliveries")
                return answer.status_code == 200

            await eventually(routed, 30, f"delivery to know webhook {webhook_id}")
        return webhook_id

    async def get(self, path: str, **params: str | int) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.api, headers=self.auth, timeout=10) as http:
            answer = await http.get(path, params=params)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.skip(
            f"the end-to-end tests need Mosquitto at {MOSQUITTO} (apt-get install mosquitto)"
        )
    mosquitto = Mosquitto(tmp_path_factory.mktemp("e2e-broker"))
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


@pytest_asyncio.fixture(
    scope="module",
    loop_scope="module",
    params=ENGINES,
)
async def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    async with engine_url(request.param, tmp_path_factory.mktemp("e2e-db")) as url:
        yield url


def up_env(
    name: str, database: str, broker: Mosquitto, api_key: str, **settings: str
) -> dict[str, str]:
    """The environment of a test's `edgesense up`: its database, the broker under
    a topic prefix and client id of its own, `api_key` for PROJECT, a fresh secret
    key, fast retries, every service on a free loopback port, never dev mode;
    `settings` (EDGESENSE_... names) added or overriding."""
    env = {
        **os.environ,
        "EDGESENSE_DATABASE_URL": database,
        "EDGESENSE_MQTT_URL": broker.url,
        "EDGESENSE_MQTT_TOPIC_PREFIX": name + secrets.token_hex(3),
        "EDGESENSE_MQTT_CLIENT_ID": f"{name}-bridge-" + secrets.token_hex(3),
        "EDGESENSE_API_KEYS": f"{api_key}={PROJECT}",
        "EDGESENSE_SECRET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "EDGESENSE_RETRY_BASE_SECONDS": "0.05",
        "EDGESENSE_DELIVERY_TIMEOUT_SECONDS": "2",
        "EDGESENSE_DELIVERY_LEASE_SECONDS": "5",
        "EDGESENSE_HTTP_ADDR": f"127.0.0.1:{free_port()}",
    }
    for service in ("REGISTRY", "DELIVERY", "BRIDGE"):
        env[f"EDGESENSE_{service}_ADDR"] = f"127.0.0.1:{free_port()}"
        env[f"EDGESENSE_{service}_METRICS_ADDR"] = f"127.0.0.1:{free_port()}"
    env.pop("EDGESENSE_DEV", None)
    return {**env, **settings}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(
    database: str, broker: Mosquitto, ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[UpCluster]:
    workdir = tmp_path_factory.mktemp("e2e-up")
    bundle = workdir / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    api_key = "e2e-" + secrets.token_hex(8)
    env = up_env(
        "e2e",
        database,
        broker,
        api_key,
        EDGESENSE_CA_BUNDLE=str(bundle),
        EDGESENSE_ALLOW_PRIVATE_NETWORKS="1",  # the receivers are on loopback; still https
        EDGESENSE_RETRY_MAX_SECONDS="2",
    )
    up = UpCluster(env, workdir, api_key)
    await up.start()
    try:
        yield up
    finally:
        if up.process is not None and up.process.returncode is None:
            await up.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the cluster's merged log to a failing test's report."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    up = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and isinstance(up, UpCluster):
        report.sections.append(("edgesense up log", up.log()))
