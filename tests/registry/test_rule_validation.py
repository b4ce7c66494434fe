"""The rules of rule_validation: each check names its field; an update is
validated merged with the stored rule; what makes a new version."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from edgesense.common.errors import InvalidArgument
from edgesense.registry.rule_validation import (
    RuleInput,
    RuleSpec,
    validate_rule,
    validate_update,
)

GOOD = RuleInput(name="Boiler too hot", field="temperature", operator="gt", threshold=80.0)


def refused(given: RuleInput) -> str:
    with pytest.raises(InvalidArgument) as caught:
        validate_rule(given)
    return caught.value.field


def test_defaults() -> None:
    spec = validate_rule(GOOD)
    assert spec == RuleSpec(
        name="Boiler too hot",
        description="",
        field="temperature",
        operator="gt",
        threshold=80.0,
        threshold_high=None,
        clear_threshold=None,
        count=1,
        for_seconds=0,
        severity="warning",
        device_ids=(),
        gateway_ids=(),
        enabled=True,
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"name": "line\u2028break"}, "name"),
        ({"description": "d" * 1001}, "description"),
        ({"description": "bell\x07"}, "description"),
        ({"field": ""}, "field"),
        ({"field": "a..b"}, "field"),
        ({"field": "motor rpm"}, "field"),
        ({"field": "x" * 65}, "field"),
        ({"field": ".".join(["abcdefgh"] * 29)}, "field"),  # 260 characters
        ({"operator": ""}, "operator"),
        ({"operator": "above"}, "operator"),
        ({"operator": "GT"}, "operator"),
        ({"threshold": None}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"threshold": float("inf")}, "threshold"),
        ({"threshold_high": 90.0}, "thresholdHigh"),
        ({"operator": "inside"}, "thresholdHigh"),
        ({"operator": "outside", "threshold_high": 79.0}, "thresholdHigh"),
        ({"operator": "outside", "threshold_high": float("inf")}, "thresholdHigh"),
        ({"clear_threshold": 81.0}, "clearThreshold"),
        ({"operator": "gte", "clear_threshold": 80.5}, "clearThreshold"),
        ({"operator": "lt", "clear_threshold": 79.0}, "clearThreshold"),
        ({"operator": "lte", "clear_threshold": 79.9}, "clearThreshold"),
        ({"clear_threshold": float("-inf")}, "clearThreshold"),
        ({"operator": "inside", "threshold_high": 90.0, "clear_threshold": 80.0}, "clearThreshold"),
        ({"count": 0}, "count"),
        ({"count": -1}, "count"),
        ({"count": 10_001}, "count"),
        ({"for_seconds": -1}, "forSeconds"),
        ({"for_seconds": 604_801}, "forSeconds"),
        ({"severity": "fatal"}, "severity"),
        ({"device_ids": ["d"] * 2}, "deviceIds"),
        ({"device_ids": [f"d{n}" for n in range(1001)]}, "deviceIds"),
        ({"device_ids": ["no spaces"]}, "deviceIds"),
        ({"device_ids": ["x" * 129]}, "deviceIds"),
        ({"gateway_ids": ["g", "g"]}, "gatewayIds"),
        ({"gateway_ids": [f"g{n}" for n in range(1001)]}, "gatewayIds"),
        ({"gateway_ids": ["-starts-with-a-dash"]}, "gatewayIds"),
    ],
)
def test_each_bad_field_is_named(change: dict[str, Any], field: str) -> None:
    assert refused(replace(GOOD, **change)) == field


@pytest.mark.parametrize(
    "change",
    [
        {"name": "n" * 200, "description": "d" * 1000, "count": 10_000},
        {"description": "two\nlines\tand a tab"},
        {"field": "motor.rpm_1-a"},
        {"field": ".".join(["x" * 64] * 3)},
        {"operator": "gte", "clear_threshold": 80.0},
        {"operator": "lt", "clear_threshold": 85.0},
        {"operator": "lte", "clear_threshold": 80.0},
        {"operator": "inside", "threshold_high": 80.0},  # a one-point range
        {"operator": "outside", "threshold_high": 1e300},
        {"for_seconds": 604_800, "severity": "critical"},
        {"device_ids": [f"d{n}" for n in range(1000)], "gateway_ids": ["gw-1", "gw:2"]},
        {"enabled": False},
    ],
)
def test_bounds_are_inclusive(change: dict[str, Any]) -> None:
    spec = validate_rule(replace(GOOD, **change))
    for name, value in change.items():
        expected = tuple(value) if isinstance(value, list) else value
        assert getattr(spec, name) == expected


STORED = validate_rule(replace(GOOD, clear_threshold=75.0, device_ids=["a", "b"], count=3))


def updated(paths: list[str], **given: Any) -> RuleSpec:
    return validate_update(STORED, paths, RuleInput(**given))


def test_an_update_changes_the_named_fields_only() -> None:
    spec = updated(["threshold"], threshold=90.0, name="ignored: not in the mask")
    assert spec == replace(STORED, threshold=90.0)
    assert updated(["*"], **{**vars(GOOD), "count": 2}) == replace(validate_rule(GOOD), count=2)


def test_a_named_field_left_out_takes_its_default() -> None:
    spec = updated(["count", "severity", "clear_threshold", "enabled", "device_ids"])
    assert (spec.count, spec.severity, spec.clear_threshold, spec.enabled, spec.device_ids) == (
        1,
        "warning",
        None,
        True,
        (),
    )
    with pytest.raises(InvalidArgument) as caught:
        updated(["threshold"])  # no default: required
    assert caught.value.field == "threshold"


@pytest.mark.parametrize(
    ("paths", "given", "field"),
    [
        ([], {}, "updateMask"),
        (["rule_id"], {}, "updateMask"),
        (["thresholdHigh"], {}, "updateMask"),  # proto names only, as gRPC's masks are
        # The merged rule is checked: each of these is fine alone.
        (["operator"], {"operator": "inside"}, "thresholdHigh"),
        (["operator"], {"operator": "lt"}, "clearThreshold"),  # 75 is below 80
        (["threshold"], {"threshold": 70.0}, "clearThreshold"),  # 75 is now above it
        (["clear_threshold"], {"clear_threshold": 85.0}, "clearThreshold"),
        (
            ["operator", "threshold_high"],
            {"operator": "gt", "threshold_high": 1.0},
            "thresholdHigh",
        ),
        (["name"], {"name": ""}, "name"),
    ],
)
def test_an_update_is_validated_merged(paths: list[str], given: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        updated(paths, **given)
    assert caught.value.field == field


def test_a_new_operator_drops_the_stored_values_it_does_not_take() -> None:
    ranged = updated(["operator", "threshold_high"], operator="outside", threshold_high=90.0)
    assert (ranged.threshold_high, ranged.clear_threshold) == (90.0, None)
    back = validate_update(ranged, ["operator"], RuleInput(operator="gte"))
    assert (back.operator, back.threshold_high, back.clear_threshold) == ("gte", None, None)
    # ...but a value the update itself sets is checked, not dropped.
    with pytest.raises(InvalidArgument) as caught:
        validate_update(
            ranged, ["operator", "threshold_high"], RuleInput(operator="gt", threshold_high=95.0)
        )
    assert caught.value.field == "thresholdHigh"


@pytest.mark.parametrize(
    ("paths", "given", "new_version"),
    [
        (["threshold"], {"threshold": 81.0}, True),
        (["threshold"], {"threshold": 80.0}, False),  # the same value
        (["field"], {"field": "motor.temperature"}, True),
        (["count"], {"count": 4}, True),
        (["for_seconds"], {"for_seconds": 60}, True),
        (["clear_threshold"], {"clear_threshold": 70.0}, True),
        (["clear_threshold"], {"clear_threshold": 80.0}, True),  # was 75
        (["device_ids"], {"device_ids": ["b", "a"]}, False),  # the same devices
        (["device_ids"], {"device_ids": ["a"]}, True),
        (["gateway_ids"], {"gateway_ids": ["gw-1"]}, True),
        (["name"], {"name": "Renamed"}, False),
        (["description"], {"description": "why"}, False),
        (["severity"], {"severity": "critical"}, False),
        (["enabled"], {"enabled": False}, True),  # delivery compares versions
        (["enabled"], {"enabled": True}, False),  # already enabled
    ],
)
def test_what_changes_the_condition(
    paths: list[str], given: dict[str, Any], new_version: bool
) -> None:
    spec = updated(paths, **given)
    assert (spec.condition() != STORED.condition()) is new_version


def test_an_unset_clear_threshold_is_the_threshold() -> None:
    unset = validate_rule(GOOD)
    assert unset.condition() == replace(unset, clear_threshold=80.0).condition()
    assert unset.condition() != replace(unset, clear_threshold=79.0).condition()
