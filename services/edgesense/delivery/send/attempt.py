"""How one POST to a webhook ended (`AttemptResult`), and what sends it (`Sender`).

Apart from `http_sender` (pycurl), so that the rules that judge an attempt
(`record.policy`) and the sender processes' wire format can name a result
without loading an HTTP client (`make check` holds this for the policy).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class AttemptResult:
    """How one POST ended: an answer (status_code), a failure (error), or both
    when the answer's body could not be read (e.g. it timed out half-way)."""

    started_at: datetime
    duration_ms: int
    status_code: int | None = None
    error: str | None = None
    response_excerpt: str = ""
    retry_after: float | None = None  # seconds, from Retry-After on 429/503
    # The attempt could not be made on our side (a sender process died or none
    # was running): not the receiver's doing, so it uses no attempt.
    internal_failure: bool = False

    @property
    def ok(self) -> bool:
        """A 2xx answer, fully within the timeout."""
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


def elapsed_ms(began: float) -> int:
    """Whole milliseconds since `began` (a `time.monotonic()` reading)."""
    return round((time.monotonic() - began) * 1000)


def failed_attempt(started_at: datetime, began: float, error: str) -> AttemptResult:
    """An attempt that ended without an answer, for `error`."""
    return AttemptResult(started_at=started_at, duration_ms=elapsed_ms(began), error=error)


class Sender(Protocol):
    """What the dispatcher sends with: an `HttpSender`, or a pool of sender processes."""

    timeout_seconds: float

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult: ...
