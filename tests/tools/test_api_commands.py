"""`edgesense webhooks …` and `edgesense deliveries …` against the real
in-process cluster, as a user runs them: a subprocess with EDGESENSE_API_URL
and EDGESENSE_API_KEY, reading stdout, stderr and the exit code."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from edgesense import cli
from edgesense.tools import api_client
from edgesense.v1 import registry_pb2_grpc
from tests.integration.cluster import Cluster, reading, register_large
from tests.support.ports import free_port
from tests.support.receivers import Receiver
from tests.tools.conftest import api_env, run_cli

WEBHOOK_ID = re.compile(r"wh_[a-z0-9]+")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def row_of(lines: list[str], needle: str) -> str:
    rows = [line for line in lines if needle in line]
    assert len(rows) == 1, lines
    return rows[0]


async def test_register_list_get_deliveries_redeliver_delete(
    cluster: Cluster, receiver: Receiver
) -> None:
    env = api_env(cluster)
    registered = await run_cli(
        "webhooks", "register", "--url", receiver.url, "--events", "device.data, device.alert",
        "--secret", "s3cret-value", "--description", "plant 7", "--device-ids", "edge-node-321",
        env=env,
    )  # fmt: skip
    assert registered.code == 0, registered.err
    assert registered.lines[1] == "status:    registered"
    found = WEBHOOK_ID.search(registered.lines[0])
    assert found is not None
    assert registered.lines[0] == f"webhookId: {found.group()}"
    hook = found.group()
    await cluster.known_to_delivery(hook)

    listed = await run_cli("webhooks", "list", env=env)
    assert listed.code == 0, listed.err
    header, row = listed.lines[0], row_of(listed.lines, hook)
    assert header.split() == [
        *("WEBHOOK", "ID", "STATUS", "EVENTS", "DEVICES", "CREATED", "URL", "DESCRIPTION")
    ]
    # Aligned: every column starts where its header does.
    for name, value in (("STATUS", "active"), ("URL", receiver.url), ("EVENTS", "device.data")):
        assert row.index(value) == header.index(name), (header, row)
    assert "device.data, device.alert" in row
    assert row.endswith("plant 7")
    assert "s3cret" not in listed.out

    as_json = await run_cli("webhooks", "list", "--json", env=env)
    assert [h["webhookId"] for h in json.loads(as_json.out)["webhooks"]] == [hook]

    got = await run_cli("webhooks", "get", hook, env=env)
    assert got.code == 0, got.err
    fields = dict(re.split(r":\s+", line, maxsplit=1) for line in got.lines)
    assert fields["webhookId"] == hook
    assert fields["url"] == receiver.url
    assert fields["status"] == "active"
    assert fields["events"] == "device.data, device.alert"
    assert fields["deviceIds"] == "edge-node-321"
    assert fields["description"] == "plant 7"
    assert "s3cret" not in got.out

    event = reading(device="edge-node-321")
    await cluster.publish([event])
    [delivery] = await cluster.wait_deliveries(hook, "succeeded")
    delivery_id = str(delivery["deliveryId"])

    deliveries = await run_cli("deliveries", "list", hook, env=env)
    assert deliveries.code == 0, deliveries.err
    assert deliveries.lines[0].split()[:3] == ["DELIVERY", "ID", "STATUS"]
    cells = row_of(deliveries.lines, delivery_id).split()
    assert cells[:7] == [delivery_id, "succeeded", "device.data", "edge-node-321", "1", "200",
                         str(delivery["createdAt"])]  # fmt: skip
    assert cells[7] == event.event_id

    redelivered = await run_cli("deliveries", "redeliver", delivery_id, env=env)
    assert redelivered.code == 0, redelivered.err
    assert f"deliveryId: {delivery_id}" in redelivered.lines
    assert "attempts:   1" in redelivered.lines
    second = await receiver.wait_for(2)
    assert [r.delivery_id for r in second] == [delivery_id, delivery_id]

    deleted = await run_cli("webhooks", "delete", hook, env=env)
    assert deleted.code == 0, deleted.err
    assert deleted.lines == [f"webhookId: {hook}", "status:    deleted"]
    gone = await run_cli("webhooks", "get", hook, env=env)
    assert gone.code == 1
    assert gone.out == ""
    assert gone.err == f"error: webhook {hook} not found (HTTP 404)\n"


async def test_deliveries_list_follows_page_tokens(
    cluster: Cluster,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hook = await cluster.register(receiver.url)
    events = [reading() for _ in range(7)]
    await cluster.publish(events)
    await cluster.wait_deliveries(hook, "succeeded", count=7)
    # Pages of 2: five deliveries take three pages, all seven take four.
    monkeypatch.setattr(api_client, "MAX_PAGE_SIZE", 2)
    for name, value in api_env(cluster).items():
        monkeypatch.setenv(name, value)

    code = await asyncio.to_thread(cli.main, ["deliveries", "list", hook, "--limit", "5"])
    assert code == 0
    captured = capsys.readouterr()
    shown = [line.split()[-1] for line in captured.out.splitlines()[1:]]
    newest_first = [e.event_id for e in reversed(events)]
    assert shown == newest_first[:5]
    # Stopping at the limit says so (on stderr: stdout stays a table) ...
    assert captured.err == (
        "showing the newest 5; there are more: --limit N shows N, --limit 0 all\n"
    )
    # ... and only when there are more.
    code = await asyncio.to_thread(cli.main, ["deliveries", "list", hook, "--limit", "7"])
    assert code == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1 + 7
    assert captured.err == ""

    argv = ["deliveries", "list", hook, "--limit", "0", "--json", "--status", "succeeded"]
    assert await asyncio.to_thread(cli.main, argv) == 0
    body = json.loads(capsys.readouterr().out)
    assert [d["eventId"] for d in body["deliveries"]] == newest_first
    assert body["nextPageToken"] == ""

    argv = ["deliveries", "list", hook, "--limit", "3", "--json"]
    assert await asyncio.to_thread(cli.main, argv) == 0
    body = json.loads(capsys.readouterr().out)
    assert [d["eventId"] for d in body["deliveries"]] == newest_first[:3]
    assert body["nextPageToken"] != ""

    assert await asyncio.to_thread(cli.main, ["deliveries", "list", hook, "--status", "held"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "no deliveries with status held\n"


async def test_api_errors_exit_1_with_the_gateways_message(cluster: Cluster) -> None:
    env = api_env(cluster)
    bad = await run_cli(
        "webhooks", "register", "--url", "ftp://example.com/hook", "--events", "device.data",
        "--secret", "s", env=env,
    )  # fmt: skip
    assert bad.code == 1
    assert re.fullmatch(r"error: url: .+ \(HTTP 400\)\n", bad.err), bad.err
    assert bad.out == ""

    unknown_event = await run_cli(
        "webhooks", "register", "--url", "https://example.com/", "--events", "device.nope",
        "--secret", "s", env=env,
    )  # fmt: skip
    assert unknown_event.code == 1
    assert unknown_event.err.startswith("error: events: ")

    wrong_key = await run_cli("webhooks", "list", env={**env, "EDGESENSE_API_KEY": "nope"})
    assert wrong_key.code == 1
    assert wrong_key.err.rstrip().endswith("(HTTP 401)")

    # Another project's webhook does not exist for this one.
    other = await cluster.register("https://example.com/b", project="project-b")
    hidden = await run_cli("webhooks", "enable", other, env=env)
    assert hidden.code == 1
    assert hidden.err.rstrip().endswith("(HTTP 404)")


async def test_no_api_exits_3() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    answer = await run_cli(
        "webhooks", "list", env={"EDGESENSE_API_URL": url, "EDGESENSE_API_KEY": "k"}
    )
    assert answer.code == 3
    assert answer.err == f"error: cannot reach the API at {url}; is `edgesense up` running?\n"

    # EDGESENSE_HTTP_ADDR is where the REST API listens, so also where the tools look.
    port = free_port()
    answer = await run_cli(
        "deliveries", "redeliver", "dlv_x",
        env={"EDGESENSE_HTTP_ADDR": f"127.0.0.1:{port}", "EDGESENSE_API_KEY": "k"},
    )  # fmt: skip
    assert answer.code == 3
    assert f"http://127.0.0.1:{port};" in answer.err


async def test_missing_key_exits_2_and_says_how_to_give_one(tmp_path: Path) -> None:
    answer = await run_cli("webhooks", "list", env={"EDGESENSE_API_URL": "http://x"}, cwd=tmp_path)
    assert answer.code == 2
    assert answer.err.startswith("error: no API key: ")
    for way in ("--api-key", "EDGESENSE_API_KEY", "var/dev-api-key"):
        assert way in answer.err


async def test_usage_errors_exit_2(tmp_path: Path) -> None:
    bad_status = await run_cli("deliveries", "list", "wh_x", "--status", "done", cwd=tmp_path)
    assert bad_status.code == 2
    assert "invalid choice: 'done'" in bad_status.err
    bad_url = await run_cli("webhooks", "list", "--api-url", "ftp://x", "--api-key", "k")
    assert bad_url.code == 2
    assert bad_url.err.startswith("error: the API URL must start with http:// or https://")
    no_action = await run_cli("webhooks")
    assert no_action.code == 2


async def test_dev_key_file_and_secret_from_stdin(cluster: Cluster, tmp_path: Path) -> None:
    env = api_env(cluster)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "dev-api-key").write_text(env.pop("EDGESENSE_API_KEY") + "\n")
    registered = await run_cli(
        "webhooks", "register", "--url", "https://example.com/hook", "--events", "device.status",
        "--secret", "-", "--json", env=env, cwd=tmp_path, stdin="from-stdin\n",
    )  # fmt: skip
    assert registered.code == 0, registered.err
    body = json.loads(registered.out)
    assert body["status"] == "registered"
    listed = await run_cli("webhooks", "get", body["webhookId"], "--json", env=env, cwd=tmp_path)
    assert json.loads(listed.out)["events"] == ["device.status"]

    empty = await run_cli(
        "webhooks", "register", "--url", "https://example.com/hook", "--events", "device.status",
        "--secret", "-", env=env, cwd=tmp_path, stdin="",
    )  # fmt: skip
    assert empty.code == 2
    assert "empty secret" in empty.err


async def test_webhooks_list_follows_every_page(cluster: Cluster) -> None:
    # Eight of the largest webhooks pass the 1 MiB a page may hold: two pages.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cluster.registry.port}") as channel:
        key = next(k for k, p in cluster.keys.items() if p == "project-a")
        await register_large(registry_pb2_grpc.WebhookRegistryStub(channel), key, 8)
    first = await cluster.http.get(
        "/api/webhooks", params={"pageSize": 100}, headers=cluster.auth()
    )
    assert first.json()["nextPageToken"]
    listed = await run_cli("webhooks", "list", "--json", env=api_env(cluster))
    assert listed.code == 0, listed.err
    assert len({h["webhookId"] for h in json.loads(listed.out)["webhooks"]}) == 8


async def test_update_rotate_secret_and_event_types(cluster: Cluster, receiver: Receiver) -> None:
    env = api_env(cluster)
    hook = await cluster.register(receiver.url, description="plant 7")
    updated = await run_cli(
        "webhooks", "update", hook, "--events", "device.data,device.status",
        "--header", "Authorization: Bearer gw-token", "--json", env=env,
    )  # fmt: skip
    assert updated.code == 0, updated.err
    answer = json.loads(updated.out)
    # Only the options given were sent: the description and URL are kept.
    assert answer["events"] == ["device.data", "device.status"]
    assert (answer["description"], answer["url"]) == ("plant 7", receiver.url)
    assert answer["headers"] == {"Authorization": "***"}
    limited = await run_cli(
        "webhooks", "update", hook, "--rate-limit", "7", "--ordered", "--json", env=env
    )  # fmt: skip
    assert limited.code == 0, limited.err
    answer = json.loads(limited.out)
    assert (answer["rateLimitPerSecond"], answer["ordered"]) == (7, True)
    assert answer["events"] == ["device.data", "device.status"]
    unordered = await run_cli("webhooks", "update", hook, "--no-ordered", env=env)
    assert unordered.code == 0, unordered.err
    shown = {line.split(":")[0]: line.split(":", 1)[1].strip() for line in unordered.lines}
    assert (shown["rateLimitPerSecond"], shown["ordered"]) == ("7", "no")
    nothing = await run_cli("webhooks", "update", hook, env=env)
    assert nothing.code == 2
    assert "nothing to update" in nothing.err

    rotated = await run_cli(
        "webhooks", "rotate-secret", hook, "--secret", "new-secret-value", "--overlap", "60",
        env=env,
    )  # fmt: skip
    assert rotated.code == 0, rotated.err
    assert any(line.startswith("secretRotationEndsAt:") for line in rotated.lines)
    assert "new-secret-value" not in rotated.out

    types = await run_cli("event-types", env=env)
    assert types.code == 0, types.err
    assert [line.split()[0] for line in types.lines[1:]] == [
        "device.data",
        "device.alert",
        "device.status",
        "config.update",
        "webhook.disabled",
        "webhook.enabled",
    ]


async def test_test_recover_and_stats(cluster: Cluster, receiver: Receiver) -> None:
    env = api_env(cluster)
    hook = await cluster.register(receiver.url)
    sent = await run_cli("webhooks", "test", hook, "--event", "device.alert", "--json", env=env)
    assert sent.code == 0, sent.err
    record = json.loads(sent.out)
    assert (record["event"], record["webhookId"]) == ("device.alert", hook)
    [got] = await receiver.wait_for(1)
    assert got.delivery_id == record["deliveryId"]
    assert got.headers["X-EdgeSense-Test"] == "1"
    await cluster.wait_deliveries(hook, "succeeded")

    recovered = await run_cli(
        "webhooks", "recover", hook, "--since", "2020-01-01T00:00:00Z", env=env
    )
    assert recovered.code != 0  # further back than the held retention
    assert "since" in recovered.err
    recent = await run_cli(
        "webhooks", "recover", hook, "--since",
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 600)), env=env,
    )  # fmt: skip
    assert recent.code == 0, recent.err
    assert "recovered: 0" in recent.lines

    stats = await run_cli("webhooks", "stats", hook, "--window", "1h", env=env)
    assert stats.code == 0, stats.err
    assert "deliveries.succeeded: 1" in [" ".join(line.split()) for line in stats.lines]
    assert "successRate: 100.0%" in [" ".join(line.split()) for line in stats.lines]


async def test_project_stats_and_one_delivery(cluster: Cluster, receiver: Receiver) -> None:
    env = api_env(cluster)
    hook = await cluster.register(receiver.url)
    await cluster.register(receiver.url)  # a second webhook of the project
    await cluster.publish([reading()])
    [delivery] = await cluster.wait_deliveries(hook, "succeeded")
    await receiver.wait_for(2)

    overview = await run_cli("stats", "--window", "1h", env=env)
    assert overview.code == 0, overview.err
    lines = [" ".join(line.split()) for line in overview.lines]
    for expected in (
        "deliveries.succeeded: 2",
        "attempts: 2",
        "successRate: 100.0%",
        "webhooks.active: 2",
        "webhooks.disabled: 0",
        "held: 0",
        "alertsActive: 0",
    ):
        assert expected in lines, lines
    as_json = await run_cli("stats", "--json", env=env)
    assert json.loads(as_json.out)["window"] == "24h"
    bad = await run_cli("stats", "--window", "2h", env=env)
    assert bad.code != 0

    shown = await run_cli("deliveries", "get", delivery["deliveryId"], env=env)
    assert shown.code == 0, shown.err
    [got] = [r for r in receiver.received if r.delivery_id == delivery["deliveryId"]]
    # The body as sent, on the last line; the headers that are not secret.
    assert shown.lines[-2:] == ["body:", got.body.decode()]
    assert f"  webhook-id: {delivery['deliveryId']}" in shown.lines
    assert not any("signature" in line.lower() for line in shown.lines)
    missing = await run_cli("deliveries", "get", "dlv_nope", env=env)
    assert missing.code != 0
    assert "not found" in missing.err
