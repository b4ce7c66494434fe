"""A circuit breaker per webhook: stop spending attempts on a receiver that
keeps failing, so that the healthy ones get the capacity.

After `threshold` consecutive failed attempts a webhook's sends pause for
`pause_seconds`; its deliveries wait (pending, no attempt used) until then.
After the pause one attempt is a probe: success closes the breaker, failure
opens it again at once. Retries and the disable rule are unchanged: every
delivery still gets its attempts, only later.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PAUSED_REASON = "webhook failing: sends paused"


@dataclass
class Breaker:
    threshold: int = 10
    pause_seconds: float = 30.0
    _failures: dict[str, int] = field(default_factory=dict)
    _open_until: dict[str, float] = field(default_factory=dict)

    def record(self, webhook_id: str, ok: bool, now: float) -> float | None:
        """Count an attempt's outcome; when this opens the breaker, until when."""
        if ok:
            self._failures.pop(webhook_id, None)
            self._open_until.pop(webhook_id, None)
            return None
        failures = self._failures.get(webhook_id, 0) + 1
        self._failures[webhook_id] = failures
        if failures < self.threshold:
            return None
        self._failures[webhook_id] = self.threshold - 1  # the next failure re-opens
        if self.open_until(webhook_id, now) is not None:
            return None  # already open (attempts that were in flight when it opened)
        until = self._open_until[webhook_id] = now + self.pause_seconds
        return until

    def open_until(self, webhook_id: str, now: float) -> float | None:
        """When sends to this webhook may resume, if they are paused now."""
        until = self._open_until.get(webhook_id)
        if until is None:
            return None
        if until <= now:
            del self._open_until[webhook_id]
            return None
        return until

    def paused(self, now: float) -> list[str]:
        return [w for w in list(self._open_until) if self.open_until(w, now) is not None]
