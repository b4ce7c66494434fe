"""Alert rules against real delivery processes (issue 13): a kill -9 of the
delivery process between two breaching readings, and two delivery processes
on one PostgreSQL receiving readings of one device, still raise exactly one
device.alert per transition.

The registry and delivery run as `python -m edgesense.cli …` processes
(tests/support/processes.py); readings are published over gRPC as the bridge
does; the receiver is a real HTTP server in the test process.
"""

from __future__ import annotations

import asyncio
import json
import signal

import grpc
import pytest
from sqlalchemy import select

from edgesense.common.auth import bearer_metadata
from edgesense.common.config import Settings
from edgesense.delivery.store.tables import alerts
from edgesense.storage.engine import create_engine
from edgesense.v1 import rules_pb2, rules_pb2_grpc
from tests.conftest import key_of
from tests.integration.cluster import reading
from tests.support.processes import (
    Processes,
    ServiceProcess,
    arrived,
    publish,
    register_webhook,
    wait_routed,
)
from tests.support.receivers import Receiver
from tests.support.waiting import eventually


async def create_rule(registry: ServiceProcess, api_key: str, **spec: object) -> str:
    async with grpc.aio.insecure_channel(registry.address) as channel:
        answer = await rules_pb2_grpc.AlertRulesStub(channel).CreateRule(
            rules_pb2.CreateRuleRequest(rule=rules_pb2.RuleSpec(**spec)),  # type: ignore[arg-type]
            metadata=bearer_metadata(api_key),
            timeout=10,
        )
    return str(answer.rule_id)


def alert_states(receiver: Receiver, device: str) -> list[str]:
    """The `state` of every rule alert about `device` that reached the receiver."""
    found = []
    for got in receiver.received:
        body = json.loads(got.body)
        if body["event"] == "device.alert" and body["deviceId"] == device:
            found.append(body["payload"]["state"])
    return found


async def rule_loaded(
    delivery: ServiceProcess, token: str, receiver: Receiver, probe_device: str, count: int
) -> None:
    """Publish `count` breaching readings of a probe device until its alert
    arrives: delivery judges readings with the rule."""

    async def triggered() -> bool:
        if "triggered" in alert_states(receiver, probe_device):
            return True
        await publish(
            delivery, token, [reading(device=probe_device, values={"t": 99}) for _ in range(count)]
        )
        return False

    await eventually(triggered, 30, f"the rule to judge {probe_device}", interval=0.5)


