"""Test sends, recover and stats end to end over REST with real receivers, on
SQLite and PostgreSQL: what a receiver gets, what stays held or disabled,
exactly which deliveries are sent again, and stats checked against the
deliveries and attempts the test made."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest

from edgesense.common.event_types import EVENT_TYPES
from edgesense.common.events import DEVICE_EVENT_NAMES, EVENT_NAMES
from edgesense.delivery.accept.samples import TEST_SENDS_PER_MINUTE
from edgesense.delivery.store.rows import nearest_rank
from tests.integration.cluster import Cluster, reading
from tests.support.receivers import Receiver, Switch, guide_verify_signature
from tests.support.waiting import eventually

SECRET = "your_shared_secret"
SCHEMAS = {t.name: t.schema() for t in EVENT_TYPES}


@pytest.fixture
def cluster_env(cluster_env: dict[str, str]) -> dict[str, str]:
    """Two attempts per delivery, so a delivery fails for good quickly."""
    return {**cluster_env, "EDGESENSE_MAX_RETRIES": "1"}


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def field_of(answer: Any) -> str:
    """The one field a 400 names (message and BadRequest details agree)."""
    assert answer.status_code == 400, answer.text
    error = answer.json()
    violations = [v["field"] for d in error["details"] for v in d.get("fieldViolations", [])]
    assert len(violations) == 1, error
    assert error["message"].startswith(f"{violations[0]}:"), error
    return str(violations[0])


async def status_of(cluster: Cluster, webhook_id: str) -> dict[str, Any]:
    return await cluster.webhook(webhook_id)


async def disable_by_failure(cluster: Cluster, switch: Switch, webhook_id: str) -> None:
    """A real delivery fails for good (HTTP 500 twice), which disables the webhook."""
    switch.status = 500
    await cluster.publish([reading()])
    await wait_disabled(cluster, webhook_id)


async def wait_disabled(cluster: Cluster, webhook_id: str) -> None:
    """Until the registry has the webhook disabled, and delivery knows it.

    Delivery disables a webhook in its own index at once and reports the
    failure to the registry after: an enable sent before the registry has
    the report finds the webhook still active (a no-op), and the report then
    disables it. Waiting for delivery's index alone raced that report."""

    async def disabled() -> bool:
        return bool((await cluster.webhook(webhook_id))["status"] == "disabled")

    await eventually(disabled, 15, "the webhook disabled")
    await cluster.known_to_delivery(webhook_id, "disabled")


async def test_a_test_send_reaches_the_receiver_marked_signed_and_listed(
    cluster: Cluster, receiver: Receiver
) -> None:
    hook = await cluster.register(receiver.url, deviceIds=["press-7"])
    for position, name in enumerate(EVENT_NAMES, 1):
        answer = await cluster.http.post(
            f"/api/webhooks/{hook}/test", json={"event": name}, headers=cluster.auth()
        )
        assert answer.status_code == 200, answer.text
        record = answer.json()
        assert (record["webhookId"], record["event"], record["status"]) == (hook, name, "pending")
        assert record["deliveryId"].startswith("dlv_test_")
        [*_, got] = await receiver.wait_for(position)
        assert got.delivery_id == record["deliveryId"]
        assert got.headers["X-EdgeSense-Test"] == "1"
        assert got.headers["X-EdgeSense-Event"] == name
        assert guide_verify_signature(
            SECRET, got.body.decode(), got.headers["X-EdgeSense-Signature"]
        )
        body = json.loads(got.body)
        assert body["test"] is True
        assert (body["webhookId"], body["eventId"], body.get("deviceId")) == (
            hook,
            record["eventId"],
            # A device the webhook filters on; an operational event has none.
            "press-7" if name in DEVICE_EVENT_NAMES else None,
        )
        jsonschema.validate(body, SCHEMAS[name])
    # Listed as deliveries of the webhook, each with its attempt.
    listed = await cluster.wait_deliveries(hook, "succeeded", len(EVENT_NAMES))
    assert {d["deliveryId"] for d in listed} == receiver.deliveries()
    assert all(len(d["attempts"]) == 1 for d in listed)


