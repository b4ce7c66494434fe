"""The threshold rules' transition table (common/thresholds.py), pure: each
operator, hysteresis, `count`, `for_seconds`, readings out of order, and a
new version of a rule."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from google.protobuf import struct_pb2

from edgesense.common.thresholds import (
    ACTIVE,
    BREACHING,
    OK,
    RESOLVED,
    TRIGGERED,
    Rule,
    State,
    field_problem,
    judge,
    number_at,
)
from tests.delivery.conftest import make_rule


def rule(operator: str = "gt", threshold: float = 80.0, **changes: Any) -> Rule:
    return make_rule(operator=operator, threshold=threshold, rule_id="rule_1", **changes)


def run(r: Rule, readings: list[tuple[float, float]]) -> tuple[State, list[str | None]]:
    """Judge (time, value) readings in order: the last state, and each
    reading's transition kind (None for none)."""
    state = State()
    kinds: list[str | None] = []
    for at, value in readings:
        state, transition = judge(r, state, value, at)
        if transition is not None and transition.kind == TRIGGERED:
            state = state._replace(alert_id="alr_x")  # as the store does
        kinds.append(None if transition is None else transition.kind)
    return state, kinds


# (operator, threshold, threshold_high, values, expected transitions)
TABLE = [
    ("gt", 80, None, [79, 80, 81, 90, 80, 79], [None, None, TRIGGERED, None, RESOLVED, None]),
    ("gte", 80, None, [79, 80, 81, 80, 79.9], [None, TRIGGERED, None, None, RESOLVED]),
    ("lt", 10, None, [11, 10, 9, 5, 10, 11], [None, None, TRIGGERED, None, RESOLVED, None]),
    ("lte", 10, None, [11, 10, 9, 10.1], [None, TRIGGERED, None, RESOLVED]),
    (
        "outside",
        10,
        20,
        [15, 10, 20, 21, 25, 20, 9],
        [None, None, None, TRIGGERED, None, RESOLVED, TRIGGERED],
    ),
    ("inside", 10, 20, [5, 10, 15, 21, 20], [None, TRIGGERED, None, RESOLVED, TRIGGERED]),
]


@pytest.mark.parametrize(("operator", "low", "high", "values", "expected"), TABLE)
def test_each_operator_triggers_and_resolves_at_its_bounds(
    operator: str, low: float, high: float | None, values: list[float], expected: list[str | None]
) -> None:
    r = rule(operator, low, threshold_high=high)
    _, kinds = run(r, [(float(t), float(v)) for t, v in enumerate(values)])
    assert kinds == expected


def test_hysteresis_keeps_the_alert_until_the_clear_threshold() -> None:
    r = rule("gt", 80, clear_threshold=70)
    state, kinds = run(r, [(0, 85), (1, 79), (2, 71), (3, 85), (4, 70), (5, 75)])
    # 79 and 71 are below the threshold but above 70: still active; 70 clears.
    assert kinds == [TRIGGERED, None, None, None, RESOLVED, None]
    assert state.phase == OK


def test_hysteresis_for_a_lower_bound() -> None:
    r = rule("lt", 10, clear_threshold=15)
    _, kinds = run(r, [(0, 5), (1, 12), (2, 14.9), (3, 15)])
    assert kinds == [TRIGGERED, None, None, RESOLVED]


def test_count_needs_consecutive_breaches() -> None:
    r = rule(count=3)
    _, kinds = run(r, [(0, 90), (1, 90), (2, 70), (3, 90), (4, 91), (5, 92), (6, 93)])
    # The third breach in a row triggers; the dip at t=2 starts the count again.
    assert kinds == [None, None, None, None, None, TRIGGERED, None]


def test_for_seconds_counts_by_the_readings_own_time() -> None:
    r = rule(for_seconds=60)
    state, kinds = run(r, [(1000, 90), (1030, 90), (1059, 95), (1060, 91)])
    assert kinds == [None, None, None, TRIGGERED]
    assert state.since == 1000


