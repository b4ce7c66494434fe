"""Lanes: the claimed deliveries waiting in memory, and what the next claim
may take.

The dispatcher (claim/dispatcher.py) does the I/O and the waiting; every
count it keeps about deliveries lives here. Pure bookkeeping: no asyncio, no
I/O, no clock (times are passed in), so tests/delivery/test_lanes.py drives
it through random sequences of operations. The pure-rules import contract
(pyproject.toml) and tests/test_architecture.py, which imports it in a fresh
interpreter, check that it loads neither asyncio nor any transport library.

Words
- lane: a webhook's claimed deliveries waiting in memory for a send slot,
  oldest first. `add()` appends (a claim, or a hand-off from the acceptor),
  `start()` takes the next one that may be sent, in `FairShare`'s order.
- reserved, queued, running: `FairShare`'s counts per (project, webhook)
  (claim/fairness.py): room promised to deliveries on their way (a fresh one
  being stored, `reserve()`; a refill claim under way, `begin_refill()`),
  deliveries in a lane, and attempts between `start()` and `finish()`.
- backlogged: webhooks (-> project) that have due deliveries left in the
  outbox because their lane had no room. While an attempt of theirs runs,
  claims of due deliveries leave them out; once an attempt ends with a
  quarter of the lane free (`finish()`), they move to refill.
- refill: webhooks (-> project) whose lanes have room for deliveries waiting
  in the outbox; the next claim (`begin_refill()`) claims for them alone,
  up to their room.
- more_due: whether a claim of due deliveries may find something. Fresh
  deliveries normally arrive by hand-off (and those stored without a lease
  go to refill or backlogged, see `stored_unleased()`), so only two things
  set it: `due_wanted()`, which the dispatcher calls from `wake()` (held
  deliveries released, a redelivery, a retry now due) and after a claim
  failed, and a claim that came back full (`end_due_claim()`). The next
  claim of due deliveries clears it (`begin_due_claim()`).
- the breaker (claim/breaker.py): a paused webhook gets no room: `reserve()`
  refuses it, refills skip it, claims of due deliveries leave it out (its
  deliveries in the outbox are due when the pause ends).
- capped: a webhook whose lane holds fewer than 2 x per_webhook
  (`FairShare.caps`: a rate-limited one holds one second's worth). Its
  deliveries take a slot only with a token (`FairShare.may_start`); without
  one the webhook is throttled and its deliveries wait in the lane, a token
  cycle (a second plus one answer) at most, since the lane holds no more
  than the tokens. A claim of due deliveries is not bounded per webhook, so
  what it brings a capped lane beyond its cap is handed back
  (`end_due_claim()`), and so is what a lane holds beyond a cap set or
  lowered since (`limits_changed()`); a backlogged capped webhook with
  deliveries in memory is left out of such claims: it is refilled, up to
  its room, as its attempts end.

Invariants
1. Lanes and FairShare agree: for every (project, webhook), the lane's length
   is FairShare's queued count; no lane is kept empty; every delivery in a
   lane has that lane's webhook and the same project.
2. Nothing is lost or duplicated: a delivery is in at most one lane, once.
   `start()` hands each out once, for exactly one `finish()`; `drop_queued()`
   returns every queued one (to be handed back) and leaves none. So every
   claimed delivery is queued, running or handed back.
3. Reserved = hand-offs admitted and not yet `add`ed or `cancel`led, plus
   the limits of the refill under way (between `begin_refill()` and
   `end_refill()`; at most one at a time).
4. In flight (FairShare, which `check()` also checks): at most `capacity`,
   `per_project` of one project, `per_webhook` of one webhook.
5. A webhook is backlogged or to refill, never both.
6. Memory: admission (`reserve()`, refills) never takes the total held
   (reserved + queued + running) past FairShare's `memory_bound`. A claim of
   due deliveries is not reserved (the outbox decides how many come back),
   so hand-offs may use its room while it runs: the total then exceeds the
   bound by at most that claim's size (itself at most the bound), and
   admits nothing more until it is back under: never past twice the bound.

Who checks them: `check()` asserts 1, 4 and 5 whole, and what of the others
can be seen in Lanes alone: no delivery queued twice (2), at least a refill's
limits reserved while it runs (3), never past twice the bound (6). The rest
needs what came in and went out, which Lanes does not keep: the state machine
in tests/delivery/test_lanes.py checks it against its model after every step
(each delivery in exactly one place, reserved + queued + running equal to
what the model holds, admission within the bound). That each `start()` gets
exactly one `finish()` is the caller's part: the dispatcher calls `finish()`
in the `finally` of the attempt `start()` gave it.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable

from edgesense.delivery.claim.breaker import Breaker
from edgesense.delivery.claim.fairness import FairShare
from edgesense.delivery.store.rows import Claimed

CLAIM_BATCH = 500
CLAIM_LOW_WATER = 64


class Lanes:
    def __init__(self, fair: FairShare, breaker: Breaker) -> None:
        self.fair = fair
        self.breaker = breaker
        self._more_due = True
        self._lanes: dict[str, deque[Claimed]] = {}
        self._backlogged: dict[str, str] = {}
        self._refill: dict[str, str] = {}
        # The refill claim under way: webhook -> (project, room reserved for it).
        self._refilling: dict[str, tuple[str, int]] = {}

    # Hand-off: a fresh delivery stored already leased to this process.

    def reserve(self, project_id: str, webhook_id: str, now: float) -> bool:
        """Room for one fresh delivery of this webhook (counted as reserved until
        `add(..., reserved=True)` or `cancel()`)? Never while it is paused."""
        if self.breaker.open_until(webhook_id, now) is not None:
            return False
        return self.fair.admit(project_id, webhook_id)

    def cancel(self, items: Iterable[Claimed]) -> None:
        """Reserved deliveries that will not come (not stored, or not new)."""
        cancel = self.fair.cancel
        for item in items:
            cancel(item.project_id, item.webhook_id)

    def add(self, items: Iterable[Claimed], reserved: bool = False) -> None:
        """Claimed deliveries join their lanes (`reserved`: hand-offs that had room
        reserved by `reserve()`)."""
        queue, lanes = self.fair.queue, self._lanes
        for item in items:
            queue(item.project_id, item.webhook_id, reserved)
            lane = lanes.get(item.webhook_id)
            if lane is None:
                lane = lanes[item.webhook_id] = deque()
            lane.append(item)

    def stored_unleased(self, webhooks: Iterable[tuple[str, str]], now: float) -> bool:
        """Fresh pending deliveries of these (project, webhook)s were stored without
        a lease: to refill when their lane has room, else backlogged (those of a
        paused webhook are due when the pause ends). True when a refill is wanted."""
        wanted = False
        for project_id, webhook_id in webhooks:
            if self.breaker.open_until(webhook_id, now) is not None:
                continue
            if self.fair.room(project_id, webhook_id) <= 0:
                self._backlog(webhook_id, project_id)
            else:
                # Room in the lane: an ordered webhook's (never leased at
                # accept; also its next ones once a delivery ended), or one
                # whose lease was refused for a limit since lifted or a
                # missing index.
                self._backlogged.pop(webhook_id, None)
                self._refill[webhook_id] = project_id
                wanted = True
        return wanted

    # Send slots.

    def start(self) -> Claimed | None:
        """The next delivery to send, taking a free slot (FairShare's order); None
        while no queued delivery may take one."""
        chosen = self.fair.start()
        if chosen is None:
            return None
        webhook_id = chosen[1]
        lane = self._lanes[webhook_id]
        item = lane.popleft()
        if not lane:
            del self._lanes[webhook_id]
        return item

    def finish(self, project_id: str, webhook_id: str) -> None:
        """An attempt `start()` gave a slot has ended (however it went)."""
        fair = self.fair
        fair.finish(project_id, webhook_id)
        if webhook_id in self._backlogged and 4 * fair.room(
            project_id, webhook_id
        ) >= fair.lane_limit(webhook_id):
            del self._backlogged[webhook_id]
            self._refill[webhook_id] = project_id

    @property
    def refill_wanted(self) -> bool:
        return bool(self._refill)

    # Claims.

    @property
    def more_due(self) -> bool:
        """Whether a claim of due deliveries may find something (see the module
        docstring)."""
        return self._more_due

    def due_wanted(self) -> None:
        """Something may be due: the next claim of due deliveries looks at once
        (the dispatcher's `wake()`, and after a claim failed)."""
        self._more_due = True

    def claim_size(self) -> int:
        """How many deliveries a claim of due ones may take now (0: wait for room
        for a batch).

        Claims come in batches: while much is in flight, wait until a batch
        fits (every finished attempt wakes the claim loop while more is due).
        While other projects' work fills memory, a claim still takes a
        newcomer's share (the projects that fill it are left out).
        """
        fair = self.fair
        load, capacity = fair.load_total, fair.capacity
        room = min(CLAIM_BATCH, fair.claim_room())
        if load >= 2 * capacity:
            return room
        return room if room >= CLAIM_LOW_WATER or (room > 0 and load < capacity) else 0

    def begin_due_claim(
        self, now: float, webhook_ids: Callable[[str], Iterable[str]]
    ) -> tuple[int, list[str]]:
        """(How many, which webhooks to leave out) for a claim of due deliveries
        (retries, redeliveries, ...); 0: none now. Left out: full lanes with an
        attempt running (refilled by their own claims once they drain), paused
        webhooks, and the webhooks (`webhook_ids(project)`) of projects that
        hold all they may. Clears `more_due`: whatever sets it meanwhile asks
        for another claim."""
        size = self.claim_size()
        if size <= 0:
            return 0, []
        fair = self.fair
        for webhook_id, lane in self._lanes.items():
            project_id = lane[0].project_id
            if fair.room(project_id, webhook_id) <= 0:
                self._backlog(webhook_id, project_id)
        running, load, caps = fair.running, fair.load, fair.caps
        left_out = [
            w for w, p in self._backlogged.items() if running(p, w) or (load(p, w) and w in caps)
        ]
        left_out += self.breaker.paused(now)
        for project_id in fair.saturated():
            left_out += webhook_ids(project_id)
        self._more_due = False
        return size, left_out

    def end_due_claim(self, claimed: list[Claimed], size: int) -> tuple[bool, list[Claimed]]:
        """The claim's deliveries join their lanes, but those beyond a capped
        lane's limit: (whether it came back full, so more may be due right
        now; the deliveries to hand back, their webhooks now backlogged)."""
        full = len(claimed) == size
        self._more_due = self._more_due or full
        fair = self.fair
        caps = fair.caps
        kept, excess = claimed, []
        if caps and any(item.webhook_id in caps for item in claimed):
            kept = []
            room: dict[str, int] = {}
            for item in claimed:
                webhook_id = item.webhook_id
                if webhook_id not in caps:
                    kept.append(item)
                    continue
                left = room.get(webhook_id)
                if left is None:
                    load = fair.load(item.project_id, webhook_id)
                    left = fair.lane_limit(webhook_id) - load
                if left > 0:
                    kept.append(item)
                else:
                    excess.append(item)
                    self._backlog(webhook_id, item.project_id)
                room[webhook_id] = left - 1
        self.add(kept)
        return full, excess

    def begin_refill(self, now: float) -> dict[str, int]:
        """webhook -> how many to claim, for the webhooks to refill, with that
        room reserved until `end_refill()` (so that lanes refilled together stay
        within their project's room, and hand-offs meanwhile too)."""
        if self._refilling:
            raise ValueError("a refill is already under way")
        refill, self._refill = self._refill, {}
        limits: dict[str, int] = {}
        for webhook_id, project_id in refill.items():
            if self.breaker.open_until(webhook_id, now) is not None:
                continue  # due again when the pause ends
            want = self.fair.room(project_id, webhook_id)
            if want <= 0:
                self._backlog(webhook_id, project_id)  # hand-offs took the room
                continue
            limits[webhook_id] = want
            self.fair.reserve(project_id, webhook_id, want)
            self._refilling[webhook_id] = (project_id, want)
        return limits

    def end_refill(self, claimed: list[Claimed]) -> None:
        """The refill's deliveries join their lanes (none if the claim failed:
        the refill's rows are then left to claims of due deliveries)."""
        refilling, self._refilling = self._refilling, {}
        for webhook_id, (project_id, limit) in refilling.items():
            self.fair.cancel(project_id, webhook_id, limit)
        self.add(claimed)
        got = Counter(item.webhook_id for item in claimed)
        for webhook_id, (project_id, limit) in refilling.items():
            if got[webhook_id] == limit and webhook_id not in self._refill:
                self._backlogged[webhook_id] = project_id  # there may be more

    def limits_changed(self) -> list[Claimed]:
        """Caps were set, changed or lifted: a webhook no longer capped is no
        longer throttled, and what a capped lane queues beyond its cap is
        taken out, newest first, to hand back (its webhook backlogged)."""
        fair = self.fair
        for webhook_id in fair.throttled():
            if webhook_id not in fair.caps:
                fair.unthrottle(webhook_id)
        excess: list[Claimed] = []
        for webhook_id in [w for w in self._lanes if w in fair.caps]:
            lane = self._lanes[webhook_id]
            project_id = lane[0].project_id
            over = min(len(lane), fair.load(project_id, webhook_id) - fair.lane_limit(webhook_id))
            if over <= 0:
                continue
            taken = [lane.pop() for _ in range(over)]
            if not lane:
                del self._lanes[webhook_id]
            fair.unqueue(project_id, webhook_id, over)
            self._backlog(webhook_id, project_id)
            excess += reversed(taken)
        return excess

    def drop_queued(self) -> list[Claimed]:
        """Take every queued delivery out (to hand back); in-flight ones stay."""
        queued = [item for lane in self._lanes.values() for item in lane]
        self._lanes.clear()
        self.fair.drop_queued()
        return queued

    def queued(self) -> list[Claimed]:
        """Every queued delivery, lane by lane, oldest first."""
        return [item for lane in self._lanes.values() for item in lane]

    def _backlog(self, webhook_id: str, project_id: str) -> None:
        self._refill.pop(webhook_id, None)
        self._backlogged[webhook_id] = project_id

    def check(self) -> None:
        """Assert the invariants in this module's docstring (for tests: it walks
        everything)."""
        fair = self.fair
        fair.check()
        seen: set[str] = set()
        for webhook_id, lane in self._lanes.items():
            assert lane, f"{webhook_id}: an empty lane was kept"
            project_id = lane[0].project_id
            for item in lane:
                assert (item.webhook_id, item.project_id) == (webhook_id, project_id), item
                assert item.delivery_id not in seen, f"{item.delivery_id} queued twice"
                seen.add(item.delivery_id)
        reserved_for_refill = {w: n for w, (_, n) in self._refilling.items()}
        for project_id, webhook_id, reserved, queued, _ in fair.counts():
            found = self._lanes.get(webhook_id)
            in_lane = len(found) if found is not None else 0
            assert queued == in_lane, f"{webhook_id}: {queued} queued, {in_lane} in its lane"
            assert found is None or found[0].project_id == project_id, f"{webhook_id}: project"
            assert reserved >= reserved_for_refill.get(webhook_id, 0), f"{webhook_id}: reserved"
        assert len(seen) == sum(q for *_, q, _ in fair.counts()), "a lane FairShare does not count"
        both = self._backlogged.keys() & self._refill.keys()
        assert not both, f"backlogged and to refill: {both}"
        assert fair.load_total <= 2 * fair.memory_bound, f"{fair.load_total} held"
