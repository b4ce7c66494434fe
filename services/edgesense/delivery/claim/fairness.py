"""Who sends next: fair shares of the send slots across projects, then across
each project's webhooks.

The dispatcher queues deliveries per webhook (its lane) and asks `start()`
which webhook's next delivery takes a free slot; `admit()` and `room()` say
how many deliveries of a webhook it may take into memory at all. Pure
bookkeeping: no I/O, no clock.

Rules
- Slots: at most `capacity` attempts in flight, `per_project` of one project
  and `per_webhook` of one webhook. With `per_project` below `capacity` (by
  default all but one webhook's limit, and at least half:
  `edgesense.common.config.default_per_project`),
  a project whose receivers hang cannot hold every slot for a whole attempt
  timeout: a project that starts sending meanwhile finds free slots at once,
  without waiting for an attempt to end.
- A free slot goes first to a project below its fair share (`capacity`
  divided by the projects with work in memory), round-robin among them; only
  when none of those can use it does a project at or above its share get it
  (up to `per_project`: slots are not left idle). Within a project, slots go
  round-robin over its webhooks. This is max-min fairness: a project asking
  for less than its share gets all it asks for.
- Admission: a webhook may hold 2 x `per_webhook` deliveries (queued and in
  flight), or fewer where `caps` says so (a rate-limited webhook holds at
  most one second's worth: claim/ratelimit.py), everything together
  `queue_factor` x `capacity` (`queue_limit`); a project below twice its
  fair share is admitted beyond the overall bound, so other projects' queues
  never keep its deliveries out, up to a hard bound of `memory_bound`
  (`queue_limit` + 2 x `capacity`) however many projects arrive (shares are
  counted as each project comes, and earlier ones keep what they took). A
  project alone may fill memory: its queue is what keeps its slots busy
  without a claim per attempt, and each delivery it holds was handed over
  leased at accept instead of stored unleased and claimed later (one UPDATE
  less per delivery). How large the queue may be is `queue_factor_for`'s:
  what memory holds must be sent well within its lease.
- Throttled: a capped webhook whose `may_start()` refuses (no rate-limit
  token now) takes no slot and is passed over until `unthrottle()`: it
  waits in its lane, never in a slot, so it slows no other webhook.
- Known limit: with `per_project` below `capacity`, one project whose
  receivers hang leaves slots free for others; two or more such projects
  can together hold every slot, and a third then waits for an attempt to
  end (at most the attempt timeout) for its first slot.

Invariants (tests/delivery/test_fairness.py checks them through these methods;
`check()` asserts those the counts show, for Lanes' tests)
- Every count is >= 0; a webhook's or project's entry is dropped once its
  counts are all 0, so webhooks that come and go leave nothing behind.
- in flight: total <= capacity, per project <= per_project, per webhook <=
  per_webhook.
- `start()` answers None only when no queued delivery of a webhook not
  throttled may take a slot under those three limits (work-conserving).
- `start()` never picks a project at or above its fair share while a project
  below it has a delivery that may take a slot.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping

# The overall queue, in times the capacity (`queue_factor_for`): at least
# the 2 that admission always allowed, at most MAX_QUEUE_FACTOR.
MIN_QUEUE_FACTOR = 2
MAX_QUEUE_FACTOR = 6


def queue_factor_for(lease_seconds: float, attempt_timeout_seconds: float) -> int:
    """How many times the capacity the overall queue may hold, given the lease
    and the attempt timeout. A full queue drains in at most `factor` attempt
    timeouts (every slot busy, every attempt timing out; the breaker pauses
    such webhooks sooner), and what waits in memory is leased to this
    process: that must take at most half the lease, or the lease could
    expire while the delivery waits and another claim send it again.
    Newcomers admitted past the queue (up to `memory_bound`, 2 x capacity
    more) take two timeouts more: 21 s of the 30 s lease with the defaults. With the defaults
    (30 s lease, 3 s timeout) 5: on PostgreSQL, fan-out to 10 webhooks then
    hands over at accept what the factor 2 left unleased to be claimed, and
    made 1.2x the deliveries/s (README, Performance)."""
    if attempt_timeout_seconds <= 0:
        return MAX_QUEUE_FACTOR
    factor = int(lease_seconds // (2 * attempt_timeout_seconds))
    return max(MIN_QUEUE_FACTOR, min(MAX_QUEUE_FACTOR, factor))


class _Counts:
    __slots__ = ("queued", "reserved", "running")

    def __init__(self) -> None:
        self.reserved = 0  # admitted, not yet queued (being stored)
        self.queued = 0  # in memory, waiting for a slot
        self.running = 0  # in flight

    @property
    def load(self) -> int:
        return self.reserved + self.queued + self.running


class _Project(_Counts):
    __slots__ = ("ready", "webhooks")

    def __init__(self) -> None:
        super().__init__()
        self.webhooks: dict[str, _Counts] = {}
        # Webhooks with queued deliveries and a free slot of their own, in turn order.
        self.ready: OrderedDict[str, None] = OrderedDict()


def _always(webhook: str) -> bool:
    return True


class FairShare:
    def __init__(
        self,
        capacity: int,
        per_project: int,
        per_webhook: int,
        caps: Mapping[str, int] | None = None,
        may_start: Callable[[str], bool] = _always,
        queue_factor: int = MIN_QUEUE_FACTOR,
    ) -> None:
        """`queue_factor`: memory holds `queue_factor` x `capacity` deliveries
        (see the rules). `caps`: webhook -> at most this many of its deliveries in memory (if
        fewer than 2 x `per_webhook`), read live (the owner updates it in
        place). `may_start(webhook)`: asked before a capped webhook's
        delivery takes a slot; False throttles the webhook (see the rules)."""
        if not 1 <= per_project <= capacity or per_webhook < 1:
            raise ValueError(
                f"need 1 <= per_project ({per_project}) <= capacity ({capacity}) "
                f"and per_webhook ({per_webhook}) >= 1"
            )
        if queue_factor < 1:
            raise ValueError(f"need queue_factor ({queue_factor}) >= 1")
        self.capacity = capacity
        self.queue_limit = queue_factor * capacity
        # Never passed through `admit()` or a claim (see the rules).
        self.memory_bound = self.queue_limit + 2 * capacity
        self.per_project = per_project
        self.per_webhook = per_webhook
        self.caps: Mapping[str, int] = caps if caps is not None else {}
        self.may_start = may_start
        self.running_total = 0
        self.load_total = 0
        self._projects: dict[str, _Project] = {}
        # Projects with a ready webhook and a free slot of their own, in turn order.
        self._eligible: OrderedDict[str, None] = OrderedDict()
        # Throttled webhooks (with load), and their projects.
        self._throttled: dict[str, str] = {}

    def share(self, newcomer: bool = False) -> int:
        """A project's fair share of the slots now (`newcomer`: once one more project has work)."""
        return max(1, self.capacity // max(1, len(self._projects) + newcomer))

    def lane_limit(self, webhook: str) -> int:
        """How many of this webhook's deliveries memory may hold (queued and in flight)."""
        limit = 2 * self.per_webhook
        cap = self.caps.get(webhook)
        return limit if cap is None else max(1, min(limit, cap))

    def room(self, project: str, webhook: str) -> int:
        """How many more deliveries of this webhook may be taken into memory now."""
        entry = self._projects.get(project)
        project_load = entry.load if entry is not None else 0
        hook = entry.webhooks.get(webhook) if entry is not None else None
        webhook_load = hook.load if hook is not None else 0
        return max(
            0,
            min(
                self.lane_limit(webhook) - webhook_load,
                self._overall_room(project_load, entry is None),
            ),
        )

    def _overall_room(self, project_load: int, newcomer: bool) -> int:
        room = max(self.queue_limit - self.load_total, 2 * self.share(newcomer) - project_load)
        # Shares are counted as each project arrives and earlier projects keep
        # what they took, so many projects could add up past the bound: cap it.
        return min(room, self.memory_bound - self.load_total)

    def saturated(self) -> list[str]:
        """Projects that may take no more deliveries into memory (claims leave them out)."""
        return [
            name
            for name, entry in self._projects.items()
            if self._overall_room(entry.load, False) <= 0
        ]

    def claim_room(self) -> int:
        """How many due deliveries of projects not `saturated()` a claim may take:
        the overall room, or while that is used up, a newcomer's admission."""
        overall = self.queue_limit - self.load_total
        room = overall if overall > 0 else 2 * self.share(newcomer=True)
        return max(0, min(room, self.memory_bound - self.load_total))

    def load(self, project: str, webhook: str) -> int:
        entry = self._projects.get(project)
        hook = entry.webhooks.get(webhook) if entry is not None else None
        return hook.load if hook is not None else 0

    def running(self, project: str, webhook: str) -> int:
        entry = self._projects.get(project)
        hook = entry.webhooks.get(webhook) if entry is not None else None
        return hook.running if hook is not None else 0

    def admit(self, project: str, webhook: str) -> bool:
        """Reserve room for one delivery if there is any (see `room`)."""
        # Once per freshly accepted delivery: the common case (a webhook with
        # work in memory, which is not full) first, without room()'s sums.
        entry = self._projects.get(project)
        hook = entry.webhooks.get(webhook) if entry is not None else None
        if (
            entry is None
            or hook is None
            or self.load_total >= self.queue_limit
            or hook.load >= 2 * self.per_webhook
            or webhook in self.caps
        ):
            if self.room(project, webhook) <= 0:
                return False
            entry, hook = self._entry(project, webhook)
        hook.reserved += 1
        entry.reserved += 1
        self.load_total += 1
        return True

    def reserve(self, project: str, webhook: str, count: int = 1) -> None:
        """Count `count` deliveries as coming (being stored or claimed), room or not."""
        entry, hook = self._entry(project, webhook)
        hook.reserved += count
        entry.reserved += count
        self.load_total += count

    def cancel(self, project: str, webhook: str, count: int = 1) -> None:
        """Reserved deliveries that will not come after all."""
        entry, hook = self._projects[project], self._projects[project].webhooks[webhook]
        if count > hook.reserved:
            raise ValueError(f"{webhook} has {hook.reserved} reserved, not {count}")
        hook.reserved -= count
        entry.reserved -= count
        self.load_total -= count
        self._forget(project, entry, webhook, hook)

    def queue(self, project: str, webhook: str, reserved: bool = False) -> None:
        """A delivery of this webhook waits in memory for a slot (`reserved`: one
        of its reserved ones)."""
        entry, hook = self._entry(project, webhook)
        if reserved:
            if hook.reserved <= 0:
                self._forget(project, entry, webhook, hook)
                raise ValueError(f"{webhook} has no delivery reserved")
            hook.reserved -= 1
            entry.reserved -= 1
        else:
            self.load_total += 1
        hook.queued += 1
        entry.queued += 1
        self._update(project, entry, webhook, hook)

    def start(self) -> tuple[str, str] | None:
        """The (project, webhook) whose next queued delivery takes a free slot, if any."""
        projects, eligible = self._projects, self._eligible
        while True:
            if self.running_total >= self.capacity or not eligible:
                return None
            chosen = next(iter(eligible))
            if len(eligible) > 1:
                share = self.share()
                chosen = next((p for p in eligible if projects[p].running < share), chosen)
                eligible.move_to_end(chosen)
            entry = projects[chosen]
            webhook = next(iter(entry.ready))
            if len(entry.ready) > 1:
                entry.ready.move_to_end(webhook)
            hook = entry.webhooks[webhook]
            if webhook in self.caps and not self.may_start(webhook):
                self._throttled[webhook] = chosen
                self._update(chosen, entry, webhook, hook)
                continue
            break
        hook.queued -= 1
        hook.running += 1
        entry.queued -= 1
        entry.running += 1
        self.running_total += 1
        self._update(chosen, entry, webhook, hook)
        return chosen, webhook

    def unthrottle(self, webhook: str) -> bool:
        """A throttled webhook may try to start again; False if it was not throttled."""
        project = self._throttled.pop(webhook, None)
        if project is None:
            return False
        entry = self._projects[project]
        self._update(project, entry, webhook, entry.webhooks[webhook])
        return True

    def throttled(self) -> list[str]:
        return list(self._throttled)

    def unqueue(self, project: str, webhook: str, count: int) -> None:
        """Forget `count` queued deliveries of this webhook (handed back)."""
        entry, hook = self._projects[project], self._projects[project].webhooks[webhook]
        if count > hook.queued:
            raise ValueError(f"{webhook} has {hook.queued} queued, not {count}")
        hook.queued -= count
        entry.queued -= count
        self.load_total -= count
        self._update(project, entry, webhook, hook)

    def finish(self, project: str, webhook: str) -> None:
        """An attempt that `start()` gave a slot has ended."""
        entry, hook = self._projects[project], self._projects[project].webhooks[webhook]
        if hook.running <= 0:
            raise ValueError(f"{webhook} has no attempt in flight")
        hook.running -= 1
        entry.running -= 1
        self.running_total -= 1
        self.load_total -= 1
        self._update(project, entry, webhook, hook)

    def drop_queued(self) -> None:
        """Forget every queued delivery (handed back at shutdown); in-flight ones stay."""
        for name, entry in list(self._projects.items()):
            for webhook, hook in list(entry.webhooks.items()):
                self.load_total -= hook.queued
                entry.queued -= hook.queued
                hook.queued = 0
                self._update(name, entry, webhook, hook)

    def counts(self) -> Iterator[tuple[str, str, int, int, int]]:
        """(project, webhook, reserved, queued, running) of every webhook with load."""
        for name, entry in self._projects.items():
            for webhook, hook in entry.webhooks.items():
                yield name, webhook, hook.reserved, hook.queued, hook.running

    def check(self) -> None:
        """Assert the invariants above that the counts alone show (for tests:
        it walks every entry)."""
        running = load = 0
        for name, entry in self._projects.items():
            assert entry.webhooks, f"{name}: an entry without webhooks was kept"
            sums = [0, 0, 0]
            for webhook, hook in entry.webhooks.items():
                counts = (hook.reserved, hook.queued, hook.running)
                assert min(counts) >= 0, f"{webhook}: counts {counts}"
                assert hook.load > 0, f"{webhook}: an entry without load was kept"
                assert hook.running <= self.per_webhook, f"{webhook}: {hook.running} in flight"
                ready = (
                    hook.queued > 0
                    and hook.running < self.per_webhook
                    and webhook not in self._throttled
                )
                assert (webhook in entry.ready) == ready, f"{webhook}: turn order out of step"
                if webhook in self._throttled:
                    assert self._throttled[webhook] == name, f"{webhook}: throttled elsewhere"
                sums = [a + b for a, b in zip(sums, counts, strict=True)]
            assert sums == [entry.reserved, entry.queued, entry.running], f"{name}: sums"
            assert entry.running <= self.per_project, f"{name}: {entry.running} in flight"
            eligible = bool(entry.ready) and entry.running < self.per_project
            assert (name in self._eligible) == eligible, f"{name}: turn order out of step"
            running += entry.running
            load += entry.load
        assert set(self._eligible) <= set(self._projects), "a project without load is eligible"
        for webhook, project in self._throttled.items():
            assert webhook in self._projects[project].webhooks, f"{webhook}: throttled, no load"
        assert (running, load) == (self.running_total, self.load_total), "totals out of step"
        assert running <= self.capacity, f"{running} in flight"

    def _entry(self, project: str, webhook: str) -> tuple[_Project, _Counts]:
        entry = self._projects.get(project)
        if entry is None:
            entry = self._projects[project] = _Project()
        hook = entry.webhooks.get(webhook)
        if hook is None:
            hook = entry.webhooks[webhook] = _Counts()
        return entry, hook

    def _update(self, project: str, entry: _Project, webhook: str, hook: _Counts) -> None:
        """Keep the turn orders and the entries in step with the counts."""
        if hook.queued and hook.running < self.per_webhook and webhook not in self._throttled:
            if webhook not in entry.ready:
                entry.ready[webhook] = None
        else:
            entry.ready.pop(webhook, None)
        if entry.ready and entry.running < self.per_project:
            if project not in self._eligible:
                self._eligible[project] = None
        else:
            self._eligible.pop(project, None)
        self._forget(project, entry, webhook, hook)

    def _forget(self, project: str, entry: _Project, webhook: str, hook: _Counts) -> None:
        if not hook.load:
            del entry.webhooks[webhook]
            self._throttled.pop(webhook, None)
            if not entry.webhooks:
                del self._projects[project]
