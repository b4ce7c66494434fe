"""Delivery as real processes (issue 3): kill -9 mid-burst, two workers on one
PostgreSQL outbox, graceful hand-back on SIGTERM, held-delivery expiry,
back-pressure and a registry outage.

The process tests run `python -m edgesense.cli registry|delivery` (see
tests/support/processes.py) against a receiver in the test process; the
expiry and back-pressure tests use the in-process `cluster` with a few
settings changed. Every wait is a poll with a deadline, and the deadlines are
shorter than the time a broken mechanism would take to come right by accident
(a 120 s lease left to expire, the old 60 s expiry period), so a regression
fails instead of passing slowly.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Collection
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from edgesense.common.auth import bearer_metadata
from edgesense.common.config import Settings
from edgesense.delivery.store.tables import attempts, deliveries, events
from edgesense.storage.engine import create_engine
from edgesense.v1 import delivery_pb2, delivery_pb2_grpc
from tests.conftest import key_of
from tests.integration.cluster import Cluster, reading
from tests.support.processes import (
    Processes,
    ServiceProcess,
    arrived,
    delivery_counts,
    publish,
    register_webhook,
    wait_routed,
)
from tests.support.receivers import Behaviour, Receiver
from tests.support.waiting import eventually

SUCCEEDED = ("edgesense_deliveries_total", {"outcome": "succeeded"})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
def env_overrides() -> dict[str, str]:
    """Settings a test changes; tests parametrize it directly."""
    return {}


@pytest.fixture
def cluster_env(cluster_env: dict[str, str], env_overrides: dict[str, str]) -> dict[str, str]:
    return {**cluster_env, **env_overrides}


def internal_token(env: dict[str, str]) -> str:
    return Settings.from_env(env).service_token()


async def start_registry_and_delivery(
    processes: Processes, env: dict[str, str], receiver: Receiver, api_keys: dict[str, str]
) -> tuple[ServiceProcess, ServiceProcess, str]:
    """A registry, a webhook of project-a to `receiver`, and a delivery routing to it."""
    registry = await processes.start("registry", env)
    webhook_id = await register_webhook(registry, key_of(api_keys, "project-a"), receiver.url)
    delivery = await processes.start(
        "delivery", {**env, "EDGESENSE_REGISTRY_ADDR": registry.address}
    )
    await wait_routed(delivery, internal_token(env), receiver, webhook_id)
    return registry, delivery, webhook_id


def tracking_open_requests(delay: float, open_requests: set[str]) -> Behaviour:
    """A receiver behaviour that answers 200 after `delay`, keeping the ids of
    the deliveries whose request is still unanswered in `open_requests`."""

    async def behaviour(request: web.Request, _n: int) -> web.StreamResponse:
        delivery_id = request.headers["X-EdgeSense-Delivery"]
        open_requests.add(delivery_id)
        try:
            await asyncio.sleep(delay)
        finally:
            open_requests.discard(delivery_id)
        return web.Response(text="ok")

    return behaviour


async def all_succeeded(database_url: str, seconds: float = 10.0) -> None:
    """Wait until every delivery in the outbox has succeeded (none failed on the way)."""
    state: dict[str, int] = {}

    async def settled() -> bool:
        nonlocal state
        state = await outbox_state(database_url)
        assert state.get("failed", 0) == state.get("held", 0) == 0, state
        return state.get("pending", 0) == state["leased"] == 0

    try:
        await eventually(settled, seconds, "every delivery succeeded", interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the outbox: {state}") from None


async def outbox_state(database_url: str) -> dict[str, int]:
    """Rows of the outbox by status (and by "status: reason"), and how many
    are leased, read directly from the database."""
    engine = create_engine(database_url)
    state: Counter[str] = Counter()
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(
                    deliveries.c.status,
                    deliveries.c.status_reason,
                    deliveries.c.lease_owner.is_not(None),
                    func.count(),
                ).group_by(
                    deliveries.c.status,
                    deliveries.c.status_reason,
                    deliveries.c.lease_owner.is_not(None),
                )
            )
            for status, reason, leased, count in rows:
                state[status] += count
                state["leased"] += count if leased else 0
                if reason is not None:
                    state[f"{status}: {reason}"] += count
    finally:
        await engine.dispose()
    return {"leased": 0, **state}


async def wait_sent(
    receiver: Receiver,
    webhook_id: str,
    event_ids: Collection[str],
    seconds: float,
    what: str,
    database_url: str,
) -> None:
    """`poll` for `arrived`, saying what the outbox holds if it times out."""
    try:
        await eventually(arrived(receiver, webhook_id, event_ids), seconds, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the outbox: {await outbox_state(database_url)}") from None


# 1. kill -9 mid-burst, then restart: every confirmed event reaches the receiver.

BURST, BATCH = 2000, 50


@pytest.mark.parametrize("senders", [0, 1], ids=["posting itself", "with a sender process"])
async def test_kill_9_mid_burst_then_restart_delivers_every_confirmed_event(
    processes: Processes,
    receiver: Receiver,
    cluster_env: dict[str, str],
    api_keys: dict[str, str],
    database_url: str,
    senders: int,
) -> None:
    # A short lease, so what the killed worker had claimed is due again soon.
    env = {
        **cluster_env,
        "EDGESENSE_DELIVERY_LEASE_SECONDS": "3",
        "EDGESENSE_DELIVERY_SENDERS": str(senders),
    }
    token = internal_token(env)
    open_requests: set[str] = set()
    receiver.behaviour = tracking_open_requests(0.02, open_requests)
    registry, delivery, webhook_id = await start_registry_and_delivery(
        processes, env, receiver, api_keys
    )

    events = [reading(values={"n": float(i)}) for i in range(BURST)]
    batches = {
        n + 1: events[i : i + BATCH] for n, i in enumerate(range(0, BURST, BATCH))
    }  # batch id -> events
    hold_after = len(batches) * 3 // 4  # the burst is never over before the kill
    confirmed: set[int] = set()
    killed = asyncio.Event()

    async def requests() -> AsyncIterator[delivery_pb2.PublishRequest]:
        for batch_id, batch in batches.items():
            if batch_id > hold_after:
                await killed.wait()
                return
            yield delivery_pb2.PublishRequest(batch_id=batch_id, events=batch)

    async with grpc.aio.insecure_channel(delivery.address) as channel:
        call = delivery_pb2_grpc.DeliveryStub(channel).Publish(
            requests(), metadata=bearer_metadata(token)
        )

        async def read_confirmations() -> None:
            async for answer in call:
                assert answer.accepted + answer.duplicates == BATCH
                confirmed.add(answer.batch_id)

        reader = asyncio.create_task(read_confirmations())
        try:
            await eventually(
                lambda: len(confirmed) >= len(batches) // 2, 30, "half the burst confirmed"
            )
            await eventually(lambda: bool(open_requests), 10, "webhook requests in flight")
            children = delivery.children()
            assert len(children) == senders, "delivery runs its POSTs in that many processes"
            delivery.kill()
            # No await since the condition: these requests are unanswered, so
            # the dead worker cannot have recorded them as sent.
            in_flight_at_kill = set(open_requests)
            killed.set()
            assert await delivery.wait_exit() == -signal.SIGKILL
            with pytest.raises(grpc.aio.AioRpcError) as broken:
                await reader  # the stream breaks; it must not end as if complete
            assert broken.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            reader.cancel()
            call.cancel()
    confirmed_before_kill = set(confirmed)
    assert len(batches) // 2 <= len(confirmed_before_kill) <= hold_after
    # Its senders see their input close, finish what they had and exit.
    await eventually(lambda: not any(_alive(pid) for pid in children), 15, "the senders to exit")

    delivery = await processes.start(
        "delivery", {**env, "EDGESENSE_REGISTRY_ADDR": registry.address}
    )
    # The publisher retries what was not confirmed (some of it may be stored).
    rest = [e for batch_id, batch in batches.items() if batch_id not in confirmed for e in batch]
    answers = await publish(delivery, token, rest, BATCH, first_batch_id=1000)
    assert sum(a.accepted + a.duplicates for a in answers) == len(rest)

    confirmed_ids = {e.event_id for b in confirmed_before_kill for e in batches[b]}
    await wait_sent(
        receiver,
        webhook_id,
        confirmed_ids,
        60,
        "every event confirmed before the kill at the receiver",
        database_url,
    )
    await wait_sent(
        receiver, webhook_id, [e.event_id for e in events], 30, "every event sent", database_url
    )

    # What was on the wire when the worker died is sent again once its lease
    # expires (at least once), with the same delivery id.
    await eventually(
        lambda: all(delivery_counts(receiver)[d] >= 2 for d in in_flight_at_kill),
        30,
        "the requests cut by the kill to be sent again",
    )
    await all_succeeded(database_url)


# 2. Two delivery processes on one PostgreSQL outbox: no delivery sent twice.

TWO_WORKER_EVENTS = 2500  # x 2 webhooks = 5,000 deliveries


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_delivery_processes_share_the_postgres_outbox_without_duplicates(
    processes: Processes,
    receiver: Receiver,
    cluster_env: dict[str, str],
    api_keys: dict[str, str],
) -> None:
    # No lease can expire during the test: a delivery id arriving twice means
    # two workers held it at once (the receiver always answers 200: no retries).
    env = {
        **cluster_env,
        "EDGESENSE_DELIVERY_LEASE_SECONDS": "60",
        "EDGESENSE_DELIVERY_TIMEOUT_SECONDS": "30",
    }
    token = internal_token(env)
    registry = await processes.start("registry", env)
    key = key_of(api_keys, "project-a")
    hooks = [await register_webhook(registry, key, receiver.url) for _ in range(2)]
    delivery_env = {**env, "EDGESENSE_REGISTRY_ADDR": registry.address}
    workers = list(
        await asyncio.gather(
            processes.start("delivery", delivery_env), processes.start("delivery", delivery_env)
        )
    )
    for worker in workers:
        for hook in hooks:
            await wait_routed(worker, token, receiver, hook)

    events = [reading(values={"n": float(i)}) for i in range(TWO_WORKER_EVENTS)]
    half = len(events) // 2
    answers = await asyncio.gather(
        publish(workers[0], token, events[:half], 250),
        publish(workers[1], token, events[half:], 250, first_batch_id=100),
    )
    assert sum(a.accepted for batch in answers for a in batch) == len(events)

    for hook in hooks:
        await eventually(
            arrived(receiver, hook, [e.event_id for e in events]), 60, f"every event at {hook}"
        )

    async def recorded() -> float:
        return sum([await w.metric(*SUCCEEDED) for w in workers])

    # Every send is recorded once the succeeded counters add up to the
    # requests received; a second send of a delivery would show up by then.
    async def all_recorded() -> bool:
        return await recorded() >= len(receiver.received)

    await eventually(all_recorded, 30, "every send recorded")
    counts = delivery_counts(receiver)
    twice = {d: n for d, n in counts.items() if n > 1}
    assert not twice, f"{len(twice)} deliveries sent more than once while leased"
    assert await recorded() == len(receiver.received)
    per_worker = [await w.metric(*SUCCEEDED) for w in workers]
    assert all(n > 0 for n in per_worker), f"one worker did nothing: {per_worker}"
    assert sum(per_worker) >= 2 * len(events)


# 3. SIGTERM hands claimed work back.


async def test_sigterm_hands_back_claimed_deliveries_and_finishes_those_in_flight(
    processes: Processes,
    receiver: Receiver,
    cluster_env: dict[str, str],
    api_keys: dict[str, str],
    database_url: str,
) -> None:
    # A lease far longer than the test: what the stopped worker kept leased
    # would stay stuck past every deadline below.
    env = {
        **cluster_env,
        "EDGESENSE_DELIVERY_LEASE_SECONDS": "120",
        "EDGESENSE_DELIVERY_PER_TARGET": "4",
        "EDGESENSE_DELIVERY_TIMEOUT_SECONDS": "10",
    }
    token = internal_token(env)
    registry, delivery, webhook_id = await start_registry_and_delivery(
        processes, env, receiver, api_keys
    )
    slow = True

    async def slow_while_stopping(_request: web.Request, _n: int) -> web.StreamResponse:
        if slow:
            await asyncio.sleep(1.0)
        return web.Response(text="ok")

    receiver.behaviour = slow_while_stopping
    events = [reading(values={"n": float(i)}) for i in range(60)]
    await publish(delivery, token, events)
    await eventually(lambda: receiver.in_progress >= 4, 10, "a full lane of requests in flight")
    before = await outbox_state(database_url)
    # A full lane: 4 in flight and 4 more leased to this process, waiting in
    # it (fresh deliveries are leased at insert up to twice the per-target limit).
    assert before["leased"] >= 8, before
    assert before["leased"] > receiver.in_progress, before

    started = time.monotonic()
    delivery.terminate()
    assert await delivery.wait_exit(20) == 0
    assert time.monotonic() - started < 15
    after = await outbox_state(database_url)
    assert after["leased"] == 0, after  # every lease handed back
    assert after.get("failed", 0) == after.get("held", 0) == 0, after
    sent_before_restart = len(receiver.received)

    slow = False
    delivery = await processes.start(
        "delivery", {**env, "EDGESENSE_REGISTRY_ADDR": registry.address}
    )
    wanted = {e.event_id for e in events}
    await wait_sent(receiver, webhook_id, wanted, 20, "every event sent", database_url)
    assert len(receiver.received) > sent_before_restart  # the rest was sent after the restart
    await all_succeeded(database_url)
    # In-flight attempts were finished and recorded, not cut and sent again.
    assert max(delivery_counts(receiver).values()) == 1


# 4. Held deliveries expire.

RETENTION_HOURS = "0.0005"  # 1.8 s


@pytest.mark.parametrize(
    "env_overrides",
    [{"EDGESENSE_HELD_RETENTION_HOURS": RETENTION_HOURS, "EDGESENSE_MAX_RETRIES": "0"}],
    ids=["short-retention"],
)
async def test_held_deliveries_of_a_disabled_webhook_expire(
    cluster: Cluster, receiver: Receiver
) -> None:
    assert cluster.settings.held_retention_seconds == pytest.approx(1.8)

    async def broken(_request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(status=500)

    receiver.behaviour = broken
    webhook_id = await cluster.register(receiver.url)
    await cluster.publish([reading()])  # one attempt, no retries: the webhook is disabled

    async def disabled() -> bool:
        return str((await cluster.webhook(webhook_id))["status"]) == "disabled"

    await eventually(disabled, 10, "the webhook disabled")

    event = reading()
    await cluster.publish([event])
    [held] = await cluster.wait_deliveries(webhook_id, "held", seconds=5)
    assert held["eventId"] == event.event_id

    # The maintenance loop checks expiry every min(60 s, retention / 2); with
    # the old fixed 60 s this would time out.
    record = held

    async def no_longer_held() -> bool:
        nonlocal record
        [record] = [
            d for d in await cluster.deliveries(webhook_id) if d["deliveryId"] == held["deliveryId"]
        ]
        return str(record["status"]) != "held"

    await eventually(no_longer_held, 10, "the held delivery to expire")
    assert record["status"] == "failed"
    assert "expired" in str(record["statusReason"])
    assert record.get("attempts", []) == []
    assert len(receiver.received) == 1  # the held delivery was never sent


# 4b. Retention deletes what ended, never what is held.

RETENTION_DAYS = "0.00002"  # 1.728 s


@pytest.mark.parametrize(
    "env_overrides",
    [{"EDGESENSE_RETENTION_DAYS": RETENTION_DAYS, "EDGESENSE_MAX_RETRIES": "0"}],
    ids=["short-retention"],
)
async def test_the_maintenance_loop_deletes_ended_deliveries_and_keeps_held_ones(
    cluster: Cluster, receiver: Receiver, database_url: str
) -> None:
    """Delivery's own maintenance loop, with a retention of 1.7 s: a succeeded
    and a failed delivery are deleted with their attempts and their event,
    while a held delivery older than the retention stays with its event."""
    assert cluster.settings.retention_seconds == pytest.approx(1.728)
    counted = {
        kind: REGISTRY.get_sample_value("edgesense_retention_deleted_total", {"kind": kind}) or 0.0
        for kind in ("deliveries", "attempts", "events")
    }

    async def refuse(_request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(status=500)

    broken = Receiver(refuse)
    await broken.start()
    try:
        good = await cluster.register(receiver.url)
        bad = await cluster.register(broken.url)
        first = reading()
        await cluster.publish([first])  # succeeds at `good`; fails for good at `bad`

        async def disabled() -> bool:
            return str((await cluster.webhook(bad))["status"]) == "disabled"

        await eventually(disabled, 10, "the failing webhook disabled")
        second = reading()
        await cluster.publish([second])  # succeeds at `good`; held at `bad`
        [held] = await cluster.wait_deliveries(bad, "held", seconds=5)

        async def only_the_held_one_left() -> bool:
            left = await cluster.deliveries(good) + await cluster.deliveries(bad)
            return [d["deliveryId"] for d in left] == [held["deliveryId"]]

        await eventually(only_the_held_one_left, 15, "the ended deliveries deleted")
    finally:
        await broken.stop()
    sent = {json.loads(r.body)["eventId"] for r in receiver.received}
    assert sent == {first.event_id, second.event_id}
    assert len(broken.received) == 1
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            stored = set((await conn.execute(select(events.c.event_id))).scalars())
            logged = (await conn.execute(select(func.count()).select_from(attempts))).scalar()
    finally:
        await engine.dispose()
    assert stored == {second.event_id}  # the held delivery's event stays
    assert logged == 0
    # Events: the first one, and the registry's webhook.disabled about `bad`
    # (an event no webhook subscribes to, so it had no delivery at all).
    for kind, wanted in (("deliveries", 3), ("attempts", 3), ("events", 2)):
        now = REGISTRY.get_sample_value("edgesense_retention_deleted_total", {"kind": kind})
        assert (now or 0.0) - counted[kind] == wanted, kind


# 5. Back-pressure: past the outbox limit, Publish answers RESOURCE_EXHAUSTED.

OUTBOX_LIMIT = 50


async def publish_until_refused(cluster: Cluster, batch: int) -> tuple[int, grpc.aio.AioRpcError]:
    """Publish `batch` events at a time, each batch confirmed before the next,
    until Publish fails; returns how many events were accepted, and the error."""
    accepted = 0
    for _ in range(20 * OUTBOX_LIMIT // batch):
        try:
            [answer] = await cluster.publish([reading() for _ in range(batch)])
        except grpc.aio.AioRpcError as exc:
            return accepted, exc
        accepted += answer.accepted
    raise AssertionError(f"Publish accepted {accepted} events, never refusing")


@pytest.mark.parametrize(
    "env_overrides",
    # A timeout longer than the test: the hanging requests stay pending.
    [{"EDGESENSE_OUTBOX_LIMIT": str(OUTBOX_LIMIT), "EDGESENSE_DELIVERY_TIMEOUT_SECONDS": "60"}],
    ids=["limit-50"],
)
async def test_publish_is_refused_past_the_outbox_limit_and_accepted_again_once_drained(
    cluster: Cluster,
) -> None:
    release = asyncio.Event()

    async def hang(_request: web.Request, _n: int) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="ok")

    receiver = Receiver(hang)
    await receiver.start()
    try:
        webhook_id = await cluster.register(receiver.url)
        # One batch at a time, each confirmed before the next: the acceptor
        # counts every confirmed delivery at once, so the limit is met exactly.
        accepted, refused = await publish_until_refused(cluster, batch=10)
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"limit {OUTBOX_LIMIT}" in str(refused.details())
        assert OUTBOX_LIMIT - 10 <= accepted <= OUTBOX_LIMIT
        # Nothing waits in memory: every accepted event is a pending row, and
        # the refused batch stored nothing.
        await receiver.wait_for(1)
        stored = await cluster.deliveries(webhook_id, pageSize=500)
        assert len(stored) == accepted
        assert {d["status"] for d in stored} == {"pending"}

        # Once the receiver answers and the outbox drains, Publish accepts again
        # (within a refresh of the pending count).
        release.set()
        await cluster.wait_deliveries(webhook_id, "succeeded", accepted)
        refusals: list[grpc.StatusCode] = []

        async def accepted_again() -> bool:
            try:
                [answer] = await cluster.publish([reading()])
            except grpc.aio.AioRpcError as exc:
                refusals.append(exc.code())
                return False
            return answer.accepted == 1

        await eventually(accepted_again, 10, "Publish to accept again")
        assert set(refusals) <= {grpc.StatusCode.RESOURCE_EXHAUSTED}
    finally:
        release.set()
        await receiver.stop()


# 6. Registry down: delivery goes on, then resyncs.


async def test_delivery_keeps_sending_while_the_registry_is_down_and_resyncs_after(
    processes: Processes,
    receiver: Receiver,
    cluster_env: dict[str, str],
    api_keys: dict[str, str],
) -> None:
    token = internal_token(cluster_env)
    key = key_of(api_keys, "project-a")
    # A second registry on the same database, which delivery does not follow:
    # through it a webhook is registered that delivery cannot hear of.
    (registry, delivery, known), elsewhere = await asyncio.gather(
        start_registry_and_delivery(processes, cluster_env, receiver, api_keys),
        processes.start("registry", cluster_env),
    )
    registry.terminate()
    assert await registry.wait_exit() == 0

    events = [reading(values={"n": float(i)}) for i in range(20)]
    answers = await publish(delivery, token, events, batch=5)
    assert sum(a.accepted for a in answers) == len(events)
    await eventually(
        arrived(receiver, known, [e.event_id for e in events]), 15, "events sent meanwhile"
    )

    other = Receiver()
    await other.start()
    try:
        added = await register_webhook(elsewhere, key, other.url)
        async with grpc.aio.insecure_channel(delivery.address) as channel:
            stub = delivery_pb2_grpc.DeliveryStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await stub.ListDeliveries(
                    delivery_pb2.ListDeliveriesRequest(webhook_id=added),
                    metadata=bearer_metadata(key),
                )
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

            await processes.start("registry", cluster_env, port=registry.port)
            await wait_routed(delivery, token, other, added, seconds=30)
            listed = await stub.ListDeliveries(
                delivery_pb2.ListDeliveriesRequest(webhook_id=added),
                metadata=bearer_metadata(key),
            )
            assert len(listed.deliveries) >= 1
    finally:
        await other.stop()


def _alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped by init, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] != b"Z"
