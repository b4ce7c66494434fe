"""Chaos, with nothing lost (issue 14): every reading the broker acknowledged
reaches the receiver while processes die, the database and the broker restart.

A gateway publishes CHAOS_EVENTS readings (QoS 1) at CHAOS_RATE a second to a
private persistent Mosquitto; two bridges on a shared subscription hand them
to two delivery processes on a private PostgreSQL; the receiver answers 500
or hangs now and then. Meanwhile a random bridge or delivery is killed with
SIGKILL every CHAOS_KILL_EVERY seconds and started again a second later,
PostgreSQL is stopped as a crash would stop it (`-m immediate`) and started
2 s later, and Mosquitto is stopped with SIGTERM and started again. Then:
nothing lost, duplicates only under the webhook-id a receiver drops them by,
no delivery left pending past its lease, every process we did not kill still
the one we started. The figures are printed either way.

Waits are polls with deadlines; the sleeps are the chaos's own timeline
(when to kill, how long a database outage lasts), not waits for a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.chaos.cluster import PROJECT, ChaosCluster
from tests.chaos.gateway import SteadyGateway
from tests.chaos.inbox import Inbox
from tests.chaos.plan import (
    DATABASE_DOWN,
    ERROR_RATE,
    HANG_RATE,
    HANG_SECONDS,
    LEASE_SECONDS,
    MOSQUITTO_AT,
    MOSQUITTO_DOWN_SECONDS,
    POSTGRES_AT,
    POSTGRES_DOWN_SECONDS,
    RESTART_AFTER_SECONDS,
    ChaosPlan,
    Figures,
)
from tests.support.postgres import postgres_bin
from tests.support.processes import Processes
from tests.support.receivers import Flaky, Receiver
from tests.support.waiting import eventually

PLAN = ChaosPlan.from_env()
PUBACK_SECONDS = 30.0


@pytest.mark.chaos
@pytest.mark.mosquitto
@pytest.mark.timeout(PLAN.timeout_seconds)
async def test_nothing_acknowledged_is_lost_under_chaos(
    tmp_path: Path, service_processes: Processes, capsys: pytest.CaptureFixture[str]
) -> None:
    if postgres_bin() is None:
        pytest.skip("the chaos test runs its own PostgreSQL: no initdb under /usr/lib/postgresql")
    plan, began = PLAN, time.monotonic()
    run, secret = secrets.token_hex(4), "chaos-secret-" + secrets.token_hex(8)
    inbox = Inbox(secret, run)
    flaky = Flaky(inbox, plan.seed, ERROR_RATE, HANG_RATE, HANG_SECONDS)
    receiver = Receiver(flaky)
    await receiver.start()
    cluster = ChaosCluster(tmp_path, service_processes, receiver, secret)
    gateway: SteadyGateway | None = None
    figures = Figures(plan)
    try:
        await cluster.start(LEASE_SECONDS)
        assert cluster.mosquitto is not None
        gateway = SteadyGateway(cluster.mosquitto.port, PROJECT, run)
        gateway.connect()
        await chaos_while_publishing(plan, cluster, gateway)
        await asyncio.to_thread(gateway.settle, plan.events, PUBACK_SECONDS)
        published = set(gateway.tally.acked)
        await wait_quietly(lambda: published <= inbox.received(), plan.drain_seconds)
        outbox: dict[str, int] = {}

        async def settled() -> bool:
            nonlocal outbox
            outbox = await cluster.outbox()
            return outbox.get("pending", 0) == 0

        await wait_quietly(settled, 3 * LEASE_SECONDS + 10)

        figures.published = len(published)
        figures.no_subscribers = gateway.tally.no_subscribers
        figures.refused = len(gateway.tally.refused)
        figures.received = len(inbox.received())
        figures.lost = len(published - inbox.received())
        figures.duplicate_requests = inbox.duplicate_requests()
        figures.duplicated_readings = inbox.duplicated_readings()
        figures.readings_with_two_ids = inbox.readings_with_two_ids()
        figures.receiver_errors, figures.receiver_hangs = flaky.errors, flaky.hangs
        figures.bad_signatures = inbox.bad_signatures
        figures.kills = {slot.name: len(slot.killed) for slot in cluster.slots}
        figures.failed_starts = sum(len(slot.failed_starts) for slot in cluster.slots)
        figures.idle_turns = cluster.idle_turns
        figures.outages = [f"{o.what}: {o.seconds:.1f} s down" for o in cluster.outages]
        figures.outage_reports = cluster.log_lines(*DATABASE_DOWN)
        figures.outbox = outbox
        figures.needed_a_hand = cluster.unexpected_exits() + [
            f"{p.name} pid {p.process.pid} not running"
            for p in [cluster.registry, *(slot.process for slot in cluster.slots)]
            if p is not None and not p.running
        ]
        figures.publish_seconds = gateway.finished_at - gateway.started_at
        figures.drain_seconds = max(0.0, inbox.last_new_at - gateway.finished_at)
        figures.total_seconds = time.monotonic() - began
    finally:
        # Every step runs even if one before it fails (an exit stack runs
        # them all, last registered first), so a failed stop never leaves
        # the private PostgreSQL or Mosquitto running after the test.
        async with contextlib.AsyncExitStack() as cleanup:
            cleanup.push_async_callback(receiver.stop)
            cleanup.push_async_callback(asyncio.to_thread, cluster.postgres.remove, tmp_path)
            cleanup.push_async_callback(asyncio.to_thread, cluster.stop_mosquitto)
            cleanup.push_async_callback(service_processes.close)
            if gateway is not None:
                cleanup.callback(gateway.close)
            with capsys.disabled():
                print("\n" + "\n".join(figures.lines()), flush=True)

    missing = sorted(published - inbox.received())
    assert figures.lost == 0, f"{figures.lost} acknowledged readings never arrived: {missing[:20]}"
    assert figures.published == plan.events, "a reading never got a Success PUBACK"
    assert figures.readings_with_two_ids == 0, "a reading became two events"
    assert figures.bad_signatures == inbox.mismatched_ids == 0
    assert outbox.get("stuck", 0) == outbox.get("pending", 0) == 0, outbox
    assert outbox.get("failed", 0) == outbox.get("held", 0) == 0, outbox
    assert figures.needed_a_hand == []
    # The chaos happened: most planned kills (a turn finding every process
    # restarting kills none), and both restarts.
    assert sum(figures.kills.values()) >= plan.publish_seconds // plan.kill_every // 2
    assert len(cluster.outages) == 2
    assert figures.outage_reports > 0, "nobody said the database was down"


async def chaos_while_publishing(
    plan: ChaosPlan, cluster: ChaosCluster, gateway: SteadyGateway
) -> None:
    """Publish every reading; meanwhile kill, and restart the database and the broker."""
    rng = random.Random(plan.seed)
    publishing = asyncio.ensure_future(
        asyncio.to_thread(gateway.publish_all, plan.events, plan.rate)
    )

    async def at(share: float, action: Callable[[], Awaitable[None]]) -> None:
        await asyncio.sleep(plan.publish_seconds * share)  # the timeline, not a wait
        await action()

    async with asyncio.TaskGroup() as chaos:
        chaos.create_task(at(POSTGRES_AT, lambda: cluster.restart_postgres(POSTGRES_DOWN_SECONDS)))
        chaos.create_task(
            at(MOSQUITTO_AT, lambda: cluster.restart_mosquitto(MOSQUITTO_DOWN_SECONDS))
        )
        while not publishing.done():
            await asyncio.wait([publishing], timeout=plan.kill_every)
            if not publishing.done():
                chaos.create_task(cluster.kill_one(rng, RESTART_AFTER_SECONDS))
    await publishing


async def wait_quietly(
    condition: Callable[[], bool] | Callable[[], Awaitable[bool]], seconds: float
) -> None:
    """Wait for `condition` up to `seconds`; the figures say what did not happen."""
    with contextlib.suppress(AssertionError):
        await eventually(condition, seconds, "it", interval=0.2)
