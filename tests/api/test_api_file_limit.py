"""The REST process under a low open-file limit and more slow clients than files.

The REST API runs as its own process (as `edgesense api` does: through
`runtime.run`) with RLIMIT_NOFILE set to 256 before it starts, and 300
connections trickle header lines at it. Before the connection guard, the
process ran out of descriptors and every new client was reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import closed_port_address
from tests.support.waiting import eventually

FILE_LIMIT = 256
TRICKLERS = 300
HEADER_TIMEOUT = 1.5
SERVE = (
    "import logging, sys\n"
    "from edgesense.common import runtime\n"
    "from edgesense.common.config import Settings\n"
    "from edgesense.api.server import run_api\n"
    "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
    "runtime.run(run_api(Settings.from_env()))\n"
)


def _limit_files(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def api_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    env = {
        **os.environ,
        "EDGESENSE_HTTP_ADDR": "127.0.0.1:0",
        "EDGESENSE_HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "EDGESENSE_REGISTRY_ADDR": closed_port_address(),
        "EDGESENSE_DELIVERY_ADDR": closed_port_address(),
        "EDGESENSE_BRIDGE_ADDR": closed_port_address(),
    }
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: _limit_files(FILE_LIMIT, FILE_LIMIT),
        )
    try:
        yield process, log
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _listening(log: Path) -> str:
    """The URL the process logs once it listens."""

    def logged() -> re.Match[str] | None:
        return re.search(r"listening on (http\S+)", log.read_text())

    await eventually(lambda: logged() is not None, 30, "the process to listen", interval=0.05)
    found = logged()
    assert found is not None
    return found[1]


async def _trickle(port: int, opened: asyncio.Event, counter: list[int]) -> float | None:
    """Trickle header lines until the server closes; returns when, or None if it never did."""
    loop = asyncio.get_running_loop()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    counter[0] += 1
    if counter[0] == TRICKLERS:
        opened.set()
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        for number in range(400):
            writer.write(f"X-Slow-{number}: 1\r\n".encode())
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1), 0.1) == b"":
                    return loop.time()
    except ConnectionError:
        return loop.time()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return None


@contextlib.asynccontextmanager
async def _client(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=5.0) as client:
        yield client


async def test_rest_answers_beside_more_slow_clients_than_files(
    api_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    _, log = api_process
    url = await _listening(log)
    port = int(url.rsplit(":", 1)[1])
    loop = asyncio.get_running_loop()
    opened, counter = asyncio.Event(), [0]
    tricklers = [asyncio.create_task(_trickle(port, opened, counter)) for _ in range(TRICKLERS)]
    await asyncio.wait_for(opened.wait(), 10)
    async with _client(url) as client:
        answered = await client.get("/healthz")
        answered_at = loop.time()
        assert answered.status_code == 200, log.read_text()
        closed_at = await asyncio.gather(*tricklers)
        metrics = (await client.get("/metrics")).text
    # every slow client was closed by the server: evicted to make room, or at the timeout
    assert None not in closed_at
    assert answered_at < max(t for t in closed_at if t is not None)  # while they trickled
    cap = int(re.findall(r"at most (\d+) connections", log.read_text())[0])
    assert cap < FILE_LIMIT  # below the limit the process was given
    timed_out = re.search(r'connections_closed_total\{reason="header_timeout"\} (\S+)', metrics)
    evicted = re.search(r'connections_closed_total\{reason="evicted"\} (\S+)', metrics)
    assert timed_out is not None
    assert evicted is not None
    assert float(timed_out[1]) + float(evicted[1]) >= TRICKLERS
    assert float(timed_out[1]) >= cap - 10  # the ones kept were cut at the header timeout
    assert "Traceback" not in log.read_text()


def test_services_raise_the_soft_file_limit_to_the_hard_one() -> None:
    printed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from edgesense.common import runtime; print(runtime.raise_open_file_limit())",
        ],
        preexec_fn=lambda: _limit_files(64, 512),
        capture_output=True,
        check=True,
        text=True,
    )
    assert printed.stdout.strip() == "512"
