"""The per-webhook circuit breaker (pure logic)."""

from __future__ import annotations

from edgesense.delivery.claim.breaker import Breaker


def test_opens_after_consecutive_failures_and_pauses() -> None:
    breaker = Breaker(threshold=3, pause_seconds=10)
    for _ in range(2):
        assert breaker.record("w", False, 100) is None
    assert breaker.open_until("w", 100) is None
    assert breaker.record("w", False, 100) == 110  # it opens, until then
    assert breaker.open_until("w", 101) == 110
    assert breaker.record("w", False, 102) is None  # an attempt that was in flight
    assert breaker.open_until("w", 103) == 110
    assert breaker.paused(101) == ["w"]
    assert breaker.open_until("w", 110) is None  # the pause is over
    assert breaker.paused(111) == []


def test_a_success_closes_it_and_a_failed_probe_reopens_it() -> None:
    breaker = Breaker(threshold=3, pause_seconds=10)
    for _ in range(3):
        breaker.record("w", False, 0)
    assert breaker.open_until("w", 20) is None
    assert breaker.record("w", False, 20) == 30  # the probe after the pause fails
    assert breaker.open_until("w", 21) == 30
    breaker.record("w", True, 31)
    breaker.record("w", False, 31)
    assert breaker.open_until("w", 31) is None  # counting starts again


def test_webhooks_are_independent() -> None:
    breaker = Breaker(threshold=1, pause_seconds=5)
    breaker.record("bad", False, 0)
    breaker.record("good", True, 0)
    assert breaker.paused(1) == ["bad"]
