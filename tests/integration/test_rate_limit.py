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


async def test_bursts_are_spread_to_the_limit_and_the_projects_other_webhook_goes_on(
    cluster: Cluster, receiver: Receiver
) -> None:
    """Three rate-limited webhooks of a project, with a backlog each, and one
    without a limit: the limited ones get no more than their limit in any
    second, and their waiting takes no send slot from the fourth (with
    EDGESENSE_DELIVERY_PER_PROJECT=4 the project has 4 slots, fewer than the
    three limited webhooks could hold if they waited in slots)."""
    limited = [receiver, Receiver(), Receiver()]
    fast = Receiver()
    for other in [*limited[1:], fast]:
        await other.start()
    try:
        hooks = [await cluster.register(r.url, rateLimitPerSecond=10) for r in limited]
        await cluster.register(fast.url)
        before = metrics.RATE_LIMITED._value.get()
        await cluster.publish([reading(device=f"dev-{n % 4}") for n in range(40)])

        fast_arrivals = [r.at for r in await fast.wait_for(40)]
        for hook, got in zip(hooks, limited, strict=True):
            arrivals = [r.at for r in await got.wait_for(40, seconds=30)]
            assert_within_limit(got, 10)
            # Ten at once (a second's worth), then ten a second: about three seconds.
            assert max(arrivals) - min(arrivals) >= 2.5
            # The webhook without a limit was not held back by the limited ones.
            assert max(fast_arrivals) < min(arrivals) + 2.0
            # Waiting for the limit used no attempt.
            succeeded = await cluster.wait_deliveries(hook, "succeeded", 40)
            assert [len(d["attempts"]) for d in succeeded] == [1] * 40
        assert metrics.RATE_LIMITED._value.get() > before
    finally:
        for other in [*limited[1:], fast]:
            await other.stop()


@pytest.fixture
def cluster_env(cluster_env: dict[str, str]) -> dict[str, str]:
    """A lane (2 x EDGESENSE_DELIVERY_PER_TARGET) that a limit of 1/s would
    take longer to drain than a lease (3 s) lasts; 4 send slots per project,
    out of 32, so that a project's memory share (2 x 32) is not what the
    tests measure: see README, Rate limits, on throttled lanes and memory."""
    return {
        **cluster_env,
        "EDGESENSE_DELIVERY_CONCURRENCY": "32",
        "EDGESENSE_DELIVERY_PER_PROJECT": "4",
        "EDGESENSE_DELIVERY_PER_TARGET": "4",
        "EDGESENSE_DELIVERY_LEASE_SECONDS": "3",
    }


async def test_a_limit_set_on_a_busy_webhook_never_outlasts_a_lease(
    cluster: Cluster, receiver: Receiver
) -> None:
    """The lane is full when the limit comes: what it holds beyond its new cap
    goes back to the outbox (no attempt used) instead of waiting in memory
    past its lease and being sent twice."""

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
    seen: set[str] = set()

    async def fail_first(request: web.Request, _n: int) -> web.StreamResponse:
        """Each delivery's first request fails; its retry succeeds."""
        delivery = request.headers["X-EdgeSense-Delivery"]
        first = delivery not in seen
        seen.add(delivery)
        return web.Response(status=500 if first else 200)

    receiver.behaviour = fail_first
    limited = await cluster.register(receiver.url, rateLimitPerSecond=4)
    await cluster.publish([reading(device=f"dev-{n}") for n in range(failures)])
    succeeded = await cluster.wait_deliveries(limited, "succeeded", failures, seconds=30)
    assert len(receiver.received) == 2 * failures
    assert_within_limit(receiver, 4)
    assert sorted(len(d["attempts"]) for d in succeeded) == [2] * failures
