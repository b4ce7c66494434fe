"""The rate limiter: a burst of one second's worth goes at once, a token
comes back a second after its request ended, and so no window of one second
at the receiver holds more than `rate` requests, however long they take."""

from __future__ import annotations

import heapq
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesense.delivery.claim.ratelimit import PRUNE_EVERY, RateLimiter


def test_a_burst_of_one_seconds_worth_goes_at_once() -> None:
    limiter = RateLimiter()
    assert [limiter.take("w", 3, 100.0) for _ in range(3)] == [100.0] * 3
    # Every token is out with a request under way: no time to try again yet.
    assert limiter.take("w", 3, 100.0) == math.inf
    limiter.give_back("w", 100.2)
    assert limiter.take("w", 3, 100.5) == 101.2  # a second after that request ended
    assert limiter.take("w", 3, 101.2) == 101.2  # taken
    # Another webhook has its own bucket.
    assert limiter.take("other", 3, 100.0) == 100.0


def test_a_lowered_limit_applies_to_the_next_request() -> None:
    limiter = RateLimiter()
    for _ in range(5):
        limiter.take("w", 10, 0.0)
    for _ in range(5):
        limiter.give_back("w", 0.1)
    assert limiter.take("w", 2, 0.5) == 1.1
    assert limiter.take("w", 2, 1.1) == 1.1


def test_misuse_is_refused() -> None:
    limiter = RateLimiter()
    with pytest.raises(ValueError, match="at least 1"):
        limiter.take("w", 0, 0.0)
    with pytest.raises(ValueError, match="no token out"):
        limiter.give_back("w", 0.0)


def test_webhooks_with_full_buckets_are_forgotten() -> None:
    limiter = RateLimiter()
    limiter.take("idle", 1, 0.0)
    limiter.give_back("idle", 0.0)
    limiter.take("busy", 1, 0.0)  # never given back: still out
    for n in range(PRUNE_EVERY):
        limiter.take(f"other-{n % 2}", 10_000, 5.0)
    assert len(limiter) == 3  # busy and the two others


@settings(max_examples=300, deadline=None)
@given(
    rate=st.integers(1, 8),
    requests=st.lists(
        st.tuples(
            st.floats(0, 0.3, allow_nan=False),  # when it wants to go, after the previous
            st.floats(0, 2.0, allow_nan=False),  # how long it takes
            st.floats(0, 1, allow_nan=False),  # when in that time the receiver sees it
        ),
        min_size=1,
        max_size=80,
    ),
)
def test_no_second_at_the_receiver_holds_more_than_the_rate(
    rate: int, requests: list[tuple[float, float, float]]
) -> None:
    """Plays the dispatcher: requests wait for a token, run for their
    duration, give it back; the receiver sees each somewhere in between."""
    limiter = RateLimiter()
    now, arrivals = 0.0, []
    running: list[float] = []  # a heap of the ends of requests under way
    for gap, duration, seen in requests:
        now += gap
        while True:
            while running and running[0] <= now:
                limiter.give_back("w", heapq.heappop(running))
            retry_at = limiter.take("w", rate, now)
            if retry_at <= now:
                break
            now = min(retry_at, running[0]) if running else retry_at
            assert now < math.inf
        heapq.heappush(running, now + duration)
        arrivals.append(now + seen * duration)
    arrivals.sort()
    for first, last in zip(arrivals, arrivals[rate:], strict=False):
        assert last - first >= 1.0 - 1e-9