async def test_kill_9_between_two_breaching_readings_raises_one_alert(
    processes: Processes,
    receiver: Receiver,
    cluster_env: dict[str, str],
    api_keys: dict[str, str],
) -> None:
    env = {**cluster_env, "EDGESENSE_DELIVERY_LEASE_SECONDS": "3"}
    token = Settings.from_env(env).service_token()
    key = key_of(api_keys, "project-a")
    registry = await processes.start("registry", env)
    webhook_id = await register_webhook(
        registry, key, receiver.url, events=("device.data", "device.alert")
    )
    await create_rule(registry, key, name="hot", field="t", operator="gt", threshold=80, count=2)
    delivery_env = {**env, "EDGESENSE_REGISTRY_ADDR": registry.address}
    delivery = await processes.start("delivery", delivery_env)
    await wait_routed(delivery, token, receiver, webhook_id)
    await rule_loaded(delivery, token, receiver, "probe", count=2)

    first = reading(device="boiler", values={"t": 90})
    (answer,) = await publish(delivery, token, [first])
    assert answer.accepted == 1  # stored, with the pair's state (one breach of two)
    delivery.kill()
    assert await delivery.wait_exit() == -signal.SIGKILL

    delivery = await processes.start("delivery", delivery_env)
    second, third = (reading(device="boiler", values={"t": t}) for t in (91, 92))
    await publish(delivery, token, [second])
    # The second breach in a row triggered: the first one's state outlived the kill.
    await eventually(lambda: "triggered" in alert_states(receiver, "boiler"), 30, "the alert")
    (alert,) = [
        json.loads(r.body)["payload"]
        for r in receiver.received
        if json.loads(r.body)["event"] == "device.alert"
        and json.loads(r.body)["deviceId"] == "boiler"
    ]
    assert alert["value"] == 91
    await publish(delivery, token, [first, second, third])  # a bridge sending again
    readings = [first.event_id, second.event_id, third.event_id]
    await eventually(arrived(receiver, webhook_id, readings), 30, "the three readings")
    # Everything published has arrived; one more reading of another device
    # after it, so an extra alert of the boiler would have arrived too.
    marker = reading(device="marker", values={"t": 1})
    await publish(delivery, token, [marker])
    await eventually(arrived(receiver, webhook_id, [marker.event_id]), 30, "the marker")
    assert alert_states(receiver, "boiler") == ["triggered"]
    stored = await stored_alerts(cluster_env["EDGESENSE_DATABASE_URL"], "boiler")
    assert stored == [("active", False)]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_delivery_processes_raise_one_alert_per_transition(
    processes: Processes,
    receiver: Receiver,
    cluster_env: dict[str, str],
    api_keys: dict[str, str],
) -> None:
    token = Settings.from_env(cluster_env).service_token()
    key = key_of(api_keys, "project-a")
    registry = await processes.start("registry", cluster_env)
    webhook_id = await register_webhook(registry, key, receiver.url, events=("device.alert",))
    await create_rule(registry, key, name="hot", field="t", operator="gt", threshold=80)
    delivery_env = {**cluster_env, "EDGESENSE_REGISTRY_ADDR": registry.address}
    workers = list(
        await asyncio.gather(
            processes.start("delivery", delivery_env), processes.start("delivery", delivery_env)
        )
    )
    for n, worker in enumerate(workers):
        await rule_loaded(worker, token, receiver, f"probe-{n}", count=1)

    # Rounds of breaching readings then clearing ones, each round's readings
    # split between the two processes and published at once, in small batches.
    rounds = 3
    for round_ in range(rounds):
        for value in (95.0, 20.0):
            batch = [reading(device="boiler", values={"t": value + i % 3}) for i in range(40)]
            await asyncio.gather(
                publish(workers[0], token, batch[::2], 2),
                publish(workers[1], token, batch[1::2], 2, first_batch_id=1000),
            )
            expected = 2 * round_ + (1 if value > 80 else 2)
            await eventually(
                lambda n=expected: len(alert_states(receiver, "boiler")) >= n,
                30,
                f"{expected} alerts",
            )
    marker = reading(device="marker", values={"t": 99})
    await publish(workers[0], token, [marker])
    await eventually(lambda: "triggered" in alert_states(receiver, "marker"), 30, "the marker")
    assert alert_states(receiver, "boiler") == ["triggered", "resolved"] * rounds
    # And in the outbox: one alert per breach, one event per transition.
    stored = await stored_alerts(cluster_env["EDGESENSE_DATABASE_URL"], "boiler")
    assert stored == [("resolved", True)] * rounds
    assert len(arrived_for(receiver, webhook_id)) == 2 * rounds + 3  # + probes, marker


def arrived_for(receiver: Receiver, webhook_id: str) -> list[str]:
    return [
        json.loads(r.body)["eventId"]
        for r in receiver.received
        if json.loads(r.body)["webhookId"] == webhook_id
    ]


async def stored_alerts(database_url: str, device: str) -> list[tuple[str, bool]]:
    """(state, has a resolved event) of each alert of `device` in the outbox."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(alerts.c.state, alerts.c.resolved_event_id.is_not(None))
                .where(alerts.c.device_id == device)
                .order_by(alerts.c.seq)
            )
            return [(str(state), bool(done)) for state, done in rows]
    finally:
        await engine.dispose()
