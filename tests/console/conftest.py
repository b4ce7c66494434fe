"""The console in a real browser against a real cluster.

One cluster per module (`edgesense up` as a process, on SQLite, with a private
Mosquitto and plain-HTTP loopback receivers), one Chromium per module (Debian's
/usr/bin/chromium driven by Playwright; Playwright's own browser download is
never used), a fresh browser context (so a fresh sessionStorage) per test.
Every page records its console errors and failed requests; `page` fails the
test on any the test did not expect (a CSP violation is a console error).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from tests.e2e.conftest import UpCluster, up_env

# The hook, re-exported: a failing test's report gets the cluster's log, as in tests/e2e.
from tests.e2e.conftest import pytest_runtest_makereport as pytest_runtest_makereport
from tests.support.broker import MOSQUITTO, Mosquitto

CHROMIUM = "/usr/bin/chromium"
PROJECT = "acme"
# What every wait may take: the actions' timeout (a browser context's default)
# and the expectations' (Playwright's own default is 5 s, too short for a page
# that waits on the API on two busy CI cores).
WAIT_MS = 20_000
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.skip(f"the console tests need Mosquitto at {MOSQUITTO} (apt-get install mosquitto)")
    mosquitto = Mosquitto(tmp_path_factory.mktemp("console-broker"))
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(
    broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[UpCluster]:
    workdir = tmp_path_factory.mktemp("console-up")
    api_key = "console-" + secrets.token_hex(8)
    env = up_env(
        "console",
        f"sqlite+aiosqlite:///{workdir / 'edgesense.db'}",
        broker,
        api_key,
        EDGESENSE_ALLOW_INSECURE_URLS="1",  # plain-HTTP receivers on loopback
        EDGESENSE_ALLOW_PRIVATE_NETWORKS="1",
        EDGESENSE_RETRY_MAX_SECONDS="0.2",
        EDGESENSE_MAX_RETRIES="1",
    )
    up = UpCluster(env, workdir, api_key)
    await up.start()
    try:
        yield up
    finally:
        if up.process is not None and up.process.returncode is None:
            await up.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"the console tests need Chromium at {CHROMIUM} (apt-get install chromium)")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield chromium
        finally:
            await chromium.close()


@dataclass
class Problems:
    """What went wrong in a page: console errors, uncaught exceptions, failed requests."""

    errors: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    def expect(self, fragment: str) -> None:
        """A console error containing `fragment` is expected (e.g. a 401 the test asked for)."""
        self.expected.append(fragment)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(x in e for x in self.expected)]


@dataclass
class ConsolePage:
    page: Page
    problems: Problems
    cluster: UpCluster

    @property
    def url(self) -> str:
        return f"{self.cluster.api}/console"

    async def sign_in(self, key: str | None = None, route: str = "#/overview") -> None:
        await self.page.goto(f"{self.url}{route}")
        await self.page.get_by_label("API key").fill(key or self.cluster.api_key)
        await self.page.get_by_role("button", name="Sign in").click()
        await expect(self.page.get_by_role("button", name="Sign out")).to_be_visible()


@pytest_asyncio.fixture(loop_scope="module")
async def console(browser: Browser, cluster: UpCluster) -> AsyncIterator[ConsolePage]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    problems = Problems()

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            # With the URL it is about: Chromium's "Failed to load resource"
            # names no request in its text.
            where = message.location.get("url", "")
            problems.errors.append(f"console {message.type}: {message.text} at {where}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.errors.append(f"page error: {error}"))
    yield ConsolePage(page, problems, cluster)
    await context.close()
    assert not problems.unexpected(), "the page logged errors:\n" + "\n".join(problems.errors)
