"""Retry delays: exponential growth with jitter, for the broker and delivery connections."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay before retry number `attempt` (1, 2, …): between half and all of
    min(cap, base * 2**(attempt-1)), so that many bridges restarting together
    do not reconnect in lockstep ("equal jitter")."""
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 1) - 1, 32))
    uniform = rng.uniform if rng is not None else random.uniform
    return ceiling / 2 + uniform(0, ceiling / 2)
