"""The wire between the delivery process and its sender processes.

Length-prefixed `marshal` frames (a 4-byte big-endian length, then plain
tuples of str/bytes/int/float/dict/None), over the sender's stdin (requests:
`(id, url, body, headers)`) and stdout (results: see `result_message`).
marshal is the fastest serialiser for such values, and only ever reads what
our own parent or child process wrote to its pipe. Writes are batched: one
write per event-loop turn for every frame queued in it.
"""

from __future__ import annotations

import asyncio
import marshal
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from edgesense.delivery.send.attempt import AttemptResult

HEADER = 4  # bytes of big-endian frame length


def frame(message: tuple[Any, ...]) -> bytes:
    data = marshal.dumps(message)
    return len(data).to_bytes(HEADER, "big") + data


class Frames:
    """Splits a byte stream into the marshalled messages it carries."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        messages = []
        start = 0
        while len(buffer) - start >= HEADER:
            size = int.from_bytes(buffer[start : start + HEADER], "big")
            end = start + HEADER + size
            if len(buffer) < end:
                break
            # Only ever from our own child or parent process, over its pipe.
            messages.append(marshal.loads(buffer[start + HEADER : end]))  # noqa: S302
            start = end
        del buffer[:start]
        return messages


class Batcher:
    """Frames written once per event-loop turn, in one write."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self._queued: list[bytes] = []

    def send(self, message: tuple[Any, ...]) -> None:
        if not self._queued:
            asyncio.get_running_loop().call_soon(self.flush)
        self._queued.append(frame(message))

    def flush(self) -> None:
        if self._queued:
            data = b"".join(self._queued)
            self._queued.clear()
            self._write(data)


def result_message(request_id: int, result: AttemptResult) -> tuple[Any, ...]:
    return (
        request_id,
        result.started_at.timestamp(),
        result.duration_ms,
        result.status_code,
        result.error,
        result.response_excerpt,
        result.retry_after,
    )


def result_of(message: tuple[Any, ...]) -> AttemptResult:
    _, started, duration_ms, status_code, error, excerpt, retry_after = message
    return AttemptResult(
        started_at=datetime.fromtimestamp(started, UTC),
        duration_ms=duration_ms,
        status_code=status_code,
        error=error,
        response_excerpt=excerpt,
        retry_after=retry_after,
    )
