"""Running a benchmark process's main coroutine, on uvloop where it is installed.

The services run on uvloop (`edgesense.cli`), so the receivers, the
publisher and the baseline do too: the comparison is between designs, not
event loops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - not on every platform
        return asyncio.run(main)
    return uvloop.run(main)
