"""What judging a stored batch's readings writes, planned without I/O.

The outbox calls `plan_alerts` inside the transaction that stores the
readings, with the (rule, device) states it read (and, on PostgreSQL,
locked) in that transaction: the states it returns, the alerts it opens or
closes, and the device.alert events it raises (with their deliveries) are
written by that same transaction. So a transition is stored exactly when
the reading that made it is: a crash loses both or neither, and a reading
already stored (a duplicate) is never judged again. `plan_endings` does the
same for the active alerts of rules that were disabled or deleted.

The webhooks each alert goes to (`AlertTarget`) are chosen before the
transaction, by the caller, from the webhook index: this module only reads
what it is given (it runs on SQLite's writer thread).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from google.protobuf import struct_pb2, timestamp_pb2

from edgesense.common.ids import new_id
from edgesense.common.thresholds import (
    CLEARED,
    RANGE_OPERATORS,
    RESOLVED,
    RULE_CHANGED,
    TRIGGERED,
    State,
    Transition,
    judge,
)
from edgesense.delivery.rules.index import Observation
from edgesense.delivery.send.payload import rfc3339
from edgesense.delivery.store.rows import PENDING, NewDelivery, StoredEvent
from edgesense.v1 import events_pb2

ALERT_EVENT = "device.alert"
Pair = tuple[str, str]  # (rule id, device id): a state's key
Device = tuple[str, str]  # (project id, device id): whose webhooks an alert goes to


class AlertTarget(NamedTuple):
    """A webhook a device's alerts go to, and how its deliveries start out."""

    webhook_id: str
    status: str  # PENDING, or HELD while the webhook is disabled
    status_reason: str | None
    not_before: float  # later than now while the webhook's sends are paused
    ordered: bool


Targets = Mapping[Device, Sequence[AlertTarget]]


class StateRow(NamedTuple):
    """A rule_states row, in UPSERT_STATE's parameter order."""

    rule_id: str
    device_id: str
    project_id: str
    phase: str
    streak: int
    since: float | None
    last_at: float | None
    alert_id: str | None
    version: int


class AlertRow(NamedTuple):
    """An alerts row as opened (INSERT_ALERT's parameter order) and as read back."""

    alert_id: str
    project_id: str
    rule_id: str
    rule_name: str
    rule_version: int  # the version it triggered under
    device_id: str
    gateway_id: str
    severity: str
    field: str
    operator: str
    threshold: float
    threshold_high: float | None
    clear_threshold: float | None
    value: float
    since: float
    triggered_at: float
    triggered_event_id: str
    updated_at: float


class ActiveAlert(NamedTuple):
    """What deciding whether an active alert ends reads of it (Outbox.active_alerts)."""

    seq: int
    alert_id: str
    rule_id: str
    rule_version: int  # the version it triggered under
    project_id: str
    device_id: str
    gateway_id: str
    field: str


class Ending(NamedTuple):
    """Why an active alert ends, and the rule version that says so (its
    state takes it: a process that knows only an older one changes nothing
    there; DELETED_VERSION for a deleted rule)."""

    reason: str
    version: int


class Closing(NamedTuple):
    """CLOSE_ALERT's parameters: an active alert resolved."""

    resolved_at: float
    resolved_value: float | None
    resolved_reason: str
    resolved_event_id: str
    updated_at: float
    alert_id: str


# The statements take and give the rows' fields in the rows' order (the
# column lists are made from the rows' fields, constants: no user text). The
# alerts' states are the phase and transition names: 'active', 'resolved'.
ALERT_COLUMNS = ", ".join(AlertRow._fields)
STATE_COLUMNS = ", ".join(("rule_id", "device_id", *State._fields))
_INSERT_ALERT = "INSERT INTO alerts ({columns}, state) VALUES ({marks}, 'active')"
INSERT_ALERT = _INSERT_ALERT.format(
    columns=ALERT_COLUMNS, marks=", ".join("?" * len(AlertRow._fields))
)
# Only an alert still active is closed: two processes ending the same rule's
# alerts close each once.
CLOSE_ALERT = (
    "UPDATE alerts SET state = 'resolved', resolved_at = ?, resolved_value = ?,"
    " resolved_reason = ?, resolved_event_id = ?, updated_at = ?"
    " WHERE alert_id = ? AND state = 'active'"
)
DELETE_RESOLVED = (
    "DELETE FROM alerts WHERE seq IN (SELECT seq FROM alerts WHERE resolved_at < ?"
    " ORDER BY resolved_at LIMIT ?)"
)
# A state is reset in place, never deleted: a transaction storing a reading
# of the pair may be waiting for its lock, and must find the row then.
# (`{greatest}`: the engine's two-argument maximum: max on SQLite, GREATEST on PostgreSQL.)
RESET_STATE = (
    "UPDATE rule_states SET phase = 'ok', streak = 0, since = NULL, alert_id = NULL,"
    " version = {greatest}(version, ?) WHERE rule_id = ? AND device_id = ? AND alert_id = ?"
)
UPSERT_STATE = (
    "INSERT INTO rule_states (rule_id, device_id, project_id, phase, streak, since, last_at,"
    " alert_id, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (rule_id, device_id) DO UPDATE SET phase = excluded.phase,"
    " streak = excluded.streak, since = excluded.since, last_at = excluded.last_at,"
    " alert_id = excluded.alert_id, version = excluded.version"
)


