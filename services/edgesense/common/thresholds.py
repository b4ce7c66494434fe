"""Threshold alert rules: what a rule is, and how one reading moves the state
of one (rule, device) pair. Pure: no I/O, no clock (times are the readings'
own, as unix seconds).

The registry validates rules with the constants here; delivery judges
readings with `judge`, inside the transaction that stores them, so a
transition and the device.alert event it raises are written together.

A pair's state follows the newest reading: one older than the last reading
judged for the pair (by its timestamp) changes nothing. Readings with the
same timestamp are judged in the order they were stored. It follows the
newest version of the rule too: a process that still knows an older one
(its rule stream lags) changes nothing in a state a newer one wrote.

The phases:

- OK: not breaching (or not since the last clear).
- BREACHING: breaching, but not yet `count` readings in a row or not yet
  for `for_seconds` (from the first of them to the latest).
- ACTIVE: triggered; stays so until a reading clears it. For gt/gte (lt/lte)
  a reading clears it when it no longer breaches and is at or below (at or
  above) the clear threshold; for inside/outside when it no longer breaches.
  A reading between the two thresholds (hysteresis) changes nothing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from google.protobuf import struct_pb2

GT, GTE, LT, LTE, OUTSIDE, INSIDE = "gt", "gte", "lt", "lte", "outside", "inside"
OPERATORS = (GT, GTE, LT, LTE, OUTSIDE, INSIDE)
RANGE_OPERATORS = frozenset({OUTSIDE, INSIDE})
# An upper bound (the reading above the threshold breaches): clear at or below.
UPPER_OPERATORS = frozenset({GT, GTE})
SEVERITIES = ("info", "warning", "critical")
DEFAULT_SEVERITY = "warning"

# A field is a dotted path of segments of these characters.
MAX_FIELD_CHARS = 256
FIELD_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,64}")

OK, BREACHING, ACTIVE = "ok", "breaching", "active"
TRIGGERED, RESOLVED = "triggered", "resolved"
# Why an alert resolved.
CLEARED, RULE_DISABLED, RULE_DELETED = "cleared", "rule disabled", "rule deleted"
# Its rule's condition changed so that the rule no longer judges the
# alert's device (deviceIds, gatewayIds) or field.
RULE_CHANGED = "rule changed"
# The version a deleted rule's ended states take: above any a rule can have.
DELETED_VERSION = 2**31 - 1


@dataclass(frozen=True)
class Rule:
    """A rule as delivery evaluates it (from the registry's stream)."""

    rule_id: str
    project_id: str
    name: str
    field: str
    operator: str
    threshold: float
    threshold_high: float | None  # range operators only
    clear_threshold: float | None  # bound operators only; None: `threshold`
    count: int
    for_seconds: float
    severity: str
    device_ids: frozenset[str]
    gateway_ids: frozenset[str]
    enabled: bool
    version: int

    @cached_property
    def path(self) -> tuple[str, ...]:
        """`field` split at its dots (once: every reading the rule judges reads it)."""
        return tuple(self.field.split("."))

    def applies_to(self, gateway_id: str, device_id: str) -> bool:
        return (not self.device_ids or device_id in self.device_ids) and (
            not self.gateway_ids or gateway_id in self.gateway_ids
        )

    def breaches(self, value: float) -> bool:
        op, threshold = self.operator, self.threshold
        if op == GT:
            return value > threshold
        if op == GTE:
            return value >= threshold
        if op == LT:
            return value < threshold
        if op == LTE:
            return value <= threshold
        high = threshold if self.threshold_high is None else self.threshold_high
        inside = threshold <= value <= high
        return inside if op == INSIDE else not inside

    def clears(self, value: float) -> bool:
        """Whether `value` resolves an active alert of this rule."""
        if self.breaches(value):
            return False
        if self.operator in RANGE_OPERATORS:
            return True
        clear = self.threshold if self.clear_threshold is None else self.clear_threshold
        return value <= clear if self.operator in UPPER_OPERATORS else value >= clear


class State(NamedTuple):
    """One (rule, device) pair's state, as stored (rule_states)."""

    phase: str = OK
    streak: int = 0  # consecutive breaching readings
    since: float | None = None  # the first of them (the reading's time)
    last_at: float | None = None  # the newest reading judged
    alert_id: str | None = None  # the open alert, while ACTIVE
    version: int = 0  # the rule's version that judged last (it never goes back)


class Transition(NamedTuple):
    kind: str  # TRIGGERED or RESOLVED
    value: float
    at: float  # the reading's time
    since: float  # when the breach began


def judge(rule: Rule, state: State, value: float, at: float) -> tuple[State, Transition | None]:
    """The pair's state after a reading of `value` at `at`, and the
    transition it makes, if any. The new state's `alert_id` is left as it
    was: whoever stores a TRIGGERED transition sets it."""
    if state.last_at is not None and at < state.last_at:
        return state, None  # older than what the state already follows
    if state.version > rule.version:
        return state, None  # a newer version judged it: this judge is behind
    phase, streak, since = state.phase, state.streak, state.since
    if state.version < rule.version and phase == BREACHING:
        phase, streak, since = OK, 0, None  # a new condition counts again
    if phase == ACTIVE:
        if rule.clears(value):
            began = at if since is None else since
            return State(OK, 0, None, at, None, rule.version), Transition(
                RESOLVED, value, at, began
            )
        return State(ACTIVE, streak, since, at, state.alert_id, rule.version), None
    if not rule.breaches(value):
        return State(OK, 0, None, at, None, rule.version), None
    streak += 1
    since = at if since is None else since
    if streak >= rule.count and at - since >= rule.for_seconds:
        return State(ACTIVE, streak, since, at, None, rule.version), Transition(
            TRIGGERED, value, at, since
        )
    return State(BREACHING, streak, since, at, None, rule.version), None


def number_at(values: struct_pb2.Struct, path: tuple[str, ...]) -> float | None:
    """The number at `path` in a reading's payload; None when a member is
    missing or is not a (finite) number there (a boolean is not a number)."""
    fields = values.fields
    for segment in path[:-1]:
        member = fields.get(segment)
        if member is None or member.WhichOneof("kind") != "struct_value":
            return None
        fields = member.struct_value.fields
    member = fields.get(path[-1])
    if member is None or member.WhichOneof("kind") != "number_value":
        return None
    number = member.number_value
    return number if math.isfinite(number) else None


def field_problem(field: str) -> str | None:
    """Why `field` is not a valid dotted path, or None."""
    if not field:
        return "is required"
    if len(field) > MAX_FIELD_CHARS:
        return f"is longer than {MAX_FIELD_CHARS} characters"
    for segment in field.split("."):
        if not FIELD_SEGMENT.fullmatch(segment):
            return (
                "must be dot-separated names of 1 to 64 letters, digits, '_' or '-'"
                f" (not {segment!r})"
            )
    return None
