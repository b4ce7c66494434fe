"""rateLimitPerSecond measured at real receivers, on SQLite and PostgreSQL.

The rule: no window of one second holds more than the limit, as the
receiver sees it. A token comes back a second after its request has ended
(claim/ratelimit.py), and a request is seen by the receiver before it ends,
so this holds at the receiver however the network delays vary: the only
margin is 1 ms, for reading two clocks (the receiver's time.time() and our
monotonic clock) on one machine. A limiter that let one request too many
through puts it within milliseconds of the others.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from aiohttp import web

from edgesense.delivery import metrics
from tests.integration.cluster import Cluster, reading
from tests.support.receivers import Receiver
from tests.support.waiting import eventually

CLOCKS_SECONDS = 0.001


def assert_within_limit(receiver: Receiver, limit: int) -> None:
    """No limit + 1 requests reached the receiver within one second."""
    arrivals = sorted(r.at for r in receiver.received)
    spans = [last - first for first, last in zip(arrivals, arrivals[limit:], strict=False)]
    assert spans, "too few requests to judge the limit"
    assert min(spans) >= 1.0 - CLOCKS_SECONDS, (
        f"{limit + 1} requests within {min(spans):.3f} s (limit {limit}/s)"
    )


async def test_a_burst_is_spread_to_the_limit_and_other_webhooks_go_on(
    cluster: Cluster, receiver: Receiver
) -> None:
    fast = Receiver()
    await fast.start()
    try:
        limited = await cluster.register(receiver.url, rateLimitPerSecond=10)
        await cluster.register(fast.url)
        before = metrics.RATE_LIMITED._value.get()
        events = [reading(device=f"dev-{n % 4}") for n in range(50)]
        await cluster.publish(events)

        fast_arrivals = [r.at for r in await fast.wait_for(50)]
        arrivals = [r.at for r in await receiver.wait_for(50, seconds=30)]
        succeeded = await cluster.wait_deliveries(limited, "succeeded", 50)
        assert_within_limit(receiver, 10)
        # Ten at once (a second's worth), then ten a second: about four seconds.
        assert max(arrivals) - min(arrivals) >= 3.5
        # The webhook without a limit was not held back by the limited one.
        assert max(fast_arrivals) < min(arrivals) + 1.0
        assert metrics.RATE_LIMITED._value.get() > before

        # Waiting for the limit used no attempt.
        assert [len(d["attempts"]) for d in succeeded] == [1] * 50
    finally:
        await fast.stop()


@pytest.fixture
def cluster_env(cluster_env: dict[str, str]) -> dict[str, str]:
    """A lane (2 x EDGESENSE_DELIVERY_PER_TARGET) that a limit of 1/s would
    take longer to drain than a lease (3 s) lasts."""
    return {
        **cluster_env,
        "EDGESENSE_DELIVERY_PER_TARGET": "4",
        "EDGESENSE_DELIVERY_LEASE_SECONDS": "3",
    }


async def test_a_limit_set_on_a_busy_webhook_never_outlasts_a_lease(
    cluster: Cluster, receiver: Receiver
) -> None:
    """The lane is full when the limit comes: what would wait for a token
    longer than a third of the lease goes back to the outbox (no attempt
    used) instead of being sent twice after its lease ran out."""

    async def slow(_request: web.Request, _n: int) -> web.StreamResponse:
        await asyncio.sleep(0.5)  # the receiver's work; under the 1 s timeout
        return web.Response(text="ok")

    receiver.behaviour = slow
    hook = await cluster.register(receiver.url)
    await cluster.publish([reading(device=f"dev-{n}") for n in range(12)])
    await eventually(lambda: receiver.in_progress == 4, 10, "4 requests under way")
    answer = await cluster.http.patch(
        f"/api/webhooks/{hook}", json={"rateLimitPerSecond": 1}, headers=cluster.auth()
    )
    assert answer.status_code == 200, answer.text
    await eventually(
        lambda: getattr(cluster.delivery.index.get(hook), "rate_limit_per_second", 0) == 1,
        10,
        "delivery to know the limit",
    )
    changed = time.time()

    succeeded = await cluster.wait_deliveries(hook, "succeeded", 12, seconds=40)
    assert [len(d["attempts"]) for d in succeeded] == [1] * 12
    ids = [r.delivery_id for r in receiver.received]
    assert len(ids) == len(set(ids)) == 12, "a delivery was sent twice"
    # Those that started after the change (the earlier ones end within 0.5 s).
    later = sorted(r.at for r in receiver.received if r.at > changed + 0.5)
    assert len(later) >= 6
    assert min(b - a for a, b in itertools.pairwise(later)) >= 1.0 - CLOCKS_SECONDS


async def test_retries_coming_due_together_keep_to_the_limit(
    cluster: Cluster, receiver: Receiver
) -> None:
    """Retries come back through claims of due deliveries, which are not
    bounded per webhook: what one brings beyond the lane's cap is handed back,
    and the limit holds for the retries as for first attempts."""
    failures = 12

    async def fail_first(_request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500 if n <= failures else 200)

    receiver.behaviour = fail_first
    limited = await cluster.register(receiver.url, rateLimitPerSecond=4)
    await cluster.publish([reading(device=f"dev-{n}") for n in range(failures)])
    succeeded = await cluster.wait_deliveries(limited, "succeeded", failures, seconds=30)
    assert len(receiver.received) == 2 * failures
    assert_within_limit(receiver, 4)
    assert sorted(len(d["attempts"]) for d in succeeded) == [2] * failures
