"""The console in Chromium against `edgesense up`: sign in, webhooks and their
deliveries appearing as events are published over MQTT, a failed delivery
opened, redelivered and its webhook enabled, a wrong key, sign-out, the CSP.

Every wait is one of Playwright's auto-waiting expectations on what the page
shows (which the console keeps current by polling every 5 s), never a sleep.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import expect

from tests.console.conftest import PROJECT, ConsolePage
from tests.e2e.conftest import UpCluster
from tests.support.broker import Gateway, Mosquitto
from tests.support.receivers import Receiver, Switch

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIVE_SECONDS = 30_000  # ms: a delivery and a 5 s poll, with room for a slow machine


@pytest_asyncio.fixture(loop_scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


async def publish(
    cluster: UpCluster, broker: Mosquitto, device: str, readings: list[dict[str, float]]
) -> None:
    prefix = cluster.env["EDGESENSE_MQTT_TOPIC_PREFIX"]
    gateway = Gateway(broker.port, "console-gw-" + secrets.token_hex(3))
    try:
        await gateway.publish(
            [
                (f"{prefix}/{PROJECT}/gw-1/{device}/data", json.dumps(r).encode(), None)
                for r in readings
            ]
        )
    finally:
        gateway.close()


async def test_the_page_is_served_with_a_strict_csp(console: ConsolePage) -> None:
    response = await console.page.goto(console.url)
    assert response is not None
    assert response.status == 200
    csp = await response.header_value("content-security-policy")
    assert csp is not None
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert await response.header_value("x-content-type-options") == "nosniff"
    assert await response.header_value("referrer-policy") == "no-referrer"
    # The modules ran (under that CSP): the sign-in form is there.
    await expect(console.page.get_by_label("API key")).to_be_visible()


async def test_a_wrong_key_shows_the_api_message(console: ConsolePage) -> None:
    console.problems.expect("status of 401")  # Chromium logs the refused request
    await console.page.goto(console.url)
    await console.page.get_by_label("API key").fill("not-a-key-" + secrets.token_hex(4))
    await console.page.get_by_role("button", name="Sign in").click()
    await expect(console.page.get_by_role("alert")).to_contain_text("invalid API key (HTTP 401)")
    await expect(console.page.get_by_role("button", name="Sign out")).to_be_hidden()
    stored = await console.page.evaluate("sessionStorage.length")
    assert stored == 0


async def test_sign_in_keeps_the_key_in_the_tab_only_and_sign_out_clears_it(
    console: ConsolePage,
) -> None:
    await console.sign_in(route="#/webhooks")
    page = console.page
    assert (
        await page.evaluate("sessionStorage.getItem('edgesense.apiKey')") == console.cluster.api_key
    )
    assert await page.evaluate("localStorage.length") == 0
    assert await page.context.cookies() == []
    assert console.cluster.api_key not in page.url
    await page.reload()  # the tab keeps it
    await expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("API key")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0


async def test_a_registered_webhook_and_its_deliveries_appear_live(
    console: ConsolePage, broker: Mosquitto, receiver: Receiver
) -> None:
    cluster = console.cluster
    description = "live-" + secrets.token_hex(3)
    webhook_id = await cluster.register(receiver.url, ["device.data"], "s3cret")
    async with httpx.AsyncClient(base_url=cluster.api, headers=cluster.auth) as http:
        answer = await http.patch(f"/api/webhooks/{webhook_id}", json={"description": description})
        assert answer.status_code == 200, answer.text
    await console.sign_in(route="#/webhooks")
    page = console.page
    row = page.get_by_role("row").filter(has_text=description)
    await expect(row).to_contain_text("active")
    await row.get_by_role("link", name=description).click()
    await expect(page.get_by_role("heading", name=description)).to_be_visible()
    await expect(page.get_by_text("No deliveries yet")).to_be_visible()

    device = "console-dev-" + secrets.token_hex(3)
    await publish(cluster, broker, device, [{"temperature": 20.5}, {"temperature": 21.0}])
    # No reload: the log polls.
    rows = page.get_by_role("row").filter(has_text=device)
    await expect(rows).to_have_count(2, timeout=LIVE_SECONDS)
    await expect(rows.filter(has_text="succeeded")).to_have_count(2, timeout=LIVE_SECONDS)
    await receiver.wait_for(2)


async def test_a_failed_delivery_is_opened_redelivered_and_its_webhook_enabled(
    console: ConsolePage, broker: Mosquitto
) -> None:
    cluster = console.cluster
    switch = Switch(500)
    receiver = Receiver(switch)
    await receiver.start()
    try:
        webhook_id = await cluster.register(receiver.url, ["device.data"], "s3cret")
        device = "console-fail-" + secrets.token_hex(3)
        await publish(cluster, broker, device, [{"temperature": 99.0}])
        await console.sign_in(route=f"#/webhooks/{webhook_id}")
        page = console.page
        await page.get_by_label("Delivery status").select_option("failed")
        failed = page.get_by_role("row").filter(has_text=device)
        await expect(failed).to_contain_text("failed", timeout=LIVE_SECONDS)
        # Failing for good disabled the webhook (EDGESENSE_MAX_RETRIES=1).
        await expect(page.get_by_role("button", name="Enable")).to_be_visible(timeout=LIVE_SECONDS)

        await failed.get_by_role("link").first.click()
        await expect(page.get_by_role("heading", name="Delivery")).to_be_visible()
        attempts = page.get_by_role("table", name="Attempts")
        await expect(attempts).to_contain_text("500")
        await expect(attempts).to_contain_text("down")  # the start of the response body
        await expect(page.get_by_label("Body sent")).to_contain_text('"temperature": 99')

        switch.status = 200
        await page.get_by_role("button", name="Redeliver").click()
        # Its webhook is disabled: the delivery waits, held, until it is enabled.
        await expect(page.get_by_role("status")).to_contain_text("Sent again: now held")
        await page.get_by_role("link", name=webhook_id).click()
        await page.get_by_role("button", name="Enable").click()
        await expect(page.get_by_role("status")).to_contain_text("Enabled")
        await expect(page.locator("h1 .badge")).to_have_text("active")
        await page.get_by_label("Delivery status").select_option("succeeded")
        await expect(page.get_by_role("row").filter(has_text=device)).to_contain_text(
            "succeeded", timeout=LIVE_SECONDS
        )
        await receiver.wait_for(3)
    finally:
        await receiver.stop()


async def test_registering_from_the_console(console: ConsolePage, receiver: Receiver) -> None:
    console.problems.expect("status of 400")  # the refused registration
    await console.sign_in(route="#/webhooks")
    page = console.page
    await page.get_by_text("Register a webhook").click()
    form = page.locator("details", has_text="Register a webhook")
    await form.get_by_label("URL").fill("ftp://nope.example")
    await form.get_by_label("Signing secret").fill("s3cret")
    await form.get_by_role("button", name="Register").click()
    await expect(form.get_by_role("alert")).to_contain_text("url")  # the API names the field
    description = "from-console-" + secrets.token_hex(3)
    await form.get_by_label("URL").fill(receiver.url)
    await form.get_by_label("Description").fill(description)
    await form.get_by_role("button", name="Register").click()
    await expect(form.get_by_role("status")).to_contain_text("Registered wh_")
    await expect(page.get_by_role("row").filter(has_text=description)).to_contain_text("active")