async def test_a_test_send_goes_to_its_webhook_only_and_is_refused_elsewhere(
    cluster: Cluster, receiver: Receiver
) -> None:
    other = Receiver()
    await other.start()
    try:
        hook = await cluster.register(receiver.url)
        sibling = await cluster.register(other.url)  # same project, same events
        answer = await cluster.http.post(
            f"/api/webhooks/{hook}/test", json={"event": "device.data"}, headers=cluster.auth()
        )
        assert answer.status_code == 200, answer.text
        await receiver.wait_for(1)
        await cluster.wait_deliveries(hook, "succeeded")
        assert await cluster.deliveries(sibling) == []
        assert other.received == []

        bad = await cluster.http.post(
            f"/api/webhooks/{hook}/test",
            json={"event": "device.everything"},
            headers=cluster.auth(),
        )
        assert field_of(bad) == "event"
        for project, webhook_id in (("project-b", hook), ("project-a", "wh_unknown")):
            missing = await cluster.http.post(
                f"/api/webhooks/{webhook_id}/test",
                json={"event": "device.data"},
                headers=cluster.auth(project),
            )
            assert missing.status_code == 404, missing.text
    finally:
        await other.stop()


async def test_test_sends_are_limited_per_webhook(cluster: Cluster, receiver: Receiver) -> None:
    hook = await cluster.register(receiver.url)
    other = await cluster.register(receiver.url)
    url = f"/api/webhooks/{hook}/test"
    for _ in range(TEST_SENDS_PER_MINUTE):
        answer = await cluster.http.post(url, json={"event": "device.data"}, headers=cluster.auth())
        assert answer.status_code == 200, answer.text
    refused = await cluster.http.post(url, json={"event": "device.data"}, headers=cluster.auth())
    assert refused.status_code == 429, refused.text
    # Another webhook has its own allowance.
    answer = await cluster.http.post(
        f"/api/webhooks/{other}/test", json={"event": "device.data"}, headers=cluster.auth()
    )
    assert answer.status_code == 200, answer.text
    await receiver.wait_for(TEST_SENDS_PER_MINUTE + 1)


async def test_a_test_send_on_a_disabled_webhook_is_sent_and_the_rest_stay_held(
    cluster: Cluster, receiver: Receiver
) -> None:
    switch = Switch()
    receiver.behaviour = switch
    hook = await cluster.register(receiver.url)
    await disable_by_failure(cluster, switch, hook)
    before = await status_of(cluster, hook)
    await cluster.publish([reading()])
    [held] = await cluster.deliveries(hook, status="held")

    # The receiver is fixed: a test send checks it while the webhook is disabled.
    switch.status = 200
    sent_before = len(receiver.received)
    answer = await cluster.http.post(
        f"/api/webhooks/{hook}/test", json={"event": "device.status"}, headers=cluster.auth()
    )
    assert answer.status_code == 200, answer.text
    test_id = answer.json()["deliveryId"]
    [*_, got] = await receiver.wait_for(sent_before + 1)
    assert got.delivery_id == test_id
    await cluster.wait_deliveries(hook, "succeeded")
    after = await status_of(cluster, hook)
    assert after["status"] == "disabled"
    assert [d["deliveryId"] for d in await cluster.deliveries(hook, status="held")] == [
        held["deliveryId"]
    ]

    # A test send that fails for good (503 twice) neither reports nor changes
    # anything: the webhook keeps its reason and time; the event still held.
    switch.status = 503
    answer = await cluster.http.post(
        f"/api/webhooks/{hook}/test", json={"event": "device.data"}, headers=cluster.auth()
    )
    failing_id = answer.json()["deliveryId"]
    failed = await cluster.wait_deliveries(hook, "failed", 2)
    [record] = [d for d in failed if d["deliveryId"] == failing_id]
    assert [a["statusCode"] for a in record["attempts"]] == [503, 503]
    again = await status_of(cluster, hook)
    assert (again["status"], again["disabledReason"], again["disabledAt"]) == (
        "disabled",
        before["disabledReason"],
        before["disabledAt"],
    )
    assert "503" not in again["disabledReason"]
    assert len(await cluster.deliveries(hook, status="held")) == 1


