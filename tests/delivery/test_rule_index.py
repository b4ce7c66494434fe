"""The rule index (delivery/rules/index.py), pure: which rules judge a
reading, and the reading's time they judge it at."""

from __future__ import annotations

from typing import Any

from edgesense.common.thresholds import Rule
from edgesense.delivery.rules.index import MAX_AHEAD_SECONDS, RuleIndex, reading_time
from edgesense.v1 import events_pb2
from tests.delivery.conftest import make_rule


def rule(rule_id: str, **changes: Any) -> Rule:
    return make_rule(rule_id=rule_id, severity="warning", **changes)


def reading(
    device: str = "d1", gateway: str = "gw-1", project: str = "p", **values: Any
) -> events_pb2.Event:
    event = events_pb2.Event(
        event_id="evt_1", project_id=project, gateway_id=gateway, device_id=device
    )
    event.timestamp.FromSeconds(1000)
    event.received_at.FromSeconds(1000)
    event.readings.values.update(values or {"temperature": 90})
    return event


def test_a_reading_meets_only_the_rules_on_its_members_devices_and_gateways() -> None:
    index = RuleIndex()
    index.replace(
        [
            rule("rule_all"),
            rule("rule_d1", device_ids=frozenset({"d1", "d9"})),
            rule("rule_d2", device_ids=frozenset({"d2"})),
            rule("rule_gw2", gateway_ids=frozenset({"gw-2"})),
            rule("rule_nested", field="motor.rpm"),
            rule("rule_off", enabled=False),
            rule("rule_other_project", project_id="q"),
        ]
    )
    seen = index.observe(reading(temperature=90, motor={"rpm": 5}))
    assert sorted(o.rule.rule_id for o in seen) == ["rule_all", "rule_d1", "rule_nested"]
    assert {o.rule.rule_id: o.value for o in seen}["rule_nested"] == 5
    seen = index.observe(reading(device="d2", gateway="gw-2"))
    assert sorted(o.rule.rule_id for o in seen) == ["rule_all", "rule_d2", "rule_gw2"]
    assert index.observe(reading(project="r")) == []
    assert not index.has_rules("r")
    assert index.has_rules("q")


def test_changes_rebuild_what_readings_meet() -> None:
    index = RuleIndex()
    index.replace([rule("rule_a")])
    assert index.upsert(rule("rule_a", enabled=False)) is not None
    assert index.observe(reading()) == []
    assert not index.has_rules("p")
    index.upsert(rule("rule_b", device_ids=frozenset({"d1"})))
    assert [o.rule.rule_id for o in index.observe(reading())] == ["rule_b"]
    assert index.remove("rule_b") is not None
    assert index.remove("rule_b") is None
    assert index.observe(reading()) == []


def test_a_readings_time_is_the_gateways_unless_far_ahead_of_its_receipt() -> None:
    event = reading()
    event.timestamp.FromSeconds(500)  # buffered, sent late: its own time counts
    assert reading_time(event) == 500
    event.timestamp.FromSeconds(1000 + 10)  # a clock a little ahead
    assert reading_time(event) == 1010
    event.timestamp.FromSeconds(253_402_300_799)  # year 9999: a wrong clock
    assert reading_time(event) == 1000 + MAX_AHEAD_SECONDS
    event.ClearField("timestamp")
    assert reading_time(event) == 1000
