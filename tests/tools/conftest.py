"""Fixtures for the command-line tools: the in-process cluster (on SQLite only,
to save time: the API's storage is tested on both databases elsewhere), the
`edgesense` command run as a subprocess, and a private Mosquitto."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster
from tests.integration.conftest import api, cluster, cluster_env  # noqa: F401
from tests.support.ports import free_port, wait_for_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
CLI_TIMEOUT_SECONDS = 30.0


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Overrides the SQLite-and-PostgreSQL parametrised fixture: SQLite only."""
    return f"sqlite+aiosqlite:///{tmp_path / 'edgesense.db'}"


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any EDGESENSE_ setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGESENSE_")}
    env.update(extra or {})
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgesense.cli", *args]


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


async def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: str | None = None,
) -> CliResult:
    """`edgesense ARGS` in a subprocess, without blocking the loop the cluster runs on."""
    process = await asyncio.create_subprocess_exec(
        *cli_command(*args),
        env=clean_env(env),
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(CLI_TIMEOUT_SECONDS):
        out, err = await process.communicate(stdin.encode() if stdin is not None else None)
    assert process.returncode is not None
    return CliResult(process.returncode, out.decode(), err.decode())


def api_env(running: Cluster, project: str = "project-a") -> dict[str, str]:
    """What a user exports to point the tools at the cluster, as `project`."""
    key = next(k for k, p in running.keys.items() if p == project)
    return {"EDGESENSE_API_URL": running.api.url, "EDGESENSE_API_KEY": key}


@dataclass(frozen=True)
class Broker:
    port: int

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Broker]:
    """A private Mosquitto on a free port, for the whole session."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("the simulate tests need mosquitto (apt-get install mosquitto)")
    port = free_port()
    process = subprocess.Popen(
        [MOSQUITTO, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, 10, process)
        yield Broker(port)
    finally:
        process.terminate()
        process.wait(10)
