"""The REST server's connections: a cap below the open-file limit, and a header timeout.

aiohttp's server has no header read timeout (its keep-alive timer, 3,630 s by
default, is the only bound on a connection that trickles its headers) and no
connection cap, so 1,100 slow clients took every file descriptor and the
accept loop failed for everyone else. This wraps each aiohttp protocol in a
`GuardedConnection` that sees its life at the socket level:

    waiting ──request handler starts──> busy ──handler done──> idle
      ^  header timer running                                   │
      └───────────────────── next request's first bytes ────────┘

- A connection must deliver a request's complete headers within the header
  timeout of being opened (or of the first byte of a later request), else it
  is aborted. Idle keep-alive connections are left to aiohttp's keep-alive.
- At the cap, a new connection evicts the longest-waiting connection that has
  no request in its handler (idle keep-alive first in nginx, here simply the
  oldest waiting or idle one), so slow clients cannot lock new ones out; when
  every connection is busy, the new one is aborted at once (a RST, no fd kept).

The request handler marks busy and done (`request_started` / `request_done`,
from a middleware): that is when aiohttp has parsed the headers, and when the
answer is written. An idle connection whose last bytes are still in the write
buffer is not evicted (abort would drop them).
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

WAITING, BUSY, IDLE = "waiting", "busy", "idle"


@dataclass(frozen=True)
class HttpLimits:
    """How long a client may take, and how many connections the server keeps."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 0  # 0: from the open-file limit, see default_max_connections

    def connection_cap(self) -> int:
        """The cap in force: the setting, but never above what the file limit allows."""
        ceiling = default_max_connections()
        return min(self.max_connections, ceiling) if self.max_connections else ceiling


def default_max_connections() -> int:
    """The open-file limit less a reserve for everything else the process opens.

    The reserve (an eighth, at least 64) covers the gRPC channels, the log,
    the listening socket and connections being closed; with the soft limit
    raised to a usual hard limit of 1,048,576 that is ~917,000 connections,
    with 1,024 it is 896.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1_000_000
    return max(1, soft - max(64, soft // 8))


class Closed(StrEnum):
    """Why the guard closed a connection (a metric label)."""

    HEADER_TIMEOUT = "header_timeout"
    EVICTED = "evicted"
    OVER_CAPACITY = "over_capacity"


class ConnectionGuard:
    """Tracks every connection of one listening server; see the module docstring."""

    def __init__(
        self,
        *,
        max_connections: int,
        header_timeout: float,
        on_closed: Callable[[Closed], None] = lambda reason: None,
    ) -> None:
        self.factory: Callable[[], asyncio.Protocol] | None = None  # aiohttp's, once set up
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self._on_closed = on_closed
        self._open: dict[Any, GuardedConnection] = {}  # by transport
        self._evictable: dict[GuardedConnection, None] = {}  # waiting or idle, oldest first

    def __len__(self) -> int:
        return len(self._open)

    def protocol(self) -> GuardedConnection:
        """The protocol factory for `loop.create_server`."""
        assert self.factory is not None, "the aiohttp server is not set up yet"
        return GuardedConnection(self, self.factory())

    def request_started(self, transport: Any) -> None:
        connection = self._open.get(transport)
        if connection is not None:
            connection.state = BUSY
            connection.cancel_timer()
            self._evictable.pop(connection, None)

    def request_done(self, transport: Any) -> None:
        connection = self._open.get(transport)
        if connection is not None and connection.state == BUSY:
            connection.state = IDLE
            self._evictable[connection] = None

    def admit(self, connection: GuardedConnection) -> bool:
        """A new connection: make room for it, or False when every one is busy."""
        if len(self._open) >= self.max_connections:
            oldest = next((c for c in self._evictable if c.flushed()), None)
            if oldest is None:
                self._on_closed(Closed.OVER_CAPACITY)
                return False
            self.close(oldest, Closed.EVICTED)
        self._open[connection.transport] = connection
        self._evictable[connection] = None
        return True

    def waiting(self, connection: GuardedConnection) -> None:
        self._evictable.pop(connection, None)
        self._evictable[connection] = None  # the newest now

    def forget(self, connection: GuardedConnection) -> None:
        self._open.pop(connection.transport, None)
        self._evictable.pop(connection, None)

    def close(self, connection: GuardedConnection, reason: Closed) -> None:
        self.forget(connection)
        connection.cancel_timer()
        self._on_closed(reason)
        connection.transport.abort()


class GuardedConnection(asyncio.Protocol):
    """An aiohttp protocol seen through the guard; every event is passed on to it."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.state = WAITING
        self.transport: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if not self.guard.admit(self):
            self.transport.abort()
            return
        self._admitted = True
        self._arm()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.state == IDLE:  # the first bytes of the next request
            self.state = WAITING
            self.guard.waiting(self)
            self._arm()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self._admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_timer()
        if self._admitted:
            self.guard.forget(self)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def flushed(self) -> bool:
        """Nothing left to send: the end of an answer may still wait in the buffer."""
        return bool(self.transport.get_write_buffer_size() == 0)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        self.cancel_timer()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.guard.header_timeout, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._timer = None
        if self.state == WAITING:
            self.guard.close(self, Closed.HEADER_TIMEOUT)
