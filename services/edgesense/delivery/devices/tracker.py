"""Keeps the devices table current as events are stored, off the hot path.

`DeviceTracker.fold_stored` is called by the acceptor once per commit
(accept/acceptor.py `_store`, after the commit) with the events it stored;
each newly stored, non-test device event costs one dict lookup and one list
append, keeping a reference to the event (already in memory). Every
FLUSH_SECONDS (from the start of the last) the flusher (`run`) takes what
was folded, turns each device's events into one state (view.observe) and
writes them (DeviceStore.write: the database merges each into the stored
row, newest part wins), in transactions of at most `store.chunk` devices (5
on SQLite, whose writer thread the hot path shares: an accept waits behind
one such turn at most, well under a millisecond, as store/devices.py
measures; 10 on PostgreSQL), paced evenly over half the interval (SPREAD,
at most MAX_SPREAD_SECONDS) so the database and
the loop take the flush in small pieces with the hot path's work between
them, and giving the event loop's other work a turn every YIELD_EVENTS
events observed. Flushes start on a fixed period, so the view lags the
events by up to FLUSH_SECONDS (2 s) plus the pacing (a second), and costs
the accept path nothing but the fold.

Memory is bounded by bytes: every folded event counts its serialized size
(plus FOLD_OVERHEAD_BYTES). Past `soft_bytes` the flusher is woken at once
(and a paced flush under way drops its pauses); past `hard_bytes` (the
database is down or far behind; checked once per accept group, so by at most
one group's bytes) events are no longer folded, only counted
(edgesense_devices_view_dropped_total), until a flush frees the memory: such
a device's row misses those events until its next one. States a failed write
could not store are kept (merged with later news) and written by the next
flush, up to `hard_bytes` of them by their estimated size
(UNWRITTEN_STATE_BYTES each plus its readings, about 16,000 devices in the
default 64 MiB); beyond that the others are dropped, likewise counted.

A process killed with SIGKILL loses what it folded since its last flush,
at most about FLUSH_SECONDS and its pacing of changes to the view (the
events themselves are stored); a graceful stop flushes once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from edgesense.common.errors import Unavailable
from edgesense.common.log_throttle import ThrottledLog
from edgesense.delivery import metrics
from edgesense.delivery.devices.view import DeviceState, merge, observe
from edgesense.delivery.store.devices import DeviceStore
from edgesense.delivery.store.rows import StoredEvent
from edgesense.v1 import events_pb2

log = logging.getLogger(__name__)
_problems = ThrottledLog(log)
FLUSH_SECONDS = 2.0
FOLD_OVERHEAD_BYTES = 200
YIELD_EVENTS = 50
# The share of the interval a flush's chunks are spread over, at most
# MAX_SPREAD_SECONDS.
SPREAD = 0.5
MAX_SPREAD_SECONDS = 1.0
SOFT_BYTES = 4 * 1024 * 1024
HARD_BYTES = 64 * 1024 * 1024
# A kept state's memory beside its readings: its fields and its recent
# events (measured: about 3.9 KB with 20 of them).
UNWRITTEN_STATE_BYTES = 4096
_DEVICE_EVENTS = frozenset({"readings", "alert", "status", "configuration"})

Key = tuple[str, str]


class DeviceTracker:
    def __init__(
        self,
        store: DeviceStore,
        *,
        flush_seconds: float = FLUSH_SECONDS,
        soft_bytes: int = SOFT_BYTES,
        hard_bytes: int = HARD_BYTES,
    ) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self.soft_bytes = soft_bytes
        self.hard_bytes = hard_bytes
        self._folded: dict[Key, list[tuple[events_pb2.Event, int]]] = {}
        self._bytes = 0
        self._unwritten: dict[Key, DeviceState] = {}
        self._unwritten_bytes = 0
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        # Set when stopping or past soft_bytes: the flush under way writes its
        # remaining chunks without pauses.
        self._hurry = asyncio.Event()
        self._stopping = False
        # Set once `run` is under way (a cancellation from then on flushes).
        self.running = asyncio.Event()

    @property
    def folded_bytes(self) -> int:
        return self._bytes

    def fold_stored(
        self,
        events: Sequence[events_pb2.Event],
        stored: Sequence[StoredEvent],
        new_ids: set[str],
    ) -> None:
        """Note the device events among `events` whose ids were newly stored
        for the next flush; `stored[i]` is `events[i]` serialized (each id
        once), its size what the event counts. Written out for speed: it runs
        for every accepted event."""
        if self._bytes >= self.hard_bytes:
            metrics.DEVICES_VIEW_DROPPED.inc(_noted_count(events, new_ids))
            return
        folded = self._folded
        every = len(new_ids) == len(stored)  # the usual case: no duplicate in the batch
        added = 0
        for event, row in zip(events, stored, strict=True):
            if (not every and event.event_id not in new_ids) or event.test:
                continue
            if event.WhichOneof("kind") not in _DEVICE_EVENTS:
                continue
            key = (event.project_id, event.device_id)
            size = len(row.payload)
            entry = folded.get(key)
            if entry is None:
                folded[key] = [(event, size)]
            else:
                entry.append((event, size))
            added += size + FOLD_OVERHEAD_BYTES
        self._bytes += added
        if self._bytes >= self.soft_bytes:
            self._wake.set()
            self._hurry.set()  # and a paced flush under way writes the rest at once

    async def run(self) -> None:
        """Flush every `flush_seconds`, on a fixed period from the start
        (a flush that took longer starts the next at once), or sooner when
        woken past `soft_bytes`, until cancelled; a cancelled run flushes
        once more (a graceful stop). A flush on the period is paced over
        SPREAD of it (at most MAX_SPREAD_SECONDS); a woken one, a backlog
        to write, is not, nor one under way when a wake or a stop comes.

        Each flush runs shielded: a cancellation that lands while one is
        under way does not cut it short (its states are already taken out
        of the fold, so they would be lost); the last flush waits for it on
        the flush lock, then writes what was noted meanwhile."""
        self._stopping = False
        self._hurry.clear()
        self.running.set()
        loop = asyncio.get_running_loop()
        due = loop.time() + self.flush_seconds
        try:
            while True:
                woken = False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, due - loop.time())):
                        await self._wake.wait()
                        woken = True
                self._wake.clear()
                due = max(due + self.flush_seconds, loop.time())
                spread = 0.0 if woken else min(self.flush_seconds * SPREAD, MAX_SPREAD_SECONDS)
                await asyncio.shield(self._flush_logged(spread))
        except asyncio.CancelledError:
            self._stopping = True
            self._hurry.set()  # a flush under way stops pacing its chunks
            await asyncio.shield(self._flush_logged(0.0))
            raise

    async def _flush_logged(self, spread: float) -> None:
        try:
            await self.flush(spread)
        except Exception as exc:  # a bug: logged, the next flush tries again
            _problems.exception(type(exc).__name__, "devices flush failed unexpectedly")

    async def flush(self, spread: float = 0.0) -> int:
        """Write what was folded (and what an earlier flush could not write);
        how many devices were written. `spread` (seconds): chunk i of n
        starts no sooner than i/n of it after the first (the flusher's:
        SPREAD of the interval), so the database and the event loop get the
        flush in small pieces with the hot path's work between them, not as
        one burst; 0, a stop under way or a wake past `soft_bytes` writes
        them back to back."""
        async with self._flushing:
            folded, self._folded, self._bytes = self._folded, {}, 0
            unwritten, self._unwritten, self._unwritten_bytes = self._unwritten, {}, 0
            keys = list(folded.keys() | unwritten.keys())
            written = 0
            step = max(1, self.store.chunk)
            chunks = -(-len(keys) // step)
            began = asyncio.get_running_loop().time()
            if spread and not self._stopping:
                self._hurry.clear()  # a hurry asked of an earlier flush
            for number, start in enumerate(range(0, len(keys), step)):
                if number and spread:
                    await self._pace(began + spread * number / chunks)
                chunk = await self._states(keys[start : start + step], folded, unwritten)
                try:
                    await self.store.write(chunk)
                except Unavailable as exc:
                    _problems.warning(
                        "unwritten", "devices view not written (kept for the next flush): %s", exc
                    )
                    self._keep(chunk)
                    self._keep(await self._states(keys[start + step :], folded, unwritten))
                    break
                written += len(chunk)
            if written:
                metrics.DEVICES_VIEW_WRITTEN.inc(written)
            return written

    async def _pace(self, until: float) -> None:
        """Wait until loop time `until` (a chunk's turn), unless a stop or a
        wake past `soft_bytes` (`_hurry`, now or meanwhile) asks for the rest
        at once."""
        if self._hurry.is_set():
            return
        delay = until - asyncio.get_running_loop().time()
        if delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._hurry.wait()

    @staticmethod
    async def _states(
        keys: Sequence[Key],
        folded: dict[Key, list[tuple[events_pb2.Event, int]]],
        unwritten: dict[Key, DeviceState],
    ) -> list[DeviceState]:
        """The new state of each of `keys`: its folded events observed, merged
        with what an earlier flush could not write. Lets the loop run other
        work every YIELD_EVENTS events observed (a large flush is no long pause
        for the accept path)."""
        states: list[DeviceState] = []
        since_yield = 0
        for key in keys:
            items = folded.pop(key, None)
            state = unwritten.pop(key, None)
            if items:
                fresh = observe(*key, items)
                state = fresh if state is None else merge(state, fresh)
                since_yield += len(items)
                if since_yield >= YIELD_EVENTS:
                    since_yield = 0
                    await asyncio.sleep(0)  # a turn for other tasks, not a wait
            if state is not None:
                states.append(state)
        return states

    def _keep(self, states: list[DeviceState]) -> None:
        """Keep states a write failed to store for the next flush (up to
        `hard_bytes` of them by estimated size; the others are dropped,
        counted)."""
        for state in states:
            size = UNWRITTEN_STATE_BYTES + len(state.readings or b"")
            if self._unwritten_bytes + size > self.hard_bytes:  # keys: once a flush
                metrics.DEVICES_VIEW_DROPPED.inc()
                continue
            self._unwritten[state.key] = state
            self._unwritten_bytes += size


def _noted_count(events: Sequence[events_pb2.Event], new_ids: set[str]) -> int:
    """How many of `events` fold_stored would note: the newly stored device
    events that are not test sends (each id once)."""
    return len(
        {
            event.event_id
            for event in events
            if event.event_id in new_ids
            and not event.test
            and event.WhichOneof("kind") in _DEVICE_EVENTS
        }
    )
