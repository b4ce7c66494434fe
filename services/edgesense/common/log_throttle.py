"""Repeated problems in the log without flooding it: `ThrottledLog`.

A broken gateway, or a bug that every request runs into, makes the same
message thousands of times a second; a log of 34,000 traceback lines hides
everything else and fills disks. So, per key (what the problem is, e.g. a
rejection reason and topic, or an RPC method and exception type):

- the first occurrence is logged in full (an exception with its traceback);
- later ones within `interval` of the key's last line are counted, not
  logged; the key's next line, at most one per interval, says how many were
  left out;
- at most `budget` lines per `window` seconds in all, so that a thousand
  distinct keys (a fleet of broken devices) cannot flood the log either:
  beyond it, occurrences are counted and the next line says how many.

Exact counts belong to the metrics; the log keeps an example of each kind of
problem. Memory is bounded: beyond `capacity` keys the least recently seen
is forgotten (and would be logged in full again).

`LogThrottle` is the decision alone, with the time passed in (tested with an
injected clock); `ThrottledLog` applies it to a `logging.Logger`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final

DEFAULT_INTERVAL_SECONDS: Final = 60.0
DEFAULT_BUDGET: Final = 20
DEFAULT_WINDOW_SECONDS: Final = 60.0
DEFAULT_CAPACITY: Final = 4096


@dataclass(frozen=True)
class Permit:
    """Log this occurrence; `repeats` of its key and `others` were left out since."""

    first: bool
    repeats: int = 0
    others: int = 0


@dataclass
class _Key:
    logged_at: float
    repeats: int = 0


class LogThrottle:
    """Which occurrences to log (see the module docstring); not thread-safe."""

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        budget: int = DEFAULT_BUDGET,
        window: float = DEFAULT_WINDOW_SECONDS,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if interval < 0 or window <= 0 or budget < 1 or capacity < 1:
            raise ValueError("interval >= 0, window > 0, budget >= 1 and capacity >= 1")
        self.interval = interval
        self.budget = budget
        self.window = window
        self._capacity = capacity
        self._keys: OrderedDict[Hashable, _Key] = OrderedDict()
        self._window_start = float("-inf")
        self._lines = 0  # logged in the current window
        self._others = 0  # left out by the budget, not yet reported

    def admit(self, key: Hashable, now: float) -> Permit | None:
        """A `Permit` if this occurrence is to be logged, else None (it is counted)."""
        known = self._keys.get(key)
        if known is not None:
            self._keys.move_to_end(key)
            if now - known.logged_at < self.interval:
                known.repeats += 1
                return None
        if now - self._window_start >= self.window:
            self._window_start, self._lines = now, 0
        if self._lines >= self.budget:
            if known is not None:
                known.repeats += 1
            else:
                self._others += 1
            return None
        self._lines += 1
        permit = Permit(known is None, known.repeats if known else 0, self._others)
        self._others = 0
        self._keys[key] = _Key(now)
        self._keys.move_to_end(key)
        while len(self._keys) > self._capacity:
            self._keys.popitem(last=False)
        return permit

    def note(self, permit: Permit) -> str:
        """What was left out, for the end of the line ("" when nothing was)."""
        parts = []
        if permit.repeats:
            parts.append(f"{permit.repeats} more like this since its last report")
        if permit.others:
            parts.append(
                f"{permit.others} others not logged (over {self.budget} lines in {self.window:g} s)"
            )
        return f" [{'; '.join(parts)}]" if parts else ""


class ThrottledLog:
    """A logger's warnings and errors, throttled per key by one `LogThrottle`."""

    def __init__(
        self,
        logger: logging.Logger,
        throttle: LogThrottle | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.throttle = throttle or LogThrottle()
        self._clock = clock

    def warning(self, key: Hashable, msg: str, *args: object) -> bool:
        """Log `msg % args` at WARNING unless throttled; True if it was logged."""
        return self._log(logging.WARNING, key, msg, args)

    def error(self, key: Hashable, msg: str, *args: object) -> bool:
        """Log `msg % args` at ERROR unless throttled; True if it was logged."""
        return self._log(logging.ERROR, key, msg, args)

    def _log(self, level: int, key: Hashable, msg: str, args: tuple[object, ...]) -> bool:
        permit = self.throttle.admit(key, self._clock())
        if permit is None:
            return False
        self.logger.log(level, msg + "%s", *args, self.throttle.note(permit))
        return True

    def exception(self, key: Hashable, msg: str, *args: object) -> bool:
        """From an `except` block: ERROR with the traceback the first time for
        `key`, then (unless throttled) one line ending with the exception."""
        permit = self.throttle.admit(key, self._clock())
        if permit is None:
            return False
        note = self.throttle.note(permit)
        if permit.first:
            self.logger.error(msg + "%s", *args, note, exc_info=True)
        else:
            error = sys.exc_info()[1]
            self.logger.error(msg + ": %r%s", *args, error, note)
        return True
