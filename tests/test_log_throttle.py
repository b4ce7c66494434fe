"""The log throttle on its own, with an injected clock."""

from __future__ import annotations

import logging

import pytest

from edgesense.common.log_throttle import LogThrottle, Permit, ThrottledLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_logged_first_then_once_per_interval_with_what_was_left_out() -> None:
    throttle = LogThrottle(interval=60, budget=100, window=60)
    assert throttle.admit("k", 0.0) == Permit(first=True)
    assert [throttle.admit("k", t) for t in (1.0, 30.0, 59.9)] == [None, None, None]
    assert throttle.admit("k", 60.0) == Permit(first=False, repeats=3)
    assert throttle.admit("k", 61.0) is None
    assert throttle.admit("k", 200.0) == Permit(first=False, repeats=1)
    assert throttle.admit("k", 300.0) == Permit(first=False, repeats=0)


def test_keys_are_throttled_independently() -> None:
    throttle = LogThrottle(interval=60, budget=100, window=60)
    assert throttle.admit(("bad_json", "t/1"), 0.0) == Permit(first=True)
    assert throttle.admit(("bad_json", "t/2"), 1.0) == Permit(first=True)
    assert throttle.admit(("bad_json", "t/1"), 2.0) is None
    assert throttle.admit(("empty", "t/1"), 3.0) == Permit(first=True)


def test_the_budget_bounds_lines_across_keys_and_reports_the_others() -> None:
    throttle = LogThrottle(interval=600, budget=3, window=60)
    permits = [throttle.admit(f"device-{n}", n * 0.01) for n in range(1000)]
    assert sum(p is not None for p in permits) == 3
    # The next window: the first line says how many distinct occurrences were left out.
    assert throttle.admit("device-new", 61.0) == Permit(first=True, others=997)
    assert throttle.admit("device-newer", 61.5) == Permit(first=True, others=0)


def test_a_known_key_over_the_budget_counts_as_its_own_repeat() -> None:
    throttle = LogThrottle(interval=10, budget=1, window=60)
    assert throttle.admit("a", 0.0) == Permit(first=True)
    assert throttle.admit("a", 20.0) is None  # its interval is over, the budget is not
    assert throttle.admit("a", 61.0) == Permit(first=False, repeats=1)


def test_memory_is_bounded_and_a_forgotten_key_is_new_again() -> None:
    throttle = LogThrottle(interval=600, budget=10_000, window=60, capacity=2)
    for key in ("a", "b", "c"):
        assert throttle.admit(key, 0.0) == Permit(first=True)
    assert throttle.admit("c", 1.0) is None
    assert throttle.admit("a", 1.0) == Permit(first=True)  # forgotten: the oldest


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="budget >= 1"):
        LogThrottle(budget=0)


def test_exceptions_have_one_traceback_then_one_line_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    log = ThrottledLog(logging.getLogger("t.throttle"), LogThrottle(60, 20, 60), clock)
    caplog.set_level(logging.WARNING, logger="t.throttle")
    for n in range(2000):
        try:
            raise ValueError(f"boom {n}")
        except ValueError:
            log.exception(("Publish", "ValueError"), "unexpected error in %s", "Publish")
        clock.now += 0.0625  # 2000 errors over 125 s (a step exact in binary)
    lines = [r for r in caplog.records if r.name == "t.throttle"]
    assert len(lines) == 3
    first, *later = lines
    assert first.exc_info is not None
    assert first.getMessage() == "unexpected error in Publish"
    assert [r.exc_info for r in later] == [None, None]
    assert [r.getMessage() for r in later] == [
        "unexpected error in Publish: ValueError('boom 960')"
        " [959 more like this since its last report]",
        "unexpected error in Publish: ValueError('boom 1920')"
        " [959 more like this since its last report]",
    ]


def test_warnings_say_what_the_budget_left_out(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = ThrottledLog(logging.getLogger("t.budget"), LogThrottle(600, 2, 60), clock)
    caplog.set_level(logging.WARNING, logger="t.budget")
    logged = [log.warning(("empty", f"d/{n}"), "rejected on %s", f"d/{n}") for n in range(50)]
    clock.now += 60
    assert log.warning(("empty", "d/x"), "rejected on %s", "d/x")
    assert logged.count(True) == 2
    assert [r.getMessage() for r in caplog.records] == [
        "rejected on d/0",
        "rejected on d/1",
        "rejected on d/x [48 others not logged (over 2 lines in 60 s)]",
    ]