@dataclass
class AlertPlan:
    """What to write, in this order: states, opened alerts, closed alerts,
    then the events and their deliveries (with the batch's own)."""

    states: list[StateRow] = field(default_factory=list)
    opened: list[AlertRow] = field(default_factory=list)
    closed: list[Closing] = field(default_factory=list)
    events: list[StoredEvent] = field(default_factory=list)
    deliveries: list[NewDelivery] = field(default_factory=list)
    triggered: int = 0
    resolved: int = 0

    def __bool__(self) -> bool:
        return bool(self.states or self.closed)


def plan_alerts(
    observations: Sequence[Observation],
    states: Mapping[Pair, State],
    open_alerts: Mapping[str, AlertRow],
    targets: Targets,
    now: float,
) -> AlertPlan:
    """Judge `observations` in order against `states` (a pair missing from
    it has never been judged): every pair's new state, and the alerts and
    events of the transitions. `open_alerts`: the rows of the states' open
    alerts, by id: a resolution describes the alert as it triggered (the
    rule's name and condition then), whatever the rule says now."""
    plan = AlertPlan()
    current = dict(states)
    changed: dict[Pair, StateRow] = {}
    opened: dict[str, AlertRow] = {}  # by alert id: closed in the same batch, kept opened
    for seen in observations:
        rule = seen.rule
        pair = (rule.rule_id, seen.device_id)
        before = current.get(pair, State())
        if before.version > rule.version:
            continue  # a newer version judged this pair: this process is behind
        held = _open_alert(before.alert_id, opened, open_alerts)
        if (
            held is not None
            and held.rule_version < rule.version
            and held.field != rule.field
            and (before.last_at or 0) <= seen.at
        ):
            # The rule watches another member now: the alert about the old
            # one ends ("rule changed"), and this reading counts afresh.
            ending = Transition(RESOLVED, held.value, seen.at, held.since)
            _raise(plan, held, RESOLVED, ending, RULE_CHANGED, targets, now)
            plan.resolved += 1
            before = State(last_at=before.last_at)
            current[pair] = before
            changed[pair] = StateRow(rule.rule_id, seen.device_id, rule.project_id, *before)
        after, transition = judge(rule, before, seen.value, seen.at)
        if after == before:
            continue
        if transition is not None and transition.kind == TRIGGERED:
            alert = _opened(seen, transition, now)
            opened[alert.alert_id] = alert
            after = after._replace(alert_id=alert.alert_id)
            _raise(plan, alert, TRIGGERED, transition, None, targets, now)
            plan.triggered += 1
        elif transition is not None and held is not None:
            _raise(plan, held, RESOLVED, transition, CLEARED, targets, now)
            plan.resolved += 1
        current[pair] = after
        changed[pair] = StateRow(rule.rule_id, seen.device_id, rule.project_id, *after)
    plan.states = list(changed.values())
    plan.opened = list(opened.values())
    return plan


def _open_alert(
    alert_id: str | None, opened: Mapping[str, AlertRow], stored: Mapping[str, AlertRow]
) -> AlertRow | None:
    """A state's open alert: opened by this batch, or earlier (`stored`)."""
    if alert_id is None:
        return None
    return opened.get(alert_id) or stored.get(alert_id)


def plan_endings(
    alerts: Iterable[AlertRow], endings: Mapping[str, Ending], targets: Targets, now: float
) -> AlertPlan:
    """Resolve the active `alerts` (as read, locked, in the transaction) that
    `endings` ends, by alert id: their rule was disabled, deleted, or changed
    so that it no longer judges their device or field. An alert whose
    (project, device) `targets` has no key for is left (an empty tuple: no
    webhook wants it)."""
    plan = AlertPlan()
    for alert in alerts:
        ending = endings.get(alert.alert_id)
        if ending is None or (alert.project_id, alert.device_id) not in targets:
            continue
        closing = Transition(RESOLVED, alert.value, now, alert.since)
        _raise(plan, alert, RESOLVED, closing, ending.reason, targets, now)
        plan.resolved += 1
    return plan


def reset_rows(
    alerts: Iterable[AlertRow], endings: Mapping[str, Ending], plan: AlertPlan
) -> list[tuple[int, str, str, str]]:
    """RESET_STATE's parameters: the (rule, device) state of each of
    `alerts` the plan closed, if it still points at it, starts afresh, at
    the version of what ended it."""
    closed = {c.alert_id for c in plan.closed}
    return [
        (endings[a.alert_id].version, a.rule_id, a.device_id, a.alert_id)
        for a in alerts
        if a.alert_id in closed
    ]


