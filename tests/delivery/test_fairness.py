"""FairShare: who takes a free send slot, and how much each may hold in memory.

Examples of the rules, then a hypothesis state machine that drives it through
its public methods against a plain model of the counts and checks the
invariants its docstring states after every step.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edgesense.common.config import Settings
from edgesense.common.errors import ConfigurationError
from edgesense.delivery.claim.fairness import FairShare, queue_factor_for


def queue(fair: FairShare, project: str, webhook: str, count: int) -> None:
    for _ in range(count):
        fair.queue(project, webhook)


def start_all(fair: FairShare) -> list[tuple[str, str]]:
    started = []
    while (chosen := fair.start()) is not None:
        started.append(chosen)
    return started


def test_a_project_never_holds_every_slot() -> None:
    fair = FairShare(capacity=8, per_project=4, per_webhook=8)
    for n in range(10):
        queue(fair, "b", f"b{n}", 10)
    assert Counter(p for p, _ in start_all(fair)) == {"b": 4}
    queue(fair, "a", "a1", 3)  # a newcomer gets slots at once, no attempt has to end
    assert start_all(fair) == [("a", "a1")] * 3


def test_freed_slots_go_to_the_project_below_its_share() -> None:
    fair = FairShare(capacity=4, per_project=3, per_webhook=4)
    queue(fair, "b", "b1", 10)
    assert start_all(fair) == [("b", "b1")] * 3
    queue(fair, "a", "a1", 10)
    assert start_all(fair) == [("a", "a1")]  # the last free slot
    fair.finish("b", "b1")
    # b holds 2 = its share (4 slots / 2 projects), a holds 1: a's turn.
    assert start_all(fair) == [("a", "a1")]
    fair.finish("b", "b1")
    assert start_all(fair) == [("b", "b1")]  # both at their share: taking turns


def test_slots_nobody_below_their_share_can_use_are_not_left_idle() -> None:
    fair = FairShare(capacity=8, per_project=6, per_webhook=8)
    queue(fair, "a", "a1", 1)
    queue(fair, "b", "b1", 20)
    assert Counter(p for p, _ in start_all(fair)) == {"a": 1, "b": 6}  # b: its share 4, then more


def test_a_project_s_webhooks_take_turns() -> None:
    fair = FairShare(capacity=6, per_project=6, per_webhook=6)
    for webhook in ("w1", "w2", "w3"):
        queue(fair, "p", webhook, 4)
    assert [w for _, w in start_all(fair)] == ["w1", "w2", "w3"] * 2


def test_a_webhook_at_its_limit_waits_and_its_neighbours_do_not() -> None:
    fair = FairShare(capacity=10, per_project=10, per_webhook=2)
    queue(fair, "p", "slow", 5)
    queue(fair, "p", "fast", 5)
    assert Counter(w for _, w in start_all(fair)) == {"slow": 2, "fast": 2}
    fair.finish("p", "fast")
    assert start_all(fair) == [("p", "fast")]


def test_room_bounds_a_webhook_and_the_total_but_not_a_newcomer() -> None:
    fair = FairShare(capacity=4, per_project=2, per_webhook=2)
    assert fair.room("a", "a1") == 4  # 2 x per_webhook
    queue(fair, "a", "a1", 3)
    assert fair.room("a", "a1") == 1
    queue(fair, "a", "a2", 4)
    queue(fair, "a", "a3", 1)  # a project alone may fill memory: 8 = 2 x capacity...
    assert (fair.room("a", "a4"), fair.saturated()) == (0, ["a"])
    assert fair.room("b", "b1") == 4  # ...but a newcomer still gets twice its share (4 // 2)
    queue(fair, "b", "b1", 3)
    queue(fair, "c", "c1", 1)
    assert fair.room("d", "d1") == 2  # 4 // 4, twice
    assert fair.room("c", "c1") == 1  # so does a project below its share
    assert sorted(fair.saturated()) == ["a", "b"]


def test_a_larger_queue_factor_lets_a_project_alone_hold_more() -> None:
    """Fan-out: ten webhooks of one project, each lane 2 x per_webhook; the
    overall queue, not the lanes, is what factor 2 ran into."""
    small = FairShare(capacity=4, per_project=4, per_webhook=2)
    large = FairShare(capacity=4, per_project=4, per_webhook=2, queue_factor=5)
    for fair in (small, large):
        for n in range(10):
            while fair.admit("a", f"a{n}"):
                pass
    assert small.load_total == 8  # 2 x capacity
    assert large.load_total == 20  # 5 x capacity: ten lanes of 4 would take 40
    assert large.room("b", "b1") == 4  # a newcomer still gets twice its share (4 // 2)
    assert large.saturated() == ["a"]


@pytest.mark.parametrize(
    ("lease", "timeout", "factor"),
    [
        (30, 3, 5),  # the defaults: a full queue drains within half the lease
        (30, 10, 2),  # at least what admission always allowed
        (300, 3, 6),  # at most MAX_QUEUE_FACTOR
        (30, 0, 6),
        (10, 1, 5),
    ],
)
def test_the_queue_factor_keeps_a_full_queue_within_half_the_lease(
    lease: float, timeout: float, factor: int
) -> None:
    assert queue_factor_for(lease, timeout) == factor


def test_admit_reserves_and_cancel_gives_back() -> None:
    fair = FairShare(capacity=2, per_project=1, per_webhook=1)
    assert fair.admit("p", "w")
    assert fair.admit("p", "w")
    assert not fair.admit("p", "w")
    fair.cancel("p", "w")
    fair.queue("p", "w", reserved=True)
    assert fair.load("p", "w") == 1
    assert fair.start() == ("p", "w")
    fair.finish("p", "w")
    assert (fair.load_total, fair.running_total, fair.share()) == (0, 0, 2)


def test_bad_limits_and_unbalanced_calls_are_refused() -> None:
    with pytest.raises(ValueError, match="per_project"):
        FairShare(capacity=4, per_project=5, per_webhook=1)
    fair = FairShare(capacity=4, per_project=2, per_webhook=1)
    fair.reserve("p", "w")
    with pytest.raises(ValueError, match="reserved"):
        fair.cancel("p", "w", 2)
    fair.queue("p", "w", reserved=True)
    with pytest.raises(ValueError, match="in flight"):
        fair.finish("p", "w")
    with pytest.raises(ValueError, match="no delivery reserved"):
        fair.queue("p", "w2", reserved=True)
    assert (fair.load_total, fair.share()) == (1, 4)  # w2 left nothing behind


def test_the_per_project_limit_leaves_a_webhook_s_lane_by_default_and_is_never_the_total() -> None:
    assert Settings.from_env({}).delivery_per_project == 192  # 256 - 64
    assert Settings.from_env({"EDGESENSE_DELIVERY_CONCURRENCY": "10"}).delivery_per_project == 5
    assert Settings.from_env({"EDGESENSE_DELIVERY_PER_PROJECT": "256"}).delivery_per_project == 256
    with pytest.raises(
        ConfigurationError,
        match=r"EDGESENSE_DELIVERY_PER_PROJECT \(300\) must not exceed "
        r"EDGESENSE_DELIVERY_CONCURRENCY \(256\)",
    ):
        Settings.from_env({"EDGESENSE_DELIVERY_PER_PROJECT": "300"})


PROJECTS = ("a", "b", "c")
WEBHOOKS = ("1", "2", "3")


@pytest.mark.parametrize("factor", [2, 5])
def test_memory_stays_bounded_however_many_projects_arrive(factor: int) -> None:
    # 300 projects each admitting until refused (their receivers hang: nothing
    # finishes) added up to 2,466 deliveries, over 9 x capacity, without the bound.
    fair = FairShare(capacity=256, per_project=192, per_webhook=64, queue_factor=factor)
    for n in range(300):
        while fair.admit(f"p{n}", "wh"):
            pass
    assert fair.memory_bound == (factor + 2) * 256
    assert fair.load_total <= fair.memory_bound
    assert fair.claim_room() == 0
    assert fair.room("newcomer", "wh") == 0


class FairShareMachine(RuleBasedStateMachine):
    """Random calls against a model: per (project, webhook) reserved, queued, running."""

    def __init__(self) -> None:
        super().__init__()
        self.fair = FairShare(capacity=6, per_project=4, per_webhook=2)
        self.reserved: Counter[tuple[str, str]] = Counter()
        self.queued: Counter[tuple[str, str]] = Counter()
        self.running: Counter[tuple[str, str]] = Counter()

    def project_running(self, project: str) -> int:
        return sum(n for (p, _), n in self.running.items() if p == project)

    def projects_with_load(self) -> set[str]:
        counts = self.reserved + self.queued + self.running
        return {p for (p, _), n in counts.items() if n}

    def startable(self) -> set[str]:
        """Projects with a queued delivery the three limits let take a slot."""
        if sum(self.running.values()) >= self.fair.capacity:
            return set()
        return {
            p
            for (p, w), n in self.queued.items()
            if n
            and self.running[(p, w)] < self.fair.per_webhook
            and self.project_running(p) < self.fair.per_project
        }

    @rule(project=st.sampled_from(PROJECTS), webhook=st.sampled_from(WEBHOOKS))
    def queue(self, project: str, webhook: str) -> None:
        key = (project, f"{project}{webhook}")
        self.fair.queue(*key)
        self.queued[key] += 1

    @rule(project=st.sampled_from(PROJECTS), webhook=st.sampled_from(WEBHOOKS))
    def admit(self, project: str, webhook: str) -> None:
        key = (project, f"{project}{webhook}")
        room = self.fair.room(*key)
        assert self.fair.admit(*key) == (room > 0)
        self.reserved[key] += room > 0

    @precondition(lambda self: any(self.reserved.values()))
    @rule(data=st.data(), queued=st.booleans())
    def settle_reservation(self, data: st.DataObject, queued: bool) -> None:
        key = data.draw(st.sampled_from(sorted(k for k, n in self.reserved.items() if n)))
        self.reserved[key] -= 1
        if queued:
            self.fair.queue(*key, reserved=True)
            self.queued[key] += 1
        else:
            self.fair.cancel(*key)

    @rule()
    def start(self) -> None:
        startable = self.startable()
        share = max(1, self.fair.capacity // max(1, len(self.projects_with_load())))
        below = {p for p in startable if self.project_running(p) < share}
        chosen = self.fair.start()
        if chosen is None:
            assert not startable, "a slot was left idle"
            return
        assert chosen[0] in (below or startable)
        assert self.queued[chosen] > 0
        self.queued[chosen] -= 1
        self.running[chosen] += 1

    @precondition(lambda self: any(self.running.values()))
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(k for k, n in self.running.items() if n)))
        self.fair.finish(*key)
        self.running[key] -= 1

    @rule()
    def drop_queued(self) -> None:
        self.fair.drop_queued()
        self.queued.clear()

    @invariant()
    def counts_match_the_model(self) -> None:
        assert self.fair.running_total == sum(self.running.values())
        total = sum((self.reserved + self.queued + self.running).values())
        assert self.fair.load_total == total
        for project in PROJECTS:
            for webhook in WEBHOOKS:
                key = (project, f"{project}{webhook}")
                load = self.reserved[key] + self.queued[key] + self.running[key]
                assert self.fair.load(*key) == load
                assert self.fair.running(*key) == self.running[key]
        # Only projects with work count towards the shares: nothing is left behind.
        assert self.fair.share() == max(1, 6 // max(1, len(self.projects_with_load())))

    @invariant()
    def in_flight_within_limits(self) -> None:
        assert sum(self.running.values()) <= self.fair.capacity
        for project in PROJECTS:
            assert self.project_running(project) <= self.fair.per_project
        assert all(n <= self.fair.per_webhook for n in self.running.values())


TestFairShareMachine = FairShareMachine.TestCase
TestFairShareMachine.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
