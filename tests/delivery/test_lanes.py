"""Lanes: the claimed deliveries in memory and what the next claim may take.

Examples of the rules, then a hypothesis state machine that plays the
dispatcher and a model outbox against Lanes through its public methods only:
fresh deliveries handed over or stored for a claim, claims of due
deliveries and refills (each split in two, with anything happening while
the claim runs), attempts started and finished, webhooks paused by the
breaker and removed by the registry, shutdown. After every step it checks
Lanes' own invariants (`check()`), that nothing is lost or duplicated (every
delivery is in the outbox, on its way to a lane, queued, running or done),
and the fairness guarantees (no lane, project or process above its limit in
flight, no slot left idle, no project at or above its share served before
one below it).
"""

from __future__ import annotations

from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edgesense.delivery.claim.breaker import Breaker
from edgesense.delivery.claim.fairness import FairShare
from edgesense.delivery.claim.lanes import CLAIM_BATCH, Lanes
from edgesense.delivery.store.rows import Claimed


def claimed(number: int, project: str, webhook: str) -> Claimed:
    return Claimed(number, f"dlv_{number}", webhook, f"evt_{number}", 0, 0, b"", 0.0, project)


def lanes_for(capacity: int = 4, per_project: int = 4, per_webhook: int = 2) -> Lanes:
    return Lanes(FairShare(capacity, per_project, per_webhook), Breaker(threshold=2))


def test_a_lane_is_served_oldest_first_within_its_limit() -> None:
    lanes = lanes_for()
    lanes.add([claimed(n, "p", "w") for n in range(3)])
    assert [lanes.start(), lanes.start(), lanes.start()] == [
        claimed(0, "p", "w"),
        claimed(1, "p", "w"),
        None,  # per_webhook is 2
    ]
    lanes.finish("p", "w")
    assert lanes.start() == claimed(2, "p", "w")
    lanes.check()


def test_a_full_lane_is_left_out_then_refilled_once_it_drains() -> None:
    lanes = lanes_for(capacity=8, per_project=8)
    lanes.add([claimed(n, "p", "w") for n in range(4)])  # 2 x per_webhook: full
    assert lanes.start() is not None
    size, left_out = lanes.begin_due_claim(0, lambda project: [])
    assert size > 0
    assert left_out == ["w"]  # full, and an attempt of its is running
    assert lanes.end_due_claim([], size) == (False, [])
    lanes.finish("p", "w")  # a quarter of the lane is free again
    assert lanes.refill_wanted
    assert lanes.begin_refill(0) == {"w": 1}
    lanes.end_refill([claimed(9, "p", "w")])
    assert not lanes.refill_wanted
    assert len(lanes.queued()) == 4
    lanes.check()


def test_a_capped_lane_hands_back_what_a_due_claim_brings_beyond_its_cap() -> None:
    caps = {"slow": 2}
    lanes = Lanes(FairShare(8, 8, 4, caps=caps), Breaker())
    assert lanes.fair.lane_limit("slow") == 2
    assert lanes.fair.lane_limit("fast") == 8
    size, _ = lanes.begin_due_claim(0, lambda project: [])
    batch = [claimed(n, "p", "slow") for n in range(5)] + [claimed(9, "p", "fast")]
    full, excess = lanes.end_due_claim(batch, size)
    assert not full
    assert [c.delivery_id for c in excess] == ["dlv_2", "dlv_3", "dlv_4"]
    assert sorted(c.delivery_id for c in lanes.queued()) == ["dlv_0", "dlv_1", "dlv_9"]
    lanes.check()
    # Backlogged with deliveries in memory: left out of the next due claim even
    # with nothing running, and refilled as its attempts end.
    assert lanes.begin_due_claim(0, lambda project: [])[1] == ["slow"]
    lanes.end_due_claim([], 1)
    assert not lanes.reserve("p", "slow", 0)  # hand-offs too find it full
    started = [lanes.start(), lanes.start()]
    assert {c.webhook_id for c in started if c} == {"slow", "fast"}
    slow = next(c for c in started if c and c.webhook_id == "slow")
    lanes.finish("p", slow.webhook_id)
    assert lanes.refill_wanted
    assert lanes.begin_refill(0) == {"slow": 1}
    lanes.end_refill([])
    lanes.check()


