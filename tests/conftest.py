"""Shared fixtures: real databases (SQLite file, the machine's PostgreSQL) and
settings for in-process services on free ports.

PostgreSQL is found through EDGESENSE_TEST_POSTGRES_URL (an asyncpg URL of a
database the tests may create databases from). Without it, PostgreSQL tests
skip and say so; with EDGESENSE_TEST_STRICT=1 (set by .ci/run) a skip is a
failure, so CI cannot go green without the real services.
"""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from edgesense.common.config import Settings
from tests.support.processes import Processes, processes_of

POSTGRES_URL_ENV = "EDGESENSE_TEST_POSTGRES_URL"
# Set to 1, the console's browser tests write README's screenshots (tests/console).
SCREENSHOTS_ENV = "EDGESENSE_CONSOLE_SCREENSHOTS"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and os.environ.get("EDGESENSE_TEST_STRICT") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under EDGESENSE_TEST_STRICT=1: {reason}"


def postgres_admin_url() -> str:
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        pytest.skip(
            f"PostgreSQL tests need {POSTGRES_URL_ENV} (e.g. postgresql+asyncpg://postgres@127.0.0.1/test)"
        )
    return url


# A language's collation (ICU, PostgreSQL 15), in which "evt_B" sorts after
# "evt_a", as a production database's may: for tests of statements that
# must order text by code point whatever the database's default.
LANGUAGE_COLLATION = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"


async def create_postgres_database(options: str = "") -> tuple[str, str]:
    """A new, empty database (CREATE DATABASE `options`, e.g.
    LANGUAGE_COLLATION); returns (its URL, the admin URL to drop it with)."""
    admin = postgres_admin_url()
    name = f"edgesense_t_{uuid.uuid4().hex[:12]}"
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}" {options}'))
    finally:
        await engine.dispose()
    return make_url(admin).set(database=name).render_as_string(hide_password=False), admin


async def drop_postgres_database(url: str, admin: str) -> None:
    name = make_url(url).database
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


@asynccontextmanager
async def engine_url(engine: str, tmp_path: Path, options: str = "") -> AsyncIterator[str]:
    """A new database's URL: an SQLite file, or the machine's PostgreSQL
    (CREATE DATABASE `options`), dropped at the end."""
    if engine == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'edgesense.db'}"
        return
    url, admin = await create_postgres_database(options)
    try:
        yield url
    finally:
        await drop_postgres_database(url, admin)


# The engines a test runs on, as fixture params: SQLite always, PostgreSQL
# where the machine has one (marked, so a missing server is reported).
ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=ENGINES)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The same tests on SQLite (a file) and on the machine's PostgreSQL."""
    async with engine_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def service_processes(
    tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[Processes]:
    """Service subprocesses of one test, killed at its end; their logs are
    printed if it failed. A test that shares a database with them takes
    `processes` (tests/integration/conftest.py), which kills them first."""
    async with processes_of(tmp_path, request, capsys) as running:
        yield running


@pytest.fixture
def secret_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def api_keys() -> dict[str, str]:
    """Two projects, each with its own key."""
    return {
        f"key-a-{secrets.token_hex(8)}": "project-a",
        f"key-b-{secrets.token_hex(8)}": "project-b",
    }


def key_of(api_keys: dict[str, str], project: str) -> str:
    return next(k for k, p in api_keys.items() if p == project)


@pytest.fixture
def settings(database_url: str, api_keys: dict[str, str], secret_key: str) -> Settings:
    env = {
        "EDGESENSE_DATABASE_URL": database_url,
        "EDGESENSE_API_KEYS": ",".join(f"{k}={p}" for k, p in api_keys.items()),
        "EDGESENSE_SECRET_KEY": secret_key,
    }
    return Settings.from_env(env, dev=False)
