"""A webhook's rate limit: a receiver never gets more than `rate` requests in
any one second.

A token bucket of `rate` tokens per webhook. A request takes a token when it
starts, and the token comes back one second after the request has ended
(answered, failed or timed out). A webhook idle for a second may take a
burst of `rate` requests at once (one second's worth); after that, requests
go as tokens come back. Why after the end and not after the start: the
receiver sees a request some time after it started, and that time varies (a
cold connection, a busy sender process); a request that arrives is always
over before its token can start another, so the limit holds at the receiver
itself, not only at our side. The cost: a webhook answering in d seconds
gets at most rate / (1 + d) requests per second.

The dispatcher asks `take()` as a rate-limited webhook's delivery is about to
take a send slot (FairShare's `may_start`), and calls `give_back()` when its
request has ended. Without a token the webhook is throttled: its deliveries
wait in its lane, holding no slot, until the time `take()` named (or the
next give-back). The lanes (claim/lanes.py) keep at most `rate` of its
deliveries in memory (FairShare's caps), so one waits about a token cycle
(a second plus an answer) at most, while everything beyond waits in the
outbox, using no attempt.

Exact within one delivery process. Several delivery processes on PostgreSQL
each keep their own buckets (see README, "Rate limits"): with n processes
sending to one webhook at once, a second may see up to n x `rate` requests.

Pure bookkeeping: no clock (times are passed in, from a monotonic clock), no
I/O; tests/delivery/test_ratelimit.py drives it.
"""

from __future__ import annotations

import heapq
import math

WINDOW_SECONDS = 1.0
# Every this many takes, webhooks whose buckets are full again are forgotten.
PRUNE_EVERY = 1024


class _Bucket:
    __slots__ = ("out", "returning")

    def __init__(self) -> None:
        self.out = 0  # taken by requests not yet ended
        self.returning: list[float] = []  # a heap: when given-back tokens are usable again


class RateLimiter:
    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._takes = 0

    def take(self, webhook_id: str, rate: int, now: float) -> float:
        """Take a token for a request starting at `now` if there is one: then
        `now` is answered. Otherwise, when to try again: the time the next
        token comes back, or infinity while every token is out with a request
        still under way (try again after a `give_back()`)."""
        if rate < 1:
            raise ValueError(f"a rate limit is at least 1 request per second, not {rate}")
        self._takes += 1
        if self._takes % PRUNE_EVERY == 0:
            self.prune(now)
        bucket = self._buckets.get(webhook_id)
        if bucket is None:
            bucket = self._buckets[webhook_id] = _Bucket()
        returning = bucket.returning
        while returning and returning[0] <= now:
            heapq.heappop(returning)
        if bucket.out + len(returning) < rate:
            bucket.out += 1
            return now
        return returning[0] if returning else math.inf

    def give_back(self, webhook_id: str, now: float) -> None:
        """The request that took a token of this webhook has ended at `now`."""
        bucket = self._buckets.get(webhook_id)
        if bucket is None or bucket.out <= 0:
            raise ValueError(f"{webhook_id} has no token out")
        bucket.out -= 1
        heapq.heappush(bucket.returning, now + WINDOW_SECONDS)

    def prune(self, now: float) -> None:
        """Forget webhooks with no token out or coming back: their buckets are full."""
        full = [
            webhook_id
            for webhook_id, bucket in self._buckets.items()
            if not bucket.out and all(t <= now for t in bucket.returning)
        ]
        for webhook_id in full:
            del self._buckets[webhook_id]

    def __len__(self) -> int:
        return len(self._buckets)