def test_a_paused_webhook_gets_no_room_until_the_pause_ends() -> None:
    lanes = lanes_for()
    lanes.breaker.record("w", False, 100)
    until = lanes.breaker.record("w", False, 100)
    assert until is not None
    assert not lanes.reserve("p", "w", 101)
    assert not lanes.stored_unleased([("p", "w")], 101)  # due when the pause ends
    assert lanes.begin_due_claim(101, lambda project: [])[1] == ["w"]
    lanes.end_due_claim([], 1)
    assert lanes.reserve("p", "w", until)
    lanes.check()


def test_hand_offs_are_admitted_up_to_the_lane_and_cancelled_ones_leave_nothing() -> None:
    lanes = lanes_for()
    assert [lanes.reserve("p", "w", 0) for _ in range(5)] == [True] * 4 + [False]
    lanes.cancel([claimed(1, "p", "w")])
    lanes.add([claimed(n, "p", "w") for n in (2, 3, 4)], reserved=True)
    lanes.check()
    assert [c.delivery_id for c in lanes.drop_queued()] == ["dlv_2", "dlv_3", "dlv_4"]
    assert (lanes.fair.load_total, lanes.queued()) == (0, [])
    lanes.check()


PROJECTS = ("a", "b", "c")
WEBHOOKS = {p: (f"{p}1", f"{p}2") for p in PROJECTS}
ALL_WEBHOOKS = [(p, w) for p in PROJECTS for w in WEBHOOKS[p]]
WEBHOOKS_ALL = [w for _, w in ALL_WEBHOOKS]
CAPACITY, PER_PROJECT, PER_WEBHOOK = 6, 4, 2
BOUND = FairShare(CAPACITY, PER_PROJECT, PER_WEBHOOK).memory_bound
# Lanes capped below 2 x PER_WEBHOOK at first (rate-limited webhooks); caps
# change as the machine runs, and each takes tokens to start.
CAPS = {"a2": 1, "b2": 3}


