"""The rules delivery evaluates, by project and by the reading member they watch.

Fed by the registry's WatchRules stream (`link`); read by the acceptor for
every reading it stores. A reading is judged only against the enabled rules
of its project whose field's first segment is one of its members and that
take its device (the rules without deviceIds, and those listing it): no other
rule of the project is looked at; their gatewayIds are checked then. Pure:
no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from edgesense.common.thresholds import Rule, number_at
from edgesense.v1 import events_pb2


class Observation(NamedTuple):
    """One reading's value for one rule: what `thresholds.judge` takes."""

    rule: Rule
    event_id: str  # the reading's event
    gateway_id: str
    device_id: str
    at: float  # the reading's own time
    value: float


# A reading's time is the one its message carried; one more than this ahead
# of the bridge's receipt is taken as the receipt plus this (a wrong clock:
# far ahead, every later reading would look older and change nothing).
MAX_AHEAD_SECONDS = 300.0


def reading_time(event: events_pb2.Event) -> float:
    """A reading's own time, as its (rule, device) states follow it: the
    timestamp its message carried, at most MAX_AHEAD_SECONDS past the
    bridge's receipt (the receipt when the message carried none)."""
    received = event.received_at.seconds + event.received_at.nanos / 1e9
    if not event.HasField("timestamp"):
        return received
    at = event.timestamp.seconds + event.timestamp.nanos / 1e9
    if event.HasField("received_at"):
        return min(at, received + MAX_AHEAD_SECONDS)
    return at


class Watching(NamedTuple):
    """A project's enabled rules on one reading member."""

    any_device: list[Rule]  # rules without deviceIds
    by_device: dict[str, list[Rule]]  # the others, under each of their devices


class RuleIndex:
    def __init__(self) -> None:
        self._rules: dict[str, Rule] = {}
        # project -> first segment of the field -> its rules
        self._watching: dict[str, dict[str, Watching]] = {}

    def get(self, rule_id: str) -> Rule | None:
        return self._rules.get(rule_id)

    def rules(self) -> list[Rule]:
        return list(self._rules.values())

    def replace(self, rules: Iterable[Rule]) -> None:
        self._rules = {rule.rule_id: rule for rule in rules}
        self._rebuild()

    def upsert(self, rule: Rule) -> Rule | None:
        """Add or replace `rule`; returns the version it replaced."""
        old = self._rules.get(rule.rule_id)
        self._rules[rule.rule_id] = rule
        self._rebuild()
        return old

    def remove(self, rule_id: str) -> Rule | None:
        old = self._rules.pop(rule_id, None)
        if old is not None:
            self._rebuild()
        return old

    def _rebuild(self) -> None:
        # Rules change rarely (a person edits them): rebuilding beats keeping
        # the nested lists right on every change.
        watching: dict[str, dict[str, Watching]] = {}
        for rule in self._rules.values():
            if not rule.enabled:
                continue
            by_member = watching.setdefault(rule.project_id, {})
            entry = by_member.setdefault(rule.path[0], Watching([], {}))
            if not rule.device_ids:
                entry.any_device.append(rule)
            for device_id in rule.device_ids:
                entry.by_device.setdefault(device_id, []).append(rule)
        self._watching = watching

    def has_rules(self, project_id: str) -> bool:
        return project_id in self._watching

    def observe(self, event: events_pb2.Event) -> list[Observation]:
        """The rules of `event`'s project that judge this reading, each with
        the reading's number at its field (rules it has no number for left
        out). Looks only at the rules on the reading's members that take its
        device: those of every device, and those listing it."""
        by_member = self._watching.get(event.project_id)
        if by_member is None:
            return []
        values = event.readings.values
        members = values.fields
        # Whichever is smaller: the reading's members or the watched ones.
        if len(members) < len(by_member):
            entries = [by_member[m] for m in members if m in by_member]
        else:
            entries = [entry for member, entry in by_member.items() if member in members]
        gateway_id, device_id = event.gateway_id, event.device_id
        at: float | None = None  # the reading's time, once a rule judges it
        found: list[Observation] = []
        for entry in entries:
            for rules in (entry.any_device, entry.by_device.get(device_id, ())):
                for rule in rules:
                    if rule.gateway_ids and gateway_id not in rule.gateway_ids:
                        continue
                    value = number_at(values, rule.path)
                    if value is not None:
                        if at is None:
                            at = reading_time(event)
                        found.append(
                            Observation(rule, event.event_id, gateway_id, device_id, at, value)
                        )
        return found
