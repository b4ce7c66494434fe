"""When to retry a failed attempt: exponential backoff with jitter, and Retry-After.

The delay before retry number n (n = 1 is the first retry, after the first
attempt) starts from d = min(cap, base * 2**(n - 1)) and is drawn uniformly
from [d/2, d] ("equal jitter"). Jitter spreads out the retries of many
deliveries that failed together (a receiver that was down for a minute gets
its backlog back over a window, not in one burst); keeping at least half of d
keeps the schedule exponential, so a broken receiver is not retried almost at
once as "full jitter" (uniform in [0, d]) sometimes would.

A receiver that answers 429 or 503 with Retry-After is asking for time; it is
honoured within the cap: the delay is max(backoff, Retry-After), never more
than cap. Never less than the backoff, so a Retry-After of 0 cannot make a
delivery hammer its receiver; never more than the cap, so a receiver cannot
park a delivery for days (the retry is made at the cap and the receiver may
ask again). Retry-After on other statuses is ignored.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_AFTER_STATUSES = frozenset({429, 503})
_MAX_EXPONENT = 1000  # 2.0**1000 still fits a float; the cap applies long before


def backoff_ceiling(retry: int, base: float, cap: float) -> float:
    """The longest wait before retry number `retry` (1-based): `base`, then
    twice as long for each retry after the first, up to `cap`."""
    if retry < 1:
        raise ValueError(f"retry numbers start at 1, not {retry}")
    return min(cap, base * 2.0 ** min(retry - 1, _MAX_EXPONENT))


def backoff_delay(retry: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `retry` (1-based), uniform in [d/2, d]."""
    delay = backoff_ceiling(retry, base, cap)
    return (rng or random).uniform(delay / 2, delay)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from `now` asked for by a Retry-After value, or None if it is not one.

    Accepts delta-seconds (`120`) and an HTTP-date (`Wed, 21 Oct 2015 07:28:00
    GMT`); a date already past means 0.0. Negative numbers, garbage and
    missing values give None.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def next_delay(
    retry: int,
    status_code: int | None,
    retry_after_seconds: float | None,
    base: float,
    cap: float,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number `retry`, given how the last attempt ended."""
    delay = backoff_delay(retry, base, cap, rng)
    if retry_after_seconds is not None and status_code in RETRY_AFTER_STATUSES:
        return min(cap, max(delay, retry_after_seconds))
    return delay
