"""The delivery process's rule for a long-running task that ends before it is
stopped (delivery/server.py): logged, the process stops, and run_delivery
exits non-zero, for a supervisor to restart it. The real process wiring runs
in this test's loop: a SQLite outbox, the gRPC and metrics servers on free
ports, a registry address nothing answers on."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import secrets
from pathlib import Path

import pytest

from edgesense.common.config import Settings
from edgesense.delivery.server import run_delivery
from tests.support.waiting import eventually


def settings_for(tmp_path: Path) -> Settings:
    settings = Settings.from_env(
        {
            "EDGESENSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'd.db'}",
            "EDGESENSE_API_KEYS": "key-a=project-a",
            "EDGESENSE_SECRET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        },
        dev=False,
    )
    return dataclasses.replace(
        settings,
        delivery_addr="127.0.0.1:0",
        registry_addr="127.0.0.1:1",
        metrics_addrs={"delivery": "127.0.0.1:0"},
        delivery_senders=0,
    )


def task_named(name: str) -> asyncio.Task[object] | None:
    return next((t for t in asyncio.all_tasks() if t.get_name() == name), None)


async def test_a_task_that_ends_stops_the_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stop = asyncio.Event()

    async def end_maintenance() -> None:
        await eventually(lambda: task_named("maintenance") is not None, 10, "the process started")
        maintenance = task_named("maintenance")
        assert maintenance is not None
        maintenance.cancel()  # as a bug that ends it would

    ending = asyncio.create_task(end_maintenance())
    with (
        caplog.at_level(logging.ERROR, "edgesense.delivery.server"),
        pytest.raises(SystemExit) as exited,
    ):
        async with asyncio.timeout(30):
            await run_delivery(settings_for(tmp_path), stop)
    await ending
    assert stop.is_set()  # stopped as on SIGTERM
    assert exited.value.code not in (0, None)
    assert "maintenance" in str(exited.value.code)
    assert "delivery's maintenance task was cancelled; stopping" in caplog.text


async def test_a_stop_asked_for_exits_cleanly(tmp_path: Path) -> None:
    """stop() cancels the other tasks itself: that is no failure."""
    stop = asyncio.Event()

    async def stop_once_started() -> None:
        await eventually(lambda: task_named("maintenance") is not None, 10, "the process started")
        stop.set()

    stopping = asyncio.create_task(stop_once_started())
    async with asyncio.timeout(30):
        await run_delivery(settings_for(tmp_path), stop)  # no SystemExit
    await stopping
