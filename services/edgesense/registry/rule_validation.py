"""Validation of an alert rule's creation and update: one function per field.

A field that fails raises InvalidArgument naming it by its JSON name (as
users wrote it: `thresholdHigh`, `forSeconds`), which the REST API answers
with 400. The meaning of operators and severities is common/thresholds.py's.

An update is checked as a whole: the stored rule with the fields the update
mask names replaced is validated as a creation would be, so an update that
makes the rule inconsistent (the operator becomes "inside" while the rule has
no `thresholdHigh`) fails naming the field that is missing or wrong. Two
stored values an update leaves alone are dropped instead when the new
operator does not take them: `thresholdHigh` when the operator becomes a
bound (gt, gte, lt, lte), `clearThreshold` when it becomes a range (outside,
inside). Refusing them would make every such change send a `null` as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from edgesense.common.errors import InvalidArgument
from edgesense.common.events import DEVICE_ID
from edgesense.common.textcheck import check_text
from edgesense.common.thresholds import (
    DEFAULT_SEVERITY,
    OPERATORS,
    RANGE_OPERATORS,
    SEVERITIES,
    UPPER_OPERATORS,
    field_problem,
)
from edgesense.registry.validation import MAX_DESCRIPTION_CHARS, MAX_DEVICE_IDS, named_fields

MAX_NAME_CHARS = 200
MAX_COUNT = 10_000
MAX_FOR_SECONDS = 604_800  # a week
MAX_GATEWAY_IDS = MAX_DEVICE_IDS

# The fields an update can change: UpdateRuleRequest.update_mask paths
# (RuleSpec's proto names), in the order a creation checks them.
UPDATABLE_FIELDS = (
    "name",
    "description",
    "field",
    "operator",
    "threshold",
    "threshold_high",
    "clear_threshold",
    "count",
    "for_seconds",
    "severity",
    "device_ids",
    "gateway_ids",
    "enabled",
)


@dataclass(frozen=True)
class RuleInput:
    """A RuleSpec as sent: None for an `optional` field left out."""

    name: str = ""
    description: str = ""
    field: str = ""
    operator: str = ""
    threshold: float | None = None
    threshold_high: float | None = None
    clear_threshold: float | None = None
    count: int | None = None
    for_seconds: int = 0
    severity: str = ""
    device_ids: Sequence[str] = ()
    gateway_ids: Sequence[str] = ()
    enabled: bool | None = None


@dataclass(frozen=True)
class RuleSpec:
    """A rule that passed validation: every default applied."""

    name: str
    description: str
    field: str
    operator: str
    threshold: float
    threshold_high: float | None  # "outside" and "inside" only
    clear_threshold: float | None  # bound operators only; None: `threshold`
    count: int
    for_seconds: int
    severity: str
    device_ids: tuple[str, ...]
    gateway_ids: tuple[str, ...]
    enabled: bool

    def condition(self) -> tuple[object, ...]:
        """What decides which readings breach and when an alert triggers or
        clears, and whether the rule judges at all: a change to it makes a
        new version (devices as sets: their order means nothing; an unset
        clear threshold is the threshold). Delivery compares versions: a
        device's breaches count again under a new one, and an alert raised
        under an older one ends if the rule now is disabled or no longer
        judges its device or field."""
        clear = self.clear_threshold
        if clear is None and self.operator not in RANGE_OPERATORS:
            clear = self.threshold
        return (
            self.field,
            self.operator,
            self.threshold,
            self.threshold_high,
            clear,
            self.count,
            self.for_seconds,
            frozenset(self.device_ids),
            frozenset(self.gateway_ids),
            self.enabled,
        )


def validate_rule(given: RuleInput) -> RuleSpec:
    """A new rule: every field checked, in RuleSpec's order."""
    operator = check_operator(given.operator)
    threshold = check_threshold(given.threshold)
    return RuleSpec(
        name=check_name(given.name),
        description=check_description(given.description),
        field=check_field(given.field),
        operator=operator,
        threshold=threshold,
        threshold_high=check_threshold_high(operator, threshold, given.threshold_high),
        clear_threshold=check_clear_threshold(operator, threshold, given.clear_threshold),
        count=check_count(given.count),
        for_seconds=check_for_seconds(given.for_seconds),
        severity=check_severity(given.severity),
        device_ids=check_device_ids(given.device_ids),
        gateway_ids=check_gateway_ids(given.gateway_ids),
        enabled=True if given.enabled is None else given.enabled,
    )


def validate_update(current: RuleSpec, paths: Sequence[str], given: RuleInput) -> RuleSpec:
    """`current` with the fields `paths` (an update mask) names taken from
    `given`, checked as a new rule is (see the module's docstring).

    An empty mask, or a path that names no updatable field, is refused naming
    `updateMask`; "*" names every field. A named field left out of `given`
    takes its default (`threshold` has none: it is then missing).
    """
    named = named_fields(paths, UPDATABLE_FIELDS)
    merged = RuleInput(
        **{name: getattr(given if name in named else current, name) for name in UPDATABLE_FIELDS}
    )
    if "operator" in named and given.operator != current.operator:
        if given.operator not in RANGE_OPERATORS and "threshold_high" not in named:
            merged = replace(merged, threshold_high=None)
        if given.operator in RANGE_OPERATORS and "clear_threshold" not in named:
            merged = replace(merged, clear_threshold=None)
    return validate_rule(merged)