async def test_a_failing_test_send_does_not_disable_an_active_webhook(
    cluster: Cluster, receiver: Receiver
) -> None:
    switch = Switch(500)
    receiver.behaviour = switch
    hook = await cluster.register(receiver.url)
    answer = await cluster.http.post(
        f"/api/webhooks/{hook}/test", json={"event": "device.alert"}, headers=cluster.auth()
    )
    assert answer.status_code == 200, answer.text
    await cluster.wait_deliveries(hook, "failed")
    await receiver.wait_for(2)
    # Events published after it are sent, not held: the webhook stayed active.
    switch.status = 200
    await cluster.publish([reading()])
    await cluster.wait_deliveries(hook, "succeeded")
    webhook = await status_of(cluster, hook)
    assert webhook["status"] == "active"
    assert cluster.delivery.index.get(hook) is not None
    assert cluster.delivery.index.get(hook).active  # type: ignore[union-attr]


async def test_recover_sends_exactly_the_failed_ones_oldest_first_and_stats_count_them(
    cluster: Cluster, receiver: Receiver
) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    switch = Switch()
    receiver.behaviour = switch
    hook = await cluster.register(receiver.url)
    failed_events = []
    # An outage: three deliveries fail for good one after another (each
    # disables the webhook, which is enabled again for the next).
    for number in range(3):
        event = reading(values={"n": number})
        failed_events.append(event.event_id)
        switch.status = 500
        await cluster.publish([event])
        await cluster.wait_deliveries(hook, "failed", number + 1)
        await wait_disabled(cluster, hook)
        enabled = await cluster.http.post(f"/api/webhooks/{hook}/enable", headers=cluster.auth())
        assert enabled.status_code == 200, enabled.text
        await cluster.known_to_delivery(hook, "active")
    switch.status = 200
    await cluster.publish([reading(values={"n": 3})])  # sent at once: not to recover
    await cluster.wait_deliveries(hook, "succeeded")
    failed_ids = {d["deliveryId"] for d in await cluster.deliveries(hook, status="failed")}

    before = await stats(cluster, hook, "1h")
    check_stats(before, await cluster.deliveries(hook, pageSize=500))
    assert nonzero(before["deliveries"]) == {"total": 4, "failed": 3, "succeeded": 1}
    totals = series_totals(before)
    assert totals == {"succeeded": 1, "retried": 3, "failed": 3}

    sent_before = len(receiver.received)
    url = f"/api/webhooks/{hook}/recover"
    answer = await cluster.http.post(url, json={"since": rfc3339(start)}, headers=cluster.auth())
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"webhookId": hook, "recovered": 3, "more": False}
    await receiver.wait_for(sent_before + 3)
    resent = receiver.received[sent_before:]
    assert {r.delivery_id for r in resent} == failed_ids
    succeeded = await cluster.wait_deliveries(hook, "succeeded", 4)
    recovered = [d for d in succeeded if d["deliveryId"] in failed_ids]
    # Oldest first: the fresh attempts started in the order the events came.
    by_start = sorted(recovered, key=lambda d: d["attempts"][-1]["startedAt"])
    assert [d["eventId"] for d in by_start] == failed_events
    assert all([a["attempt"] for a in d["attempts"]] == [1, 2, 3] for d in recovered)

    # Pending or sent again already: a second call recovers none of them.
    again = await cluster.http.post(url, json={"since": rfc3339(start)}, headers=cluster.auth())
    assert again.json() == {"webhookId": hook, "recovered": 0, "more": False}
    assert len(receiver.received) == sent_before + 3

    after = await stats(cluster, hook, "1h")
    check_stats(after, await cluster.deliveries(hook, pageSize=500))
    assert nonzero(after["deliveries"]) == {"total": 4, "succeeded": 4}
    assert series_totals(after) == {"succeeded": 4, "retried": 6, "failed": 0}


