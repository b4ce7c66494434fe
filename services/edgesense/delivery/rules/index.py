"""The rules delivery evaluates, by project and by the reading member they watch.

Fed by the registry's WatchRules stream (`link`); read by the acceptor for
every reading it stores. A reading is judged only against the enabled rules
of its project whose field's first segment is one of its members and whose
deviceIds and gatewayIds let it through: a project's other rules are
never looked at. Pure: no I/O.
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


class RuleIndex:
    def __init__(self) -> None:
        self._rules: dict[str, Rule] = {}
        # project -> first segment of the field -> enabled rules watching it
        self._watching: dict[str, dict[str, list[Rule]]] = {}

    def __len__(self) -> int:
        return len(self._rules)

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
        watching: dict[str, dict[str, list[Rule]]] = {}
        for rule in self._rules.values():
            if rule.enabled:
                by_member = watching.setdefault(rule.project_id, {})
                by_member.setdefault(rule.path[0], []).append(rule)
        self._watching = watching

    def has_rules(self, project_id: str) -> bool:
        return project_id in self._watching

    def observe(self, event: events_pb2.Event, at: float) -> list[Observation]:
        """The rules of `event`'s project that judge this reading, each with
        the reading's number at its field (rules it has no number for left out)."""
        by_member = self._watching.get(event.project_id)
        if by_member is None:
            return []
        values = event.readings.values
        members = values.fields
        found: list[Observation] = []
        # Whichever is smaller: the reading's members or the watched ones.
        if len(members) < len(by_member):
            candidates = [by_member[m] for m in members if m in by_member]
        else:
            candidates = [rules for member, rules in by_member.items() if member in members]
        gateway_id, device_id = event.gateway_id, event.device_id
        for rules in candidates:
            for rule in rules:
                if not rule.applies_to(gateway_id, device_id):
                    continue
                value = number_at(values, rule.path)
                if value is not None:
                    found.append(
                        Observation(rule, event.event_id, gateway_id, device_id, at, value)
                    )
        return found