def check_name(name: str) -> str:
    if not name.strip():
        raise InvalidArgument("name", "is required")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidArgument("name", f"is longer than {MAX_NAME_CHARS} characters")
    if not name.isprintable():
        raise InvalidArgument("name", "must be printable characters only (no line breaks)")
    return name


def check_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise InvalidArgument("description", f"is longer than {MAX_DESCRIPTION_CHARS} characters")
    check_text("description", description, free_text=True)
    return description


def check_field(field: str) -> str:
    problem = field_problem(field)
    if problem is not None:
        raise InvalidArgument("field", problem)
    return field


def check_operator(operator: str) -> str:
    if operator not in OPERATORS:
        shown = f"{operator[:20]!r} is not an operator" if operator else "is required"
        raise InvalidArgument("operator", f"{shown}; expected one of {', '.join(OPERATORS)}")
    return operator


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(name, f"must be a finite number, not {value}")
    return value


def check_threshold(threshold: float | None) -> float:
    if threshold is None:
        raise InvalidArgument("threshold", "is required (a number)")
    return _finite("threshold", threshold)


def check_threshold_high(operator: str, threshold: float, high: float | None) -> float | None:
    """Required by the range operators, at least `threshold`; refused by the others."""
    if operator not in RANGE_OPERATORS:
        if high is not None:
            raise InvalidArgument(
                "thresholdHigh",
                f"applies to the range operators (outside, inside) only; {operator!r} compares "
                "with threshold alone: leave it out",
            )
        return None
    if high is None:
        raise InvalidArgument(
            "thresholdHigh",
            f"is required by {operator!r}: the range is [threshold, thresholdHigh]",
        )
    _finite("thresholdHigh", high)
    if high < threshold:
        raise InvalidArgument(
            "thresholdHigh", f"is {high:g}, below threshold ({threshold:g}); it must be at least it"
        )
    return high


def check_clear_threshold(operator: str, threshold: float, clear: float | None) -> float | None:
    """For the bound operators only, and on the safe side of `threshold`:
    at or below it for gt/gte, at or above it for lt/lte."""
    if clear is None:
        return None
    if operator in RANGE_OPERATORS:
        raise InvalidArgument(
            "clearThreshold",
            f"applies to gt, gte, lt and lte only; an alert of {operator!r} resolves "
            "when a reading no longer breaches: leave it out",
        )
    _finite("clearThreshold", clear)
    if operator in UPPER_OPERATORS and clear > threshold:
        raise InvalidArgument(
            "clearThreshold",
            f"is {clear:g}, above threshold ({threshold:g}): for {operator!r} an alert "
            "clears at or below a value at or below the threshold",
        )
    if operator not in UPPER_OPERATORS and clear < threshold:
        raise InvalidArgument(
            "clearThreshold",
            f"is {clear:g}, below threshold ({threshold:g}): for {operator!r} an alert "
            "clears at or above a value at or above the threshold",
        )
    return clear


def check_count(count: int | None) -> int:
    if count is None:
        return 1
    if not 1 <= count <= MAX_COUNT:
        raise InvalidArgument(
            "count", f"is {count}; expected 1 to {MAX_COUNT} consecutive breaching readings"
        )
    return count


def check_for_seconds(seconds: int) -> int:
    if not 0 <= seconds <= MAX_FOR_SECONDS:
        raise InvalidArgument(
            "forSeconds", f"is {seconds}; expected 0 to {MAX_FOR_SECONDS} (a week)"
        )
    return seconds


def check_severity(severity: str) -> str:
    if not severity:
        return DEFAULT_SEVERITY
    if severity not in SEVERITIES:
        raise InvalidArgument(
            "severity",
            f"{severity[:20]!r} is not a severity; expected one of {', '.join(SEVERITIES)}",
        )
    return severity


def check_device_ids(device_ids: Sequence[str]) -> tuple[str, ...]:
    return _check_ids("deviceIds", device_ids, MAX_DEVICE_IDS)


def check_gateway_ids(gateway_ids: Sequence[str]) -> tuple[str, ...]:
    return _check_ids("gatewayIds", gateway_ids, MAX_GATEWAY_IDS)


def _check_ids(name: str, ids: Sequence[str], most: int) -> tuple[str, ...]:
    """Ids as webhooks' deviceIds are: at most `most`, no duplicates, each of DEVICE_ID."""
    listed = list(ids)
    if len(listed) > most:
        raise InvalidArgument(name, f"lists {len(listed)} ids; at most {most}")
    seen: set[str] = set()
    for item in listed:
        if item in seen:
            raise InvalidArgument(name, f"lists {item[:40]!r} twice")
        seen.add(item)
        if not DEVICE_ID.fullmatch(item):
            raise InvalidArgument(
                name, f"{item[:40]!r} is not an id (1-128 of A-Z a-z 0-9 . _ : -)"
            )
    return tuple(listed)