async def test_recover_and_stats_refuse_bad_fields_and_other_projects(
    cluster: Cluster, receiver: Receiver
) -> None:
    hook = await cluster.register(receiver.url)
    now = datetime.now(UTC)
    url = f"/api/webhooks/{hook}/recover"
    for body in (
        {},
        {"since": rfc3339(now - timedelta(days=31))},  # past the 30-day retention
        {"since": rfc3339(now - timedelta(hours=1)), "until": rfc3339(now - timedelta(hours=2))},
    ):
        assert field_of(await cluster.http.post(url, json=body, headers=cluster.auth())) == "since"
    # The window is bounded by the retention, not by the (7-day) held retention.
    within = {"since": rfc3339(now - timedelta(days=29))}
    answer = await cluster.http.post(url, json=within, headers=cluster.auth())
    assert answer.status_code == 200, answer.text
    assert answer.json().get("recovered", 0) == 0
    bad_window = await cluster.http.get(
        f"/api/webhooks/{hook}/stats", params={"window": "2h"}, headers=cluster.auth()
    )
    assert field_of(bad_window) == "window"
    body = {"since": rfc3339(now - timedelta(hours=1))}
    for project, webhook_id in (("project-b", hook), ("project-a", "wh_unknown")):
        answer = await cluster.http.post(
            f"/api/webhooks/{webhook_id}/recover", json=body, headers=cluster.auth(project)
        )
        assert answer.status_code == 404, answer.text
        answer = await cluster.http.get(
            f"/api/webhooks/{webhook_id}/stats", headers=cluster.auth(project)
        )
        assert answer.status_code == 404, answer.text
    # Windows and their buckets: 60, 288 and 168 points, whole buckets.
    for window, points, seconds in (("1h", 60, 60), ("24h", 288, 300), ("7d", 168, 3600)):
        got = await stats(cluster, hook, window)
        assert (len(got["series"]), got["bucketSeconds"]) == (points, seconds)
        assert parse(got["series"][0]["start"]).timestamp() % seconds == 0
        assert nonzero(got["deliveries"]) == {}
        assert "successRate" not in got
    default = (await cluster.http.get(f"/api/webhooks/{hook}/stats", headers=cluster.auth())).json()
    assert default["window"] == "24h"


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {status: n for status, n in counts.items() if n}


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def stats(cluster: Cluster, webhook_id: str, window: str) -> dict[str, Any]:
    answer = await cluster.http.get(
        f"/api/webhooks/{webhook_id}/stats", params={"window": window}, headers=cluster.auth()
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def series_totals(got: dict[str, Any]) -> dict[str, int]:
    return {
        kind: sum(int(point.get(kind, 0)) for point in got["series"])
        for kind in ("succeeded", "retried", "failed")
    }


def check_stats(got: dict[str, Any], deliveries: list[dict[str, Any]]) -> None:
    """The attempt figures of `got` are those of the listed deliveries' attempts."""
    attempts = [a for d in deliveries for a in d["attempts"]]
    ok = [a for a in attempts if 200 <= a.get("statusCode", 0) < 300 and "error" not in a]
    assert (got["attempts"], got.get("attemptsSucceeded", 0)) == (len(attempts), len(ok))
    assert got["successRate"] == pytest.approx(len(ok) / len(attempts))
    durations = sorted(int(a.get("durationMs", 0)) for a in attempts)
    for percentile in (50, 95, 99):
        expected = durations[nearest_rank(percentile, len(durations)) - 1]
        assert got.get(f"p{percentile}DurationMs", 0) == expected, (percentile, durations)
    # Each attempt in the bucket of its start.
    since = parse(got["since"]).timestamp()
    for attempt in attempts:
        position = int((parse(attempt["startedAt"]).timestamp() - since) // got["bucketSeconds"])
        point = got["series"][position]
        assert sum(int(point.get(k, 0)) for k in ("succeeded", "retried", "failed")) > 0