def _opened(seen: Observation, transition: Transition, now: float) -> AlertRow:
    rule = seen.rule
    return AlertRow(
        new_id("alr"),
        rule.project_id,
        rule.rule_id,
        rule.name,
        rule.version,
        seen.device_id,
        seen.gateway_id,
        rule.severity,
        rule.field,
        rule.operator,
        rule.threshold,
        rule.threshold_high,
        None if rule.operator in RANGE_OPERATORS else rule.clear_threshold,
        transition.value,
        transition.since,
        transition.at,
        new_id("evt"),
        now,
    )


def _raise(
    plan: AlertPlan,
    alert: AlertRow,
    kind: str,
    transition: Transition,
    reason: str | None,
    targets: Targets,
    now: float,
) -> None:
    """The device.alert event of one transition, and its deliveries."""
    if kind == TRIGGERED:
        event_id = alert.triggered_event_id
    else:
        event_id = new_id("evt")
        value = transition.value if reason == CLEARED else None
        plan.closed.append(
            Closing(transition.at, value, reason or CLEARED, event_id, now, alert.alert_id)
        )
    event = events_pb2.Event(
        event_id=event_id,
        project_id=alert.project_id,
        gateway_id=alert.gateway_id,
        device_id=alert.device_id,
    )
    event.timestamp.FromNanoseconds(round(transition.at * 1e9))
    event.received_at.FromNanoseconds(round(now * 1e9))
    event.alert.details.CopyFrom(_details(alert, kind, transition, reason))
    payload = event.SerializeToString()
    plan.events.append(StoredEvent(event_id, alert.project_id, payload))
    for target in targets.get((alert.project_id, alert.device_id), ()):
        plan.deliveries.append(
            NewDelivery(
                new_id("dlv"),
                event_id,
                target.webhook_id,
                alert.project_id,
                ALERT_EVENT,
                alert.device_id,
                target.status,
                target.status_reason,
                target.not_before,
                None,
                None,
                now,
                now,
                alert.device_id if target.ordered else None,
            )
        )


def _details(
    alert: AlertRow, kind: str, transition: Transition, reason: str | None
) -> struct_pb2.Struct:
    """The alert's `payload` in the webhook body (README, Alert rules)."""
    details: dict[str, str | float | None] = {
        "source": "rule",
        "alertId": alert.alert_id,
        "ruleId": alert.rule_id,
        "ruleName": alert.rule_name,
        "state": kind,
        "severity": alert.severity,
        "field": alert.field,
        "operator": alert.operator,
        "threshold": alert.threshold,
    }
    if alert.threshold_high is not None:
        details["thresholdHigh"] = alert.threshold_high
    if alert.clear_threshold is not None:
        details["clearThreshold"] = alert.clear_threshold
    if kind == TRIGGERED or reason == CLEARED:
        details["value"] = transition.value
    details["since"] = _time(transition.since)
    if kind == RESOLVED:
        details["reason"] = reason
    struct = struct_pb2.Struct()
    struct.update(details)
    return struct


def _time(at: float) -> str:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(round(at * 1e9))
    return rfc3339(ts)


def pending_webhooks(plan: AlertPlan) -> set[tuple[str, str]]:
    """(project, webhook) of the plan's deliveries that wait for a claim."""
    return {(d.project_id, d.webhook_id) for d in plan.deliveries if d.status == PENDING}


@dataclass
class RuleWork:
    """A batch's readings as the rules see them, handed to `Outbox.accept`:
    the observations of every reading in it, and the webhooks each device's
    alerts go to. The outbox judges those of readings that were new, and
    sets `plan` to what it wrote."""

    observations: list[Observation]
    targets: dict[Device, tuple[AlertTarget, ...]]
    plan: AlertPlan = field(default_factory=AlertPlan)

    def fresh(self, new_event_ids: Iterable[str]) -> list[Observation]:
        """The observations of readings stored now (a duplicate is not judged again)."""
        new = set(new_event_ids)
        judged: set[tuple[str, str]] = set()  # (event, rule): an event twice in a batch, once
        fresh = []
        for seen in self.observations:
            key = (seen.event_id, seen.rule.rule_id)
            if seen.event_id in new and key not in judged:
                judged.add(key)
                fresh.append(seen)
        return fresh


def pairs_of(observations: Iterable[Observation]) -> list[tuple[str, str, str]]:
    """(rule id, device id, project id) of each pair observed, once, sorted:
    PostgreSQL locks their states in this order, so two transactions that
    lock some of the same never wait for each other in a cycle."""
    return sorted({(o.rule.rule_id, o.device_id, o.rule.project_id) for o in observations})


def state_of(row: Sequence[object]) -> State:
    """A State from a row of STATE_COLUMNS (after the pair's)."""
    phase, streak, since, last_at, alert_id, version = row[2:8]
    return State(
        str(phase),
        int(streak),  # type: ignore[call-overload]
        None if since is None else float(since),  # type: ignore[arg-type]
        None if last_at is None else float(last_at),  # type: ignore[arg-type]
        None if alert_id is None else str(alert_id),
        int(version),  # type: ignore[call-overload]
    )
