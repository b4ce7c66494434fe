"""Alert rules in the outbox, on a real database each (SQLite file,
PostgreSQL): a transition, its alert, its device.alert event and that
event's deliveries are written by the transaction that stores the reading,
once, however many outboxes store readings of one device at once."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from edgesense.common.thresholds import DELETED_VERSION, RULE_DELETED, RULE_DISABLED, Rule
from edgesense.delivery.rules.alerts import AlertTarget, Ending, RuleWork
from edgesense.delivery.rules.index import Observation
from edgesense.delivery.store.outbox import Outbox, open_outbox
from edgesense.delivery.store.rows import HELD, PENDING, StoredEvent
from edgesense.v1 import events_pb2
from tests.delivery.conftest import make_rule

NOW = 1_000_000.0
RULE = make_rule(clear_threshold=75.0)
GONE = Ending(RULE_DELETED, DELETED_VERSION)
TARGETS = {
    ("p", "d1"): (
        AlertTarget("wh_a", PENDING, None, NOW, False),
        AlertTarget("wh_b", HELD, "webhook disabled", NOW, True),
    ),
    ("p", "d2"): (AlertTarget("wh_a", PENDING, None, NOW, False),),
}


@pytest.fixture
async def outbox(database_url: str) -> AsyncIterator[Outbox]:
    outbox = await open_outbox(database_url)
    yield outbox
    await outbox.close()


def reading(
    number: int, device: str, value: float, at: float, rule: Rule = RULE
) -> tuple[StoredEvent, Observation]:
    event_id = f"evt_r{number}"
    return (
        StoredEvent(event_id, "p", b"reading"),
        Observation(rule, event_id, "gw-1", device, at, value),
    )


async def store(
    outbox: Outbox, *readings: tuple[StoredEvent, Observation], now: float = NOW
) -> RuleWork:
    work = RuleWork([o for _, o in readings], dict(TARGETS))
    await outbox.accept([e for e, _ in readings], [], now, work)
    return work


async def rows(outbox: Outbox, sql: str) -> list[Any]:
    async with outbox.engine.connect() as conn:  # type: ignore[attr-defined]
        return list((await conn.execute(text(sql))).all())


async def alert_events(outbox: Outbox) -> list[dict[str, Any]]:
    """The device.alert events stored, oldest first (by their time: event
    ids order only to the millisecond), as their details."""
    found: list[tuple[int, dict[str, Any]]] = []
    for (payload,) in await rows(outbox, "SELECT event FROM events"):
        if payload == b"reading":
            continue
        event = events_pb2.Event.FromString(payload)
        assert event.WhichOneof("kind") == "alert"
        details = dict(event.alert.details.items())
        details["_device"], details["_at"] = event.device_id, event.timestamp.seconds
        found.append((event.timestamp.ToNanoseconds(), details))
    found.sort(key=lambda timed: timed[0])
    return [details for _, details in found]


async def test_a_breach_and_its_clear_raise_one_event_each(outbox: Outbox) -> None:
    work = await store(outbox, reading(1, "d1", 70, 100), reading(2, "d1", 85, 101))
    assert (work.plan.triggered, work.plan.resolved) == (1, 0)
    # Breaching on: nothing more; then 78 is within the hysteresis, 74 clears.
    await store(outbox, reading(3, "d1", 90, 102), reading(4, "d1", 78, 103))
    work = await store(outbox, reading(5, "d1", 74, 104))
    assert (work.plan.triggered, work.plan.resolved) == (0, 1)

    events = await alert_events(outbox)
    assert [(e["state"], e["value"], e["_at"]) for e in events] == [
        ("triggered", 85, 101),
        ("resolved", 74, 104),
    ]
    triggered, resolved = events
    assert triggered["source"] == "rule"
    assert triggered["ruleId"] == "rule_hot"
    assert triggered["ruleName"] == "Boiler too hot"
    assert triggered["severity"] == "critical"
    assert (triggered["operator"], triggered["threshold"]) == ("gt", 80)
    assert triggered["clearThreshold"] == 75
    assert triggered["since"] == "1970-01-01T00:01:41Z"
    assert resolved["reason"] == "cleared"
    assert resolved["alertId"] == triggered["alertId"]

    (alert,) = await rows(
        outbox,
        "SELECT state, value, triggered_at, resolved_at, resolved_value, resolved_reason,"
        " resolved_event_id IS NOT NULL FROM alerts",
    )
    assert tuple(alert) == ("resolved", 85, 101, 104, 74, "cleared", True)
    # Each event went to the device's two webhooks, the disabled one's held and keyed.
    deliveries = await rows(
        outbox,
        "SELECT webhook_id, status, event_name, order_key FROM deliveries ORDER BY seq",
    )
    assert [tuple(d) for d in deliveries] == [
        ("wh_a", PENDING, "device.alert", None),
        ("wh_b", HELD, "device.alert", "d1"),
    ] * 2


async def test_a_reading_stored_twice_is_judged_once(outbox: Outbox) -> None:
    breach = reading(1, "d1", 85, 100)
    first = await store(outbox, breach)
    again = await store(outbox, breach)  # the bridge sent it again
    assert first.plan.triggered == 1
    assert not again.plan
    # Nor twice in one batch (the same event in two batches of one group):
    # with a count of 2, judging it twice would trigger.
    twice = dataclasses.replace(RULE, rule_id="rule_twice", count=2)
    other = reading(2, "d2", 85, 100, twice)
    work = await store(outbox, other, other)
    assert not work.plan.triggered
    assert (await store(outbox, reading(3, "d2", 85, 101, twice))).plan.triggered == 1
    assert len(await alert_events(outbox)) == 2


async def test_devices_keep_their_own_state(outbox: Outbox) -> None:
    await store(outbox, reading(1, "d1", 85, 100), reading(2, "d2", 70, 100))
    work = await store(outbox, reading(3, "d2", 72, 101), reading(4, "d1", 90, 101))
    assert not work.plan.triggered
    assert not work.plan.resolved
    states = await rows(outbox, "SELECT device_id, phase FROM rule_states ORDER BY device_id")
    assert [tuple(s) for s in states] == [("d1", "active"), ("d2", "ok")]


async def test_ending_alerts_resolves_each_once_and_resets_states(outbox: Outbox) -> None:
    other = dataclasses.replace(RULE, rule_id="rule_other")
    await store(outbox, reading(1, "d1", 85, 100), reading(2, "d2", 85, 100, other))
    assert await outbox.alerting() == {"rule_hot", "rule_other"}
    (hot,) = await outbox.active_alerts(["rule_hot"], 0, 10)
    assert (hot.rule_id, hot.device_id, hot.gateway_id, hot.field) == (
        "rule_hot",
        "d1",
        "gw-1",
        "temperature",
    )
    # A device whose webhooks the caller did not look up is left for later.
    plan = await outbox.end_alerts({hot.alert_id: GONE}, {}, NOW + 5)
    assert plan.resolved == 0
    plan = await outbox.end_alerts({hot.alert_id: GONE}, TARGETS, NOW + 5)
    assert plan.resolved == 1
    assert len(plan.deliveries) == 2
    again = await outbox.end_alerts({hot.alert_id: GONE}, TARGETS, NOW + 6)
    assert again.resolved == 0
    assert await outbox.alerting() == {"rule_other"}
    resolved = [e for e in await alert_events(outbox) if e["state"] == "resolved"]
    assert [(r["reason"], r["ruleId"], "value" in r) for r in resolved] == [
        ("rule deleted", "rule_hot", False)
    ]
    # The ended alert's state starts afresh, in place, at the version that
    # ended it (a deleted rule's: above any); the other is untouched.
    states = await rows(
        outbox, "SELECT rule_id, phase, alert_id IS NULL, version FROM rule_states ORDER BY rule_id"
    )
    assert [tuple(s) for s in states] == [
        ("rule_hot", "ok", True, DELETED_VERSION),
        ("rule_other", "active", False, 1),
    ]
    assert await outbox.judged_rules() == {"rule_hot", "rule_other"}
    assert await outbox.forget_states(["rule_hot"]) == 1
    assert await rows(outbox, "SELECT rule_id FROM rule_states") == [("rule_other",)]
    # Retention: alerts resolved before the cut, never active ones.
    assert await outbox.delete_resolved_alerts(NOW + 5, 10) == 0
    assert await outbox.delete_resolved_alerts(NOW + 5.5, 10) == 1
    assert [r.rule_id for r in await outbox.alert_page("p", "", "", "", 10, None)] == ["rule_other"]


async def test_a_process_behind_on_the_rules_version_changes_nothing(outbox: Outbox) -> None:
    """Two processes, one still at v1 while the other knows v2 (threshold
    lowered to 50): the v1 one neither clears v2's alert nor recounts; once
    an ending at v3 reset the state, v2 cannot raise it again."""
    v2 = dataclasses.replace(RULE, threshold=50.0, clear_threshold=None, version=2)
    assert (await store(outbox, reading(1, "d1", 60, 100, v2))).plan.triggered == 1
    behind = await store(outbox, reading(2, "d1", 60, 101))  # clears under v1's 75
    assert not behind.plan
    assert (await store(outbox, reading(3, "d1", 40, 102, v2))).plan.resolved == 1
    assert (await store(outbox, reading(4, "d1", 60, 103, v2))).plan.triggered == 1
    (alert,) = await outbox.active_alerts(["rule_hot"], 0, 10)
    ended = await outbox.end_alerts({alert.alert_id: Ending(RULE_DISABLED, 3)}, TARGETS, NOW)
    assert ended.resolved == 1
    assert not (await store(outbox, reading(5, "d1", 90, 104, v2))).plan
    moved = dataclasses.replace(v2, field="other", version=2)  # v2 behind v3 too
    assert not (await store(outbox, reading(6, "d1", 90, 105, moved))).plan
    events = [e["state"] for e in await alert_events(outbox)]
    assert events == ["triggered", "resolved", "triggered", "resolved"]


async def test_a_resolution_describes_the_alert_as_it_triggered(outbox: Outbox) -> None:
    await store(outbox, reading(1, "d1", 85, 100))
    renamed = dataclasses.replace(RULE, name="Renamed", severity="info", version=2)
    await store(outbox, reading(2, "d1", 60, 101, renamed))
    triggered, resolved = await alert_events(outbox)
    assert (resolved["state"], resolved["ruleName"], resolved["severity"]) == (
        "resolved",
        "Boiler too hot",
        "critical",
    )
    assert resolved["alertId"] == triggered["alertId"]


async def test_alert_listing_pages_newest_first(outbox: Outbox) -> None:
    for n in range(5):
        await store(outbox, reading(n, f"dev{n}", 85, 100 + n))
    page = await outbox.alert_page("p", "active", "", "", 3, None)
    assert [r.device_id for r in page] == ["dev4", "dev3", "dev2"]
    rest = await outbox.alert_page("p", "", "", "", 10, page[-1].seq)
    assert [r.device_id for r in rest] == ["dev1", "dev0"]
    assert [r.device_id for r in await outbox.alert_page("p", "", "", "dev1", 10, None)] == ["dev1"]
    assert await outbox.alert_page("p", "resolved", "", "", 10, None) == []
    assert await outbox.alert_page("other-project", "", "", "", 10, None) == []


async def test_ending_alerts_while_readings_of_their_devices_are_stored(
    database_url: str,
) -> None:
    """Ending a rule's alerts and storing clearing readings of the same
    pairs at once, from two outboxes: no deadlock (both take the states
    first, in one order), and each alert resolved once, by one or the other."""
    outboxes = [await open_outbox(database_url) for _ in range(2)]
    try:
        devices = [f"d{n}" for n in range(20)]
        hook: tuple[AlertTarget, ...] = (AlertTarget("wh_a", PENDING, None, NOW, False),)
        targets = {("p", d): hook for d in devices}
        work = RuleWork([reading(n, d, 90, 100)[1] for n, d in enumerate(devices)], targets)
        await outboxes[0].accept(
            [reading(n, d, 90, 100)[0] for n, d in enumerate(devices)], [], NOW, work
        )
        active = await outboxes[0].active_alerts(["rule_hot"], 0, 100)
        assert len(active) == len(devices)
        clearing = [reading(100 + n, d, 10, 200) for n, d in enumerate(devices)]
        reasons = {a.alert_id: GONE for a in active}
        await asyncio.gather(
            outboxes[1].end_alerts(reasons, targets, NOW + 1),
            *(outboxes[0].accept([e], [], NOW + 1, RuleWork([o], targets)) for e, o in clearing),
        )
        events = await alert_events(outboxes[0])
        assert len([e for e in events if e["state"] == "resolved"]) == len(devices)
        assert await outboxes[0].alerting() == set()
    finally:
        for outbox in outboxes:
            await outbox.close()


async def test_two_outboxes_storing_one_devices_breaches_raise_one_alert(
    database_url: str,
) -> None:
    """Two delivery processes' outboxes (two engines, two pools) store
    breaching readings of one device at once: one `triggered`, whichever
    commits first; then clears and breaches again, once each."""
    outboxes = [await open_outbox(database_url) for _ in range(2)]
    try:
        plans = await asyncio.gather(
            *(
                store(outboxes[n % 2], reading(n, "d1", 85 + n % 3, 100 + n // 10))
                for n in range(40)
            )
        )
        assert sum(w.plan.triggered for w in plans) == 1
        clears = await asyncio.gather(
            *(store(outboxes[n % 2], reading(100 + n, "d1", 50, 200)) for n in range(10))
        )
        assert sum(w.plan.resolved for w in clears) == 1
        events = await alert_events(outboxes[0])
        assert [e["state"] for e in events] == ["triggered", "resolved"]
    finally:
        for outbox in outboxes:
            await outbox.close()
