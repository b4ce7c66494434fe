"""Waiting for something another process, thread or task does, with a deadline.

The one poll loop of the test suite. Prefer awaiting the event itself (an
`asyncio.Event`, a `Condition`, a future) where there is one; poll only for
state that changes behind a socket or in another process, where there is
nothing to await. `eventually` is for tests on an event loop and takes a plain
or an async predicate; `wait_until` is its blocking twin for code with no loop.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

POLL_SECONDS = 0.02


async def eventually(
    condition: Callable[[], bool] | Callable[[], Awaitable[bool]],
    seconds: float = 10.0,
    what: str = "it",
    interval: float = POLL_SECONDS,
) -> None:
    """Check `condition` every `interval` until it holds; fail saying `what`
    after `seconds`. `condition` may be a coroutine function (state behind an
    API that needs I/O to read)."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                held = condition()
                if inspect.isawaitable(held):
                    held = await held
                if held:
                    return
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"timed out after {seconds} s waiting for {what}") from None


def wait_until(
    condition: Callable[[], bool],
    seconds: float = 10.0,
    what: str = "it",
    interval: float = POLL_SECONDS,
) -> None:
    """`eventually` for code that runs no event loop: blocks the thread."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(interval)
