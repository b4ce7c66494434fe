"""AlertEndings (delivery/rules/link.py) against a real outbox on each
database: the alerts of rules disabled, deleted or narrowed are resolved,
once, and only on evidence this process has, so a process whose view of the
rules lags another's never ends the other's live alerts."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edgesense.common.thresholds import Rule
from edgesense.delivery.rules.alerts import AlertTarget, RuleWork
from edgesense.delivery.rules.index import Observation, RuleIndex
from edgesense.delivery.rules.link import AlertEndings
from edgesense.delivery.store.outbox import Outbox, open_outbox
from edgesense.delivery.store.rows import PENDING, StoredEvent
from tests.delivery.conftest import make_rule

RULE = make_rule(field="t", name="hot", severity="warning")
HOOK = (AlertTarget("wh_a", PENDING, None, 0.0, False),)
_numbers = iter(range(1_000_000))


@pytest.fixture
async def outbox(database_url: str) -> AsyncIterator[Outbox]:
    outbox = await open_outbox(database_url)
    yield outbox
    await outbox.close()


def endings_of(outbox: Outbox, *rules: Rule) -> tuple[AlertEndings, list[Any]]:
    """A process's AlertEndings, its rule index holding `rules`; and the
    (project, webhook) pairs it tells the dispatcher about."""
    index = RuleIndex()
    index.replace(rules)
    told: list[Any] = []
    ready = asyncio.Event()
    ready.set()
    endings = AlertEndings(outbox, index, lambda _p, _d, _now: HOOK, told.append, ready)
    return endings, told


def learn(endings: AlertEndings, rule: Rule) -> None:
    """The process's stream delivers `rule`."""
    endings.rules.upsert(rule)
    endings.changed(rule)


async def breach(outbox: Outbox, device: str, value: float = 90, rule: Rule = RULE) -> int:
    """Store a reading of `device` judged by `rule`, now; how many alerts it triggered."""
    event_id = f"evt_{next(_numbers)}"
    seen = Observation(rule, event_id, "gw-1", device, time.time(), value)
    work = RuleWork([seen], {("p", device): HOOK})
    await outbox.accept([StoredEvent(event_id, "p", b"r")], [], time.time(), work)
    return work.plan.triggered


async def active(outbox: Outbox) -> list[str]:
    return sorted(a.device_id for a in await outbox.active_alerts(["rule_hot"], 0, 100))


async def reasons(outbox: Outbox) -> list[tuple[str, str]]:
    return sorted(
        (a.device_id, a.resolved_reason)
        for a in await outbox.alert_page("p", "resolved", "", "", 100, None)
    )


async def test_a_process_that_has_not_seen_a_rule_or_its_version_leaves_its_alerts(
    outbox: Outbox,
) -> None:
    lagging, _ = endings_of(outbox)
    lagging.snapshot([], set())  # read before the rule was created
    assert await breach(outbox, "d1") == 1  # raised by a process that knows it
    assert await lagging.sweep() == 0
    learn(lagging, RULE)  # its stream catches up: the alert's own version
    assert await lagging.sweep() == 0
    # Disabled (v2) then enabled (v3) elsewhere; an alert raised under v3:
    # a process that only got as far as v2 does not end it.
    v3 = dataclasses.replace(RULE, version=3)
    assert await breach(outbox, "d2", rule=v3) == 1
    learn(lagging, dataclasses.replace(RULE, version=2, enabled=False))
    assert await lagging.sweep() == 1  # d1's, raised under v1
    assert await active(outbox) == ["d2"]
    assert await reasons(outbox) == [("d1", "rule disabled")]


async def test_a_delete_ends_every_alert_of_the_rule_once(outbox: Outbox) -> None:
    endings, told = endings_of(outbox, RULE)
    endings.snapshot([RULE], set())
    assert await breach(outbox, "d1") == 1
    endings.rules.remove(RULE.rule_id)
    endings.deleted(RULE.rule_id)
    assert await endings.sweep() == 1
    assert told == [{("p", "wh_a")}]
    # A process that has not heard yet raises another: ended at the next sweep.
    assert await breach(outbox, "d2") == 1
    assert await endings.sweep() == 1
    assert await active(outbox) == []
    assert await endings.sweep() == 0  # nothing twice
    assert await reasons(outbox) == [("d1", "rule deleted"), ("d2", "rule deleted")]


async def test_a_snapshot_without_a_rule_that_had_alerts_before_it_ends_them(
    outbox: Outbox,
) -> None:
    assert await breach(outbox, "d1") == 1
    restarted, _ = endings_of(outbox)
    restarted.snapshot([], set())  # its stream opened before the alert: no evidence
    assert await restarted.sweep() == 0
    restarted.snapshot([], {"rule_hot"})  # the alert was there before the stream opened
    assert await restarted.sweep() == 1
    assert await active(outbox) == []


async def test_narrowing_a_rule_resolves_the_alerts_of_devices_it_left(
    outbox: Outbox,
) -> None:
    endings, _ = endings_of(outbox, RULE)
    endings.snapshot([RULE], set())
    assert await breach(outbox, "d1") + await breach(outbox, "d2") == 2
    learn(endings, dataclasses.replace(RULE, device_ids=frozenset({"d1"}), version=2))
    assert await endings.sweep() == 1
    assert await active(outbox) == ["d1"]
    assert await reasons(outbox) == [("d2", "rule changed")]
    # A store judged under v1 that commits after that sweep: the rule is not
    # settled yet (SETTLE_SECONDS), so the next sweep looks again.
    assert await breach(outbox, "d3") == 1
    assert await endings.sweep() == 1
    assert await active(outbox) == ["d1"]


async def test_a_new_field_ends_the_old_alert_with_the_reading_that_shows_it(
    outbox: Outbox,
) -> None:
    assert await breach(outbox, "d1") == 1
    moved = dataclasses.replace(RULE, field="u", version=2)
    assert await breach(outbox, "d1", 95, rule=moved) == 1  # u breaches: a new alert
    assert await active(outbox) == ["d1"]
    assert await reasons(outbox) == [("d1", "rule changed")]
    (now_active,) = await outbox.active_alerts(["rule_hot"], 0, 10)
    assert (now_active.field, now_active.rule_version) == ("u", 2)


async def test_a_rule_enabled_again_starts_counting_again(outbox: Outbox) -> None:
    twice = dataclasses.replace(RULE, count=2)
    assert await breach(outbox, "d1", rule=twice) == 0  # one breach of two
    enabled_again = dataclasses.replace(twice, version=3)  # disabled was v2
    assert await breach(outbox, "d1", rule=enabled_again) == 0  # the old breach is forgotten
    assert await breach(outbox, "d1", rule=enabled_again) == 1
