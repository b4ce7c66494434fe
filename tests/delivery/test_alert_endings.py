"""AlertEndings (delivery/rules/link.py) against a real outbox on each
database: the alerts of rules disabled, deleted or narrowed are resolved,
once, and only on evidence this process has, so a process whose view of the
rules lags another's never ends the other's live alerts."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edgesense.common.thresholds import Rule
from edgesense.delivery.rules.alerts import AlertTarget, RuleWork
from edgesense.delivery.rules.index import Observation, RuleIndex
from edgesense.delivery.rules.link import SNAPSHOT_SKEW_SECONDS, AlertEndings
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
    endings = AlertEndings(outbox, index, lambda _p, _d, _now: HOOK, told.append)
    return endings, told


async def breach(outbox: Outbox, device: str, value: float = 90, rule: Rule = RULE) -> int:
    """Store a reading of `device` judged by `rule`, now; how many alerts it triggered."""
    event_id = f"evt_{next(_numbers)}"
    seen = Observation(rule, event_id, "gw-1", device, time.time(), value)
    work = RuleWork([seen], {("p", device): HOOK})
    await outbox.accept([StoredEvent(event_id, "p", b"r")], [], time.time(), work)
    return work.plan.triggered


async def active(outbox: Outbox) -> list[str]:
    return sorted(a.device_id for a in await outbox.active_alerts(["rule_hot"], 0, 100))


async def test_a_process_that_has_not_seen_a_rule_leaves_its_alerts(outbox: Outbox) -> None:
    lagging, _ = endings_of(outbox)
    lagging.snapshot([], time.time())  # read before the rule was created
    assert await breach(outbox, "d1") == 1  # raised by a process that knows it
    assert await lagging.sweep() == 0
    lagging.changed(RULE, time.time())  # its stream catches up
    assert await lagging.sweep() == 0
    assert await active(outbox) == ["d1"]


async def test_a_delete_this_process_learned_resolves_alerts_raised_before(
    outbox: Outbox,
) -> None:
    endings, told = endings_of(outbox, RULE)
    endings.snapshot([RULE], time.time())
    assert await breach(outbox, "d1") == 1
    endings.deleted(RULE.rule_id, time.time())
    # Raised after this process learned, by one that had not: not this one's to end.
    assert await breach(outbox, "d2") == 1
    assert await endings.sweep() == 1
    assert await active(outbox) == ["d2"]
    assert told == [{("p", "wh_a")}]
    # The process that raised it learns too, later: it ends it.
    late, _ = endings_of(outbox, RULE)
    late.snapshot([RULE], time.time())
    late.deleted(RULE.rule_id, time.time())
    assert await late.sweep() == 1
    assert await active(outbox) == []
    assert await endings.sweep() == 0  # nothing twice


async def test_a_snapshot_without_the_rule_ends_its_old_alerts(outbox: Outbox) -> None:
    assert await breach(outbox, "d1") == 1
    endings, _ = endings_of(outbox)
    endings.snapshot([], time.time() + SNAPSHOT_SKEW_SECONDS + 1)
    assert await endings.sweep() == 1
    assert await active(outbox) == []


async def test_narrowing_a_rule_resolves_the_alerts_of_devices_it_left(
    outbox: Outbox,
) -> None:
    endings, _ = endings_of(outbox, RULE)
    endings.snapshot([RULE], time.time())
    assert await breach(outbox, "d1") + await breach(outbox, "d2") == 2
    narrowed = dataclasses.replace(RULE, device_ids=frozenset({"d1"}), version=2)
    endings.rules.upsert(narrowed)
    endings.changed(narrowed, time.time())
    assert await endings.sweep() == 1
    assert await active(outbox) == ["d1"]
    (listed,) = await outbox.alert_page("p", "resolved", "", "", 10, None)
    assert (listed.device_id, listed.resolved_reason) == ("d2", "rule changed")
    assert await endings.sweep() == 0


async def test_a_rule_disabled_then_enabled_starts_counting_again(outbox: Outbox) -> None:
    twice = dataclasses.replace(RULE, count=2)
    endings, _ = endings_of(outbox, twice)
    endings.snapshot([twice], time.time())
    assert await breach(outbox, "d1", rule=twice) == 0  # one breach of two
    off = dataclasses.replace(twice, enabled=False)
    endings.rules.upsert(off)
    endings.changed(off, time.time())
    await endings.sweep()
    endings.rules.upsert(twice)
    endings.changed(twice, time.time())
    assert await breach(outbox, "d1", rule=twice) == 0  # the old breach is forgotten
    assert await breach(outbox, "d1", rule=twice) == 1
