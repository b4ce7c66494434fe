"""GET /api/stats (a project's figures and overview) and GET /api/deliveries/{id}
(one delivery with the body POSTed for it) end to end over REST, with real
receivers, on SQLite and PostgreSQL: figures checked against the deliveries
and attempts the test made, the body against what the receiver got."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook

from edgesense.delivery.store.rows import nearest_rank
from tests.integration.cluster import Cluster, reading
from tests.integration.test_alert_rules import BOILER, create_rule
from tests.integration.test_webhook_operations import (
    field_of,
    nonzero,
    parse,
    series_totals,
    wait_disabled,
)
from tests.support.receivers import Receiver, Switch, guide_verify_signature
from tests.support.waiting import eventually

SECRET = "your_shared_secret"
STANDARD_SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
STATUSES = ("pending", "succeeded", "failed", "held")


@pytest.fixture
def cluster_env(cluster_env: dict[str, str]) -> dict[str, str]:
    """Two attempts per delivery, so a delivery fails for good quickly."""
    return {**cluster_env, "EDGESENSE_MAX_RETRIES": "1"}


async def project_stats(
    cluster: Cluster, window: str | None = "1h", project: str = "project-a"
) -> dict[str, Any]:
    params = {} if window is None else {"window": window}
    answer = await cluster.http.get("/api/stats", params=params, headers=cluster.auth(project))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def all_deliveries(cluster: Cluster, hooks: list[str]) -> list[dict[str, Any]]:
    return [d for hook in hooks for d in await cluster.deliveries(hook, pageSize=500)]


def expected_figures(deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    """What stats must say of these deliveries (all created in the window)."""
    attempts = [a for d in deliveries for a in d["attempts"]]
    ok = [a for a in attempts if 200 <= a.get("statusCode", 0) < 300 and "error" not in a]
    durations = sorted(int(a.get("durationMs", 0)) for a in attempts)
    counts = {s: sum(1 for d in deliveries if d["status"] == s) for s in STATUSES}
    # Failed for good: the last attempt of a failed delivery; other failures were retried.
    last_failed = sum(1 for d in deliveries if d["status"] == "failed" and d["attempts"])
    return {
        "deliveries": nonzero({"total": len(deliveries), **counts}),
        "attempts": len(attempts),
        "attemptsSucceeded": len(ok),
        "percentiles": {p: durations[nearest_rank(p, len(durations)) - 1] for p in (50, 95, 99)},
        "series": {
            "succeeded": len(ok),
            "retried": len(attempts) - len(ok) - last_failed,
            "failed": last_failed,
        },
    }


async def test_project_stats_add_up_every_webhook_of_the_project_and_its_overview(
    cluster: Cluster, receiver: Receiver
) -> None:
    failing = Receiver(behaviour=Switch(500))
    await failing.start()
    try:
        healthy = await cluster.register(receiver.base + "/a")
        also = await cluster.register(receiver.base + "/b", events=["device.data", "device.alert"])
        broken = await cluster.register(failing.url)
        # Another project's webhook and deliveries count only there.
        other = await cluster.register(receiver.base + "/other", project="project-b")
        rule_id = await create_rule(cluster, BOILER)

        # Readings to all three of project-a (one over the rule's threshold:
        # an active alert), one to project-b.
        await cluster.publish(
            [
                reading(values={"temperature": 20}),
                reading(values={"temperature": 30}),
                reading(device="boiler-1", values={"temperature": 95}),
            ]
        )
        await cluster.publish([reading(project="project-b")])
        # healthy: 3 readings; also: 3 readings and the rule's alert; broken:
        # 3 readings that fail twice each (the first disables it, the rest
        # fail or end up held behind it).
        await cluster.wait_deliveries(healthy, "succeeded", 3)
        await cluster.wait_deliveries(also, "succeeded", 4)

        async def theirs_sent() -> bool:
            return len(await cluster.deliveries(other, "project-b", status="succeeded")) == 1

        await eventually(theirs_sent, 20, "project-b's delivery sent")
        await wait_disabled(cluster, broken)

        async def settled() -> bool:
            listed = await cluster.deliveries(broken, pageSize=500)
            return all(d["status"] in ("failed", "held") for d in listed)

        await eventually(settled, 20, "the broken webhook's deliveries failed or held")
        # Published while it is disabled: held.
        await cluster.publish([reading(device="press-2", values={"temperature": 21})])
        await cluster.wait_deliveries(broken, "held", 1)
        await cluster.wait_deliveries(healthy, "succeeded", 4)
        await cluster.wait_deliveries(also, "succeeded", 5)

        hooks = [healthy, also, broken]
        listed = await all_deliveries(cluster, hooks)
        expected = expected_figures(listed)
        held_now = sum(1 for d in listed if d["status"] == "held")
        assert held_now >= 1

        for window in ("1h", "24h", "7d"):
            got = await project_stats(cluster, window)
            assert got["window"] == window
            assert nonzero(got["deliveries"]) == expected["deliveries"]
            assert (got["attempts"], got["attemptsSucceeded"]) == (
                expected["attempts"],
                expected["attemptsSucceeded"],
            )
            assert got["successRate"] == pytest.approx(
                expected["attemptsSucceeded"] / expected["attempts"]
            )
            for percentile, ms in expected["percentiles"].items():
                assert got.get(f"p{percentile}DurationMs", 0) == ms, percentile
            assert series_totals(got) == expected["series"]
            assert got["webhooks"] == {"active": 2, "disabled": 1}
            assert got["held"] == held_now
            assert got["alertsActive"] == 1
            # The sum of each webhook's own stats.
            for kind in ("attempts", "attemptsSucceeded"):
                each = [
                    (
                        await cluster.http.get(
                            f"/api/webhooks/{h}/stats",
                            params={"window": window},
                            headers=cluster.auth(),
                        )
                    )
                    .json()
                    .get(kind, 0)
                    for h in hooks
                ]
                assert got.get(kind, 0) == sum(each), kind
        # Attempts fall in the buckets they started in, and each bucket's p50
        # and p99 are its attempts' (nearest rank, over a sort done here);
        # a bucket without attempts has none.
        got = await project_stats(cluster, "1h")
        since = parse(got["since"]).timestamp()
        by_bucket: dict[int, list[int]] = {}
        for attempt in (a for d in listed for a in d["attempts"]):
            position = int((parse(attempt["startedAt"]).timestamp() - since) // 60)
            by_bucket.setdefault(position, []).append(int(attempt.get("durationMs", 0)))
        for position, point in enumerate(got["series"]):
            durations = sorted(by_bucket.get(position, []))
            assert sum(int(point.get(k, 0)) for k in ("succeeded", "retried", "failed")) == len(
                durations
            )
            ranked = {
                f"p{p}DurationMs": durations[nearest_rank(p, len(durations)) - 1]
                for p in (50, 99)
                if durations
            }
            assert {k: point[k] for k in ("p50DurationMs", "p99DurationMs") if k in point} == (
                ranked
            ), position

        # project-b sees only its own.
        theirs = await project_stats(cluster, "1h", project="project-b")
        assert nonzero(theirs["deliveries"]) == {"total": 1, "succeeded": 1}
        assert theirs["webhooks"] == {"active": 1, "disabled": 0}
        assert (theirs["held"], theirs["alertsActive"]) == (0, 0)
        assert rule_id  # the rule is project-a's
    finally:
        await failing.stop()


async def test_project_stats_of_an_empty_window_and_bad_windows(
    cluster: Cluster, receiver: Receiver
) -> None:
    # project-b: a webhook, no deliveries yet; project-a: nothing at all.
    await cluster.register(receiver.url, project="project-b")
    for window, points, seconds in (("1h", 60, 60), ("24h", 288, 300), ("7d", 168, 3600)):
        got = await project_stats(cluster, window, project="project-b")
        assert (len(got["series"]), got["bucketSeconds"]) == (points, seconds)
        assert parse(got["series"][0]["start"]).timestamp() % seconds == 0
        assert parse(got["until"]).timestamp() - parse(got["since"]).timestamp() == points * seconds
        assert nonzero(got["deliveries"]) == {}
        assert series_totals(got) == {"succeeded": 0, "retried": 0, "failed": 0}
        for absent in ("successRate", "p50DurationMs", "p95DurationMs", "p99DurationMs"):
            assert absent not in got
        assert (got["attempts"], got["held"], got["alertsActive"]) == (0, 0, 0)
        assert got["webhooks"] == {"active": 1, "disabled": 0}
    nothing = await project_stats(cluster, None)
    assert nothing["window"] == "24h"  # the default
    assert nothing["webhooks"] == {"active": 0, "disabled": 0}
    assert nonzero(nothing["deliveries"]) == {}
    for bad in ("2h", "1H", "7"):
        answer = await cluster.http.get(
            "/api/stats", params={"window": bad}, headers=cluster.auth()
        )
        assert field_of(answer) == "window"
    unauthenticated = await cluster.http.get("/api/stats")
    assert unauthenticated.status_code == 401, unauthenticated.text


async def test_a_delivery_shows_the_exact_body_and_headers_the_receiver_got(
    cluster: Cluster, receiver: Receiver
) -> None:
    plain = await cluster.register(receiver.base + "/plain", deviceIds=["press-7"])
    standard = await cluster.register(
        receiver.base + "/standard",
        secret=STANDARD_SECRET,
        headers={"Authorization": "Bearer very-secret-token"},
    )
    await cluster.publish([reading(device="press-7", values={"temperature": 75.3, "n": 5})])
    tested = await cluster.http.post(
        f"/api/webhooks/{plain}/test", json={"event": "device.alert"}, headers=cluster.auth()
    )
    assert tested.status_code == 200, tested.text
    assert "body" not in tested.json()
    assert "headers" not in tested.json()
    await receiver.wait_for(3)

    for hook, secret, count in ((plain, SECRET, 2), (standard, STANDARD_SECRET, 1)):
        listed = await cluster.wait_deliveries(hook, "succeeded", count)
        for record in listed:
            # The listing stays as it was: no bodies, no headers.
            assert "body" not in record
            assert "headers" not in record
            answer = await cluster.http.get(
                f"/api/deliveries/{record['deliveryId']}", headers=cluster.auth()
            )
            assert answer.status_code == 200, answer.text
            one = answer.json()
            same = {k: v for k, v in one.items() if k not in ("body", "headers")}
            assert same == record
            [got] = [r for r in receiver.received if r.delivery_id == record["deliveryId"]]
            assert one["body"].encode() == got.body
            # Both signatures the receiver got verify over the body shown.
            signature = got.headers["X-EdgeSense-Signature"]
            assert guide_verify_signature(secret, one["body"], signature)
            if secret == STANDARD_SECRET:
                lowered = {k.lower(): v for k, v in got.headers.items()}
                StandardWebhook(secret).verify(one["body"].encode(), lowered)
            # Each header shown is one the receiver got, with its value.
            assert {name: got.headers[name] for name in one["headers"]} == one["headers"]
            shown = {name.lower() for name in one["headers"]}
            assert {"content-type", "user-agent", "x-edgesense-event", "webhook-id"} <= shown
            # Never a signature, a per-attempt time, or a custom header.
            assert not shown & {
                "x-edgesense-signature",
                "webhook-signature",
                "webhook-timestamp",
                "authorization",
            }
            assert "very-secret-token" not in answer.text
            body = json.loads(one["body"])
            assert body["webhookId"] == hook
            is_test = record["deliveryId"].startswith("dlv_test_")
            assert body.get("test") is (True if is_test else None)
            assert ("X-EdgeSense-Test" in one["headers"]) is is_test
    # The custom header was sent all the same.
    assert any(
        r.headers.get("Authorization") == "Bearer very-secret-token" for r in receiver.received
    )


async def test_a_delivery_of_another_project_or_unknown_is_not_found(
    cluster: Cluster, receiver: Receiver
) -> None:
    hook = await cluster.register(receiver.url)
    await cluster.publish([reading()])
    [record] = await cluster.wait_deliveries(hook, "succeeded")
    mine = await cluster.http.get(f"/api/deliveries/{record['deliveryId']}", headers=cluster.auth())
    assert mine.status_code == 200, mine.text
    for project, delivery_id in (("project-b", record["deliveryId"]), ("project-a", "dlv_nope")):
        answer = await cluster.http.get(
            f"/api/deliveries/{delivery_id}", headers=cluster.auth(project)
        )
        assert answer.status_code == 404, answer.text
        assert answer.json()["code"] == 5
