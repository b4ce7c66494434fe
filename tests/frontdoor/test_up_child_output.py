"""`up` keeps draining a child's output whatever it prints: a 1 MB line is cut
(and says so), the lines after it still arrive, and the child is not blocked
on a full pipe."""

from __future__ import annotations

import asyncio
import sys

import pytest

from edgesense import up_child
from edgesense.up_child import MAX_LINE_BYTES, Child, LineCutter

# A 1 MB line, then more lines than a pipe holds (64 KiB), then an unended one.
CHILD = """
import sys
sys.stdout.write("x" * 1_000_000 + "\\n")
for i in range(20_000):
    sys.stdout.write(f"line {i}\\n")
sys.stdout.write("last")
"""


async def healthy() -> bool:
    return True


def test_a_child_printing_a_1_mb_line_is_drained_to_its_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    printed: list[str] = []
    monkeypatch.setattr(up_child, "out", printed.append)

    async def run() -> int:
        child = Child("noisy", [sys.executable, "-c", CHILD], healthy)
        await child.start({})
        assert child.process is not None
        assert child.pump is not None
        code = await asyncio.wait_for(child.process.wait(), 30)
        await asyncio.wait_for(child.pump, 30)
        return code

    assert asyncio.run(run()) == 0
    lines = [line.split(" | ", 1)[1] for line in printed]
    assert lines[0] == "x" * MAX_LINE_BYTES + f" … [line cut at {MAX_LINE_BYTES} bytes]"
    assert lines[1:] == [f"line {i}" for i in range(20_000)] + ["last"]


@pytest.mark.parametrize("size", [1, 7, 100])
def test_lines_are_the_same_whatever_the_chunks(size: int) -> None:
    output = b"short\n" + b"y" * 25 + b"\nexact-ten!\n\nend"
    cutter = LineCutter(limit=10)
    lines = [
        line for i in range(0, len(output), size) for line in cutter.feed(output[i : i + size])
    ]
    assert [*lines, *cutter.end()] == [
        "short",
        "yyyyyyyyyy … [line cut at 10 bytes]",
        "exact-ten!",
        "",
        "end",
    ]