def test_count_and_for_seconds_both_needed() -> None:
    r = rule(count=2, for_seconds=10)
    _, kinds = run(r, [(0, 90), (20, 90)])
    assert kinds == [None, TRIGGERED]
    _, kinds = run(r, [(0, 90), (5, 90), (9, 90), (10, 90)])
    assert kinds == [None, None, None, TRIGGERED]


def test_transition_reports_when_the_breach_began() -> None:
    r = rule(count=2)
    state = State()
    state, first = judge(r, state, 85, 100.0)
    assert first is None
    assert state.phase == BREACHING
    state, second = judge(r, state, 86, 105.0)
    assert second is not None
    assert (second.kind, second.since, second.value, second.at) == (
        TRIGGERED,
        100.0,
        86,
        105.0,
    )
    state = state._replace(alert_id="alr_1")
    state, third = judge(r, state, 70, 110.0)
    assert third is not None
    assert (third.kind, third.since, third.at) == (RESOLVED, 100.0, 110.0)
    assert state == State(OK, 0, None, 110.0, None, 1)


def test_a_reading_older_than_the_newest_changes_nothing() -> None:
    r = rule()
    state, kinds = run(r, [(10, 90)])
    assert kinds == [TRIGGERED]
    assert state.phase == ACTIVE
    # An older reading that would clear arrives late: ignored.
    later, transition = judge(r, state, 50, 5.0)
    assert (later, transition) == (state, None)
    # The same time as the newest is judged (a second reading of that moment).
    later, transition = judge(r, state, 50, 10.0)
    assert transition is not None
    assert transition.kind == RESOLVED


def test_out_of_order_readings_never_trigger_from_the_past() -> None:
    r = rule(count=2)
    # Newest first: 30 (ok), then 10 and 20 breaching arrive late.
    _, kinds = run(r, [(30, 50), (10, 90), (20, 90), (31, 90), (32, 90)])
    assert kinds == [None, None, None, None, TRIGGERED]


def test_a_new_version_counts_breaches_again_but_keeps_an_active_alert() -> None:
    r1 = rule(count=2)
    state, _ = run(r1, [(0, 90)])
    assert state.phase == BREACHING
    assert state.version == 1
    r2 = dataclasses.replace(r1, version=2)
    state, transition = judge(r2, state, 90, 1.0)
    assert transition is None
    assert state.streak == 1
    state, transition = judge(r2, state, 90, 2.0)
    assert transition is not None
    assert transition.kind == TRIGGERED
    state = state._replace(alert_id="alr_1")
    r3 = dataclasses.replace(r2, version=3, threshold=95)
    state, transition = judge(r3, state, 94, 3.0)  # clears under the new threshold
    assert transition is not None
    assert transition.kind == RESOLVED


def test_a_rule_older_than_the_state_changes_nothing() -> None:
    """A process whose rule stream lags judges with an older version: it
    leaves alone a state that a newer version wrote."""
    newer = rule(threshold=50, version=2)
    state, transition = judge(newer, State(), 60, 1.0)
    assert transition is not None
    assert transition.kind == TRIGGERED
    older = rule(threshold=80, version=1)
    assert judge(older, state, 60, 2.0) == (state, None)  # would clear under v1


def test_number_at_follows_dotted_paths_and_only_takes_numbers() -> None:
    values = struct_pb2.Struct()
    values.update(
        {"temperature": 81.5, "motor": {"rpm": 1200, "on": True}, "label": "x", "none": None}
    )
    assert number_at(values, ("temperature",)) == 81.5
    assert number_at(values, ("motor", "rpm")) == 1200
    for missing in [("motor", "on"), ("label",), ("none",), ("pressure",), ("motor",)]:
        assert number_at(values, missing) is None, missing
    assert number_at(values, ("temperature", "deeper")) is None
    values.fields["nan"].number_value = float("nan")
    assert number_at(values, ("nan",)) is None


@pytest.mark.parametrize(
    ("field", "problem"),
    [
        ("temperature", None),
        ("motor.rpm", None),
        ("a-b_c.D9", None),
        ("", "is required"),
        ("a..b", "not ''"),
        ("a b", "not 'a b'"),
        ("x" * 257, "longer than 256"),
    ],
)
def test_field_paths(field: str, problem: str | None) -> None:
    found = field_problem(field)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found