class LanesMachine(RuleBasedStateMachine):
    """The dispatcher's calls, against a model outbox and the attempts in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.caps = dict(CAPS)
        self.tokens = dict.fromkeys(WEBHOOKS_ALL, 1)
        self.lowered: set[str] = set()  # caps set or lowered while the lane held more
        self.lanes = Lanes(
            FairShare(CAPACITY, PER_PROJECT, PER_WEBHOOK, caps=self.caps, may_start=self.may_start),
            Breaker(threshold=2, pause_seconds=10),
        )
        self.now = 1000.0
        self.numbers = 0
        self.outbox: list[Claimed] = []  # due, unleased, oldest first
        self.coming: list[Claimed] = []  # admitted by reserve(), being stored
        self.running: dict[str, Claimed] = {}
        self.done: set[str] = set()
        self.created: set[str] = set()
        self.removed: set[str] = set()
        self.due_claim: tuple[int, list[str]] | None = None
        self.refill: dict[str, int] | None = None

    def may_start(self, webhook: str) -> bool:
        if self.tokens[webhook] <= 0:
            return False
        self.tokens[webhook] -= 1
        return True

    def new(self, project: str, webhook: str) -> Claimed:
        self.numbers += 1
        item = claimed(self.numbers, project, webhook)
        self.created.add(item.delivery_id)
        return item

    def webhook_ids(self, project: str) -> list[str]:
        return [w for w in WEBHOOKS[project] if w not in self.removed]

    def running_of(self, project: str | None = None, webhook: str | None = None) -> int:
        return sum(
            1
            for c in self.running.values()
            if project in (None, c.project_id) and webhook in (None, c.webhook_id)
        )

    def startable(self) -> set[str]:
        """Projects with a queued delivery that the three limits let take a slot."""
        if len(self.running) >= CAPACITY:
            return set()
        throttled = set(self.lanes.fair.throttled())
        return {
            c.project_id
            for c in self.lanes.queued()
            if self.running_of(webhook=c.webhook_id) < PER_WEBHOOK
            and self.running_of(c.project_id) < PER_PROJECT
            and c.webhook_id not in throttled
            and (c.webhook_id not in self.caps or self.tokens[c.webhook_id] > 0)
        }

    # Fresh deliveries.

    @rule(where=st.sampled_from(ALL_WEBHOOKS), count=st.integers(1, 4))
    def accept(self, where: tuple[str, str], count: int) -> None:
        """The acceptor asks for room per delivery; the refused ones are stored
        for a claim, and the dispatcher is told."""
        project, webhook = where
        if webhook in self.removed:
            return
        unleased = []
        for _ in range(count):
            item = self.new(project, webhook)
            before = self.lanes.fair.load_total
            if self.lanes.reserve(project, webhook, self.now):
                assert self.lanes.breaker.open_until(webhook, self.now) is None
                assert before >= BOUND or self.lanes.fair.load_total <= BOUND
                self.coming.append(item)
            else:
                unleased.append(item)
        if unleased:
            self.outbox += unleased
            self.lanes.stored_unleased([(project, webhook)], self.now)

    @precondition(lambda self: self.coming)
    @rule(data=st.data(), stored=st.booleans())
    def commit(self, data: st.DataObject, stored: bool) -> None:
        """The transaction that stored admitted deliveries commits (they are handed
        over), or fails or finds their events stored already (cancelled)."""
        items = data.draw(st.lists(st.sampled_from(self.coming), unique=True, min_size=1))
        for item in items:
            self.coming.remove(item)
        if stored:
            self.lanes.add(items, reserved=True)
        else:
            self.lanes.cancel(items)
            self.created -= {item.delivery_id for item in items}

    # Claims: begun, then ended after whatever else happens meanwhile.

    @precondition(lambda self: self.due_claim is None)
    @rule()
    def begin_due_claim(self) -> None:
        size, left_out = self.lanes.begin_due_claim(self.now, self.webhook_ids)
        assert 0 <= size <= CLAIM_BATCH
        assert size == 0 or not self.lanes.more_due  # set again by what comes meanwhile
        paused = {w for _, w in ALL_WEBHOOKS if self.lanes.breaker.open_until(w, self.now)}
        assert size == 0 or paused <= set(left_out)
        if size:
            self.due_claim = (size, left_out)

    @precondition(lambda self: self.due_claim is not None)
    @rule(data=st.data(), fails=st.booleans())
    def end_due_claim(self, data: st.DataObject, fails: bool) -> None:
        assert self.due_claim is not None
        (size, left_out), self.due_claim = self.due_claim, None
        if fails:  # Unavailable: the dispatcher tries again
            self.lanes.end_due_claim([], size)
            self.lanes.due_wanted()
            return
        due = [c for c in self.outbox if c.webhook_id not in left_out]
        # Other processes may have claimed some: fewer than the size may come.
        taken = due[: data.draw(st.integers(0, min(size, len(due))))]
        for item in taken:
            self.outbox.remove(item)
        full, excess = self.lanes.end_due_claim(taken, size)
        assert {c.webhook_id for c in excess} <= set(self.caps), "an uncapped lane's handed back"
        self.outbox += excess  # handed back: due again
        assert full == (len(taken) == size)
        assert not full or self.lanes.more_due

    @precondition(lambda self: self.refill is None and self.lanes.refill_wanted)
    @rule()
    def begin_refill(self) -> None:
        before = self.lanes.fair.load_total
        self.refill = self.lanes.begin_refill(self.now)
        for webhook, limit in self.refill.items():
            assert limit > 0
            assert self.lanes.breaker.open_until(webhook, self.now) is None
        assert before >= BOUND or self.lanes.fair.load_total <= BOUND
        assert not self.lanes.refill_wanted

    @precondition(lambda self: self.refill is not None)
    @rule(data=st.data(), fails=st.booleans())
    def end_refill(self, data: st.DataObject, fails: bool) -> None:
        assert self.refill is not None
        limits, self.refill = self.refill, None
        taken: list[Claimed] = []
        if not fails:
            for webhook, limit in limits.items():
                due = [c for c in self.outbox if c.webhook_id == webhook]
                taken += due[: data.draw(st.integers(0, min(limit, len(due))))]
            for item in taken:
                self.outbox.remove(item)
        self.lanes.end_refill(taken)

    # Attempts.

    @rule()
    def start(self) -> None:
        startable = self.startable()
        share = self.lanes.fair.share()
        below = {p for p in startable if self.running_of(p) < share}
        queued = self.lanes.queued()
        item = self.lanes.start()
        if item is None:
            assert not startable, "a slot was left idle"
            return
        assert item.project_id in (below or startable), "a project above its share went first"
        oldest = next(c for c in queued if c.webhook_id == item.webhook_id)
        assert item == oldest, "a lane was not served oldest first"
        assert item.delivery_id not in self.running
        self.running[item.delivery_id] = item

    @precondition(lambda self: self.running)
    @rule(data=st.data(), outcome=st.sampled_from(["sent", "failed", "retry"]))
    def finish(self, data: st.DataObject, outcome: str) -> None:
        """An attempt ends: delivered, failed for good, or due again later; a
        failure counts towards its webhook's breaker."""
        item = data.draw(st.sampled_from(sorted(self.running.values())))
        del self.running[item.delivery_id]
        if outcome != "sent":
            self.lanes.breaker.record(item.webhook_id, False, self.now)
        if outcome == "retry" and item.webhook_id not in self.removed:
            self.outbox.append(item)
        else:
            self.done.add(item.delivery_id)
        self.lanes.finish(item.project_id, item.webhook_id)

    @rule(seconds=st.sampled_from([0.5, 5.0, 30.0]))
    def tick(self, seconds: float) -> None:
        self.now += seconds

    @rule(webhook=st.sampled_from(WEBHOOKS_ALL))
    def token_back(self, webhook: str) -> None:
        """A rate-limit token comes back: a throttled webhook may start again."""
        self.tokens[webhook] += 1
        self.lanes.fair.unthrottle(webhook)

    @rule(webhook=st.sampled_from(WEBHOOKS_ALL), cap=st.sampled_from([None, 1, 2, 3]))
    def change_cap(self, webhook: str, cap: int | None) -> None:
        """A webhook's rate limit is set, changed or lifted: what its lane holds
        beyond the new cap is handed back to the outbox."""
        fair = self.lanes.fair
        if cap is None:
            self.caps.pop(webhook, None)
        else:
            self.caps[webhook] = cap
        excess = self.lanes.limits_changed()
        assert {c.webhook_id for c in excess} <= set(self.caps)
        self.outbox += excess
        assert webhook not in fair.throttled() or webhook in self.caps
        project = webhook[0]
        if cap is not None:
            queued = sum(1 for c in self.lanes.queued() if c.webhook_id == webhook)
            others = fair.load(project, webhook) - queued  # running and reserved
            assert queued <= max(0, fair.lane_limit(webhook) - others), "a lane beyond its cap"
            if fair.load(project, webhook) > cap:
                self.lowered.add(webhook)

    @rule(where=st.sampled_from(ALL_WEBHOOKS))
    def remove_webhook(self, where: tuple[str, str]) -> None:
        """The registry deletes a webhook: its deliveries in the outbox fail at
        once; those in memory still drain through their slots."""
        webhook = where[1]
        self.removed.add(webhook)
        for item in [c for c in self.outbox if c.webhook_id == webhook]:
            self.outbox.remove(item)
            self.done.add(item.delivery_id)

    @precondition(lambda self: self.due_claim is None and self.refill is None)
    @rule()
    def shutdown(self) -> None:
        """Queued deliveries are handed back; in-flight ones finish."""
        self.outbox += self.lanes.drop_queued()
        assert self.lanes.queued() == []

    # After every step.

    @invariant()
    def lanes_hold_their_invariants(self) -> None:
        self.lanes.check()

    @invariant()
    def nothing_lost_or_duplicated(self) -> None:
        places = [
            *(c.delivery_id for c in self.outbox),
            *(c.delivery_id for c in self.coming),
            *(c.delivery_id for c in self.lanes.queued()),
            *self.running,
            *self.done,
        ]
        twice = [d for d, n in Counter(places).items() if n > 1]
        assert not twice, f"in two places: {twice}"
        assert set(places) == self.created

    @invariant()
    def counts_match(self) -> None:
        fair = self.lanes.fair
        reserved = len(self.coming) + sum((self.refill or {}).values())
        held = reserved + len(self.lanes.queued()) + len(self.running)
        assert (fair.running_total, fair.load_total) == (len(self.running), held)

    @invariant()
    def capped_lanes_within_their_cap(self) -> None:
        """Admission keeps a capped lane within its cap (one whose cap came
        below what it held drains to it, admitting nothing meanwhile)."""
        fair = self.lanes.fair
        for project, webhook in ALL_WEBHOOKS:
            if webhook in self.caps and webhook not in self.lowered:
                assert fair.load(project, webhook) <= fair.lane_limit(webhook), webhook
            elif webhook in self.lowered and fair.load(project, webhook) <= self.caps.get(
                webhook, 0
            ):
                self.lowered.discard(webhook)

    @invariant()
    def in_flight_within_limits(self) -> None:
        assert len(self.running) <= CAPACITY
        for project in PROJECTS:
            assert self.running_of(project) <= PER_PROJECT
            for webhook in WEBHOOKS[project]:
                assert self.running_of(webhook=webhook) <= PER_WEBHOOK


TestLanesMachine = LanesMachine.TestCase
TestLanesMachine.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
