"""One child process of `edgesense up`, and the log stream they share.

Every line a child prints goes to `up`'s stdout, prefixed with its name.
That stdout may go away at any time (`make run | tee log` and Ctrl-C: tee
dies first); from then on `up` keeps reading its children's output, so that
none of them blocks on a full pipe, and drops it. Losing its output must
never keep `up` from stopping its children (`LogStream`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

NAME_WIDTH = 8
STOP_GRACE_SECONDS = 20.0
MAX_LINE_BYTES = 16 * 1024  # a longer line is cut: one log line stays readable
CHUNK_BYTES = 64 * 1024


class LogStream:
    """`up`'s stdout; once a write fails (EPIPE, closed), every later line is dropped."""

    broken = False

    @classmethod
    def out(cls, line: str) -> None:
        stream = sys.stdout
        if cls.broken or stream is None:  # None: started with stdout closed (`>&-`)
            return
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):  # BrokenPipeError, or a closed file
            cls.broken = True
            # Python flushes stdout again at exit: point it at /dev/null so that
            # flush cannot fail with a second "Broken pipe" message.
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)


def out(line: str) -> None:
    LogStream.out(line)


def say(line: str) -> None:
    """A line of `up`'s own, prefixed like the services' lines."""
    out(f"{'up':<{NAME_WIDTH}} | {line}")


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    meaning = {2: " (configuration error)", 3: " (an address it must listen on is taken)"}
    return f"exited with code {code}{meaning.get(code, '')}"


@dataclass
class Child:
    name: str
    argv: list[str]
    healthy: Callable[[], Awaitable[bool]]
    process: asyncio.subprocess.Process | None = None
    pump: asyncio.Task[None] | None = None
    last_lines: list[str] = field(default_factory=list)

    async def start(self, env: Mapping[str, str]) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches `up` only; it stops children in order
        )
        self.pump = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        # Chunks, not `async for` over the stream: that raises on a line over
        # its 64 KiB limit, and a dead pump lets the child block on a full pipe.
        assert self.process is not None
        assert self.process.stdout is not None
        lines = LineCutter()
        while chunk := await self.process.stdout.read(CHUNK_BYTES):
            for line in lines.feed(chunk):
                self._print(line)
        for line in lines.end():
            self._print(line)

    def _print(self, line: str) -> None:
        self.last_lines = [*self.last_lines[-19:], line]
        out(f"{self.name:<{NAME_WIDTH}} | {line}")

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), STOP_GRACE_SECONDS)
        except TimeoutError:
            say(f"{self.name} did not stop within {STOP_GRACE_SECONDS:g} s; killing it")
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        if self.pump is not None:
            await self.pump


class LineCutter:
    """Splits output chunks into lines, cutting each after `limit` bytes (and saying so)."""

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self.limit = limit
        self._line = bytearray()
        self._cut = False  # the current line was cut: drop the rest up to its newline

    def feed(self, chunk: bytes) -> list[str]:
        lines: list[str] = []
        *complete, rest = chunk.split(b"\n")
        for part in complete:
            if (cut := self._take(part)) is not None:
                lines.append(cut)
            elif not self._cut:
                lines.append(self._text())
            self._line.clear()
            self._cut = False
        if (cut := self._take(rest)) is not None:
            lines.append(cut)
        return lines

    def end(self) -> list[str]:
        """The last line, when the output ends without a newline."""
        return [self._text()] if self._line and not self._cut else []

    def _take(self, part: bytes) -> str | None:
        """Adds `part` to the line; the cut line, once, when it goes over the limit."""
        if self._cut:
            return None
        room = self.limit - len(self._line)
        if len(part) <= room:
            self._line += part
            return None
        self._line += part[:room]
        self._cut = True
        cut = f"{self._text()} … [line cut at {self.limit} bytes]"
        self._line.clear()
        return cut

    def _text(self) -> str:
        return self._line.decode(errors="replace").rstrip()


class ChildDied(Exception):
    def __init__(self, child: Child) -> None:
        assert child.process is not None
        assert child.process.returncode is not None
        super().__init__(f"{child.name} {describe_exit(child.process.returncode)}")
        self.child = child
