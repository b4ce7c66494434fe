"""Whether a claimed delivery is sent, and what happens after an attempt
(contract section 6), as pure functions.

Before: a delivery is sent only to a known, active webhook that is not
paused (`before_attempt`). After: one attempt plus `max_retries` retries per
cycle; a cycle starts when a delivery is created, redelivered or released
from held. Success ends it; a failure with retries left makes it due again
after the backoff (Retry-After honoured within the cap); the last failure
makes it `failed` and disables its webhook. If the webhook was disabled
meanwhile, a retry waits as `held`.

A test send's delivery (`is_test_delivery`) is sent, and retried, while its
webhook is disabled too: that is how a fix is checked before enabling it.
Its last failure makes it `failed` like any other, but the outcome writer
does not report it, so it never disables its webhook.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from edgesense.common.backoff import next_delay
from edgesense.delivery.claim.breaker import PAUSED_REASON
from edgesense.delivery.send.attempt import AttemptResult
from edgesense.delivery.store.rows import (
    FAILED,
    HELD,
    PENDING,
    SUCCEEDED,
    Claimed,
    Outcome,
    is_test_delivery,
)

RESPONSE_EXCERPT_CHARS = 1024
# A delivery whose webhook this process does not know is only taken for one of
# a deleted webhook once it is older than this (deletions seen live fail their
# deliveries at once; this covers those missed while every process was down).
UNKNOWN_WEBHOOK_GRACE_SECONDS = 60.0
UNKNOWN_WEBHOOK_RETRY_SECONDS = 1.0
# A PostgreSQL text column refuses NUL (SQLite stores it), and the outbox then
# refuses the whole batch of outcomes (Unavailable, so tried again and again):
# in a receiver's answer, or an error that quotes it, NUL becomes U+FFFD.
NUL, REPLACEMENT = "\x00", "\ufffd"


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    base_seconds: float = 30.0
    cap_seconds: float = 3600.0

    @property
    def attempts_per_cycle(self) -> int:
        return self.max_retries + 1


def describe(result: AttemptResult) -> str:
    if result.error:
        return storable(result.error)
    return f"HTTP {result.status_code}"


def before_attempt(
    claimed: Claimed, webhook_active: bool | None, paused_until: float | None, now: float
) -> Outcome | None:
    """None: send it now. Otherwise the outcome of a claimed delivery that is
    not sent, by the state of its webhook in this process:

    - not known (`webhook_active` None), and the delivery younger than
      UNKNOWN_WEBHOOK_GRACE_SECONDS: pending, due again shortly (another
      process accepted it for a webhook whose registration has not reached
      this process's change stream yet);
    - not known, and older: failed, "webhook deleted";
    - disabled: held, unless it is a test send's (sent all the same);
    - paused by the breaker (`paused_until`): pending, due when the pause ends.
    """
    if webhook_active is None:
        if now - claimed.created_at < UNKNOWN_WEBHOOK_GRACE_SECONDS:
            retry_at = now + UNKNOWN_WEBHOOK_RETRY_SECONDS
            return without_attempt(claimed, PENDING, "webhook not known yet", now, retry_at)
        return without_attempt(claimed, FAILED, "webhook deleted", now)
    if not webhook_active and not is_test_delivery(claimed.delivery_id):
        return without_attempt(claimed, HELD, "webhook disabled", now)
    if paused_until is not None:
        return without_attempt(claimed, PENDING, PAUSED_REASON, now, paused_until)
    return None


def storable(text: str) -> str:
    """`text` without NUL (see NUL); `text` itself when it has none."""
    return text.replace(NUL, REPLACEMENT) if NUL in text else text


def after_attempt(
    policy: RetryPolicy,
    claimed: Claimed,
    result: AttemptResult,
    now: float,
    webhook_active: bool,
    rng: random.Random | None = None,
) -> Outcome:
    cycle = claimed.cycle_attempts + 1
    if result.ok:
        status, reason, next_at = SUCCEEDED, None, now
    elif cycle >= policy.attempts_per_cycle:
        status = FAILED
        reason = f"{cycle} attempts failed; last: {describe(result)}"
        next_at = now
    else:
        delay = next_delay(
            cycle,
            result.status_code,
            result.retry_after,
            policy.base_seconds,
            policy.cap_seconds,
            rng,
        )
        retried = webhook_active or is_test_delivery(claimed.delivery_id)
        status = PENDING if retried else HELD
        reason = f"attempt {cycle} failed: {describe(result)}" if retried else "webhook disabled"
        next_at = now + delay
    return Outcome(
        delivery_id=claimed.delivery_id,
        attempt=claimed.attempt_count + 1,
        started_at=result.started_at.timestamp(),
        duration_ms=result.duration_ms,
        status_code=result.status_code,
        error=None if result.error is None else storable(result.error),
        response_body=storable(result.response_excerpt[:RESPONSE_EXCERPT_CHARS])
        if result.response_excerpt
        else None,
        status=status,
        status_reason=reason,
        cycle_attempts=cycle,
        next_attempt_at=next_at,
        keyed=claimed.keyed,
    )


def without_attempt(
    claimed: Claimed, status: str, reason: str, now: float, next_attempt_at: float | None = None
) -> Outcome:
    """A claimed delivery that is not sent: held (webhook disabled), failed
    (webhook deleted), or due again later (webhook not known here yet)."""
    return Outcome(
        delivery_id=claimed.delivery_id,
        attempt=0,
        started_at=now,
        duration_ms=0,
        status_code=None,
        error=None,
        response_body=None,
        status=status,
        status_reason=reason,
        cycle_attempts=claimed.cycle_attempts,
        next_attempt_at=now if next_attempt_at is None else next_attempt_at,
        keyed=claimed.keyed,
    )
