"""How our service processes run: on uvloop, with the garbage collector tuned
and the open-file limit raised.

The soft RLIMIT_NOFILE is often 1,024 while the hard limit is far higher: a
service that serves many connections (the REST process caps its own below
the soft limit, see `api.connections`) raises the soft limit to the hard
one at start, as nginx's `worker_rlimit_nofile` and Go's runtime do.

CPython's cyclic collector runs a young-generation pass every 700 net
allocations, and each pass walks the objects still alive since the last
one. A process with hundreds of HTTP requests in flight keeps thousands of
young objects alive (requests, responses, futures, tasks), so those passes,
and the older-generation passes they trigger, came to a third of the HTTP
client's CPU per request (measured here with aiohttp, the sender's client
then, 256 requests in flight: 150 µs per request
with the defaults, 95 µs with a young threshold of 10,000; at 64 in flight,
98 -> 78 µs). Objects created while starting (modules, classes, settings)
live for the whole process: `gc.freeze()` takes them out of every later
pass. Memory is still collected: reference counting frees almost everything,
and cycles wait at most 10,000 allocations longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import resource
import signal
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
GC_THRESHOLDS = (10_000, 10, 10)


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        # macOS refuses an infinite hard limit here: keep the soft one then.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def tune() -> None:
    """uvloop as the event loop (where installed), the collector as above, more files."""
    raise_open_file_limit()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - not on every platform
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a process's main coroutine, tuned; call once everything is imported."""
    tune()
    return asyncio.run(main)


@contextlib.contextmanager
def stop_on_signals(
    stop: asyncio.Event, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
) -> Iterator[None]:
    """Set `stop` on these signals while inside (the loop's handlers, removed after)."""
    loop = asyncio.get_running_loop()
    signals = tuple(signals)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        yield
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
