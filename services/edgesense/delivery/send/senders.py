"""Sending in child processes: the delivery service's POSTs, spread over cores.

One asyncio process runs on one core. With `EDGESENSE_DELIVERY_SENDERS`
above 0, delivery keeps the outbox, the lanes and the retry bookkeeping in
its own process (one SQLite writer, one owner of the leases) and hands each
POST to one of that many sender processes (`python -m
edgesense.delivery.send.sender_process`), each an `HttpSender` with the
same settings. That raises what one delivery process can send where cores
are left over, at a price: the frames both ways cost more CPU than the POST
itself does in libcurl, so by default (`config.default_senders`) there are
none on one core, nor under 4 cores beside a PostgreSQL server on the same
machine (its backends want them),
and delivery posts itself.

Parent and child talk over the child's stdin/stdout in `sender_wire`'s
frames. Requests go to the child with the fewest in flight. When a child
dies, each of its attempts in flight ends as an internal failure (`sender
process exited`): it uses no attempt and is tried again a second later, and
the child is started again after a backoff; a child that leaves an attempt
unanswered 10 s past the attempt timeout is taken for hung and killed. A
child whose stdin closes (delivery stopping, or killed) finishes its
attempts and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from edgesense.common.backoff import backoff_delay
from edgesense.common.config import Settings
from edgesense.delivery.send.attempt import AttemptResult
from edgesense.delivery.send.sender_wire import Batcher, Frames, result_of

log = logging.getLogger(__name__)

RESTART_BASE_SECONDS = 0.2
RESTART_MAX_SECONDS = 5.0
STOP_GRACE_SECONDS = 5.0
WATCH_SECONDS = 1.0
OVERDUE_GRACE_SECONDS = 10.0


def _failed(error: str) -> AttemptResult:
    return AttemptResult(
        started_at=datetime.now(UTC), duration_ms=0, error=error, internal_failure=True
    )


class _Child(asyncio.SubprocessProtocol):
    """One sender process, as the parent sees it."""

    def __init__(self, number: int) -> None:
        self.number = number
        # Attempts sent and not answered, oldest first, with when each is overdue.
        self.pending: dict[int, tuple[asyncio.Future[AttemptResult], float]] = {}
        self.exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.SubprocessTransport | None = None
        self._frames = Frames()
        self._out: Batcher | None = None
        self._gone = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        stdin = self.transport.get_pipe_transport(0)  # type: ignore[union-attr]
        self._out = Batcher(stdin.write)  # type: ignore[union-attr]

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        if fd != 1:
            return
        for message in self._frames.feed(data):  # type: ignore[arg-type]
            waiting = self.pending.pop(message[0], None)
            if waiting is not None and not waiting[0].done():
                waiting[0].set_result(result_of(message))

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self._gone = True  # no answer can come any more

    def process_exited(self) -> None:
        self._gone = True

    def connection_lost(self, exc: Exception | None) -> None:
        # The process has exited and every answer it wrote has been read.
        pending, self.pending = self.pending, {}
        for future, _ in pending.values():
            if not future.done():
                future.set_result(_failed("the sender process exited during the attempt"))
        if not self.exited.done():
            self.exited.set_result(None)

    @property
    def alive(self) -> bool:
        return self._out is not None and not self._gone

    def post(
        self,
        request_id: int,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        future: asyncio.Future[AttemptResult],
        overdue_at: float,
    ) -> None:
        assert self._out is not None
        self.pending[request_id] = (future, overdue_at)
        self._out.send((request_id, url, body, dict(headers)))

    def stuck(self, now: float) -> bool:
        """Whether its oldest unanswered attempt is overdue (the child hangs)."""
        oldest = next(iter(self.pending.values()), None)
        return oldest is not None and oldest[1] < now

    def kill(self) -> None:
        if self.transport is not None and self.transport.get_returncode() is None:
            self.transport.kill()

    def close_input(self) -> None:
        if self._out is not None:
            self._out.flush()
        if self.transport is not None:
            stdin = self.transport.get_pipe_transport(0)
            if stdin is not None:
                stdin.close()


class SenderPool:
    """`HttpSender`'s `post()`, run in `processes` child processes."""

    def __init__(
        self,
        processes: int,
        options: Mapping[str, Any],
        timeout_seconds: float,
        overdue_grace_seconds: float = OVERDUE_GRACE_SECONDS,
    ) -> None:
        if processes < 1:
            raise ValueError("a sender pool needs at least one process")
        self.processes = processes
        self.timeout_seconds = timeout_seconds
        self.overdue_grace_seconds = overdue_grace_seconds
        self._options = dict(options)
        self._children: list[_Child | None] = [None] * processes
        self._keepers: list[asyncio.Task[None]] = []
        self._next_id = 0
        self._closing = False
        self._changed = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> SenderPool:
        options = {
            "timeout_seconds": settings.delivery_timeout_seconds,
            "allow_private_networks": settings.allow_private_networks,
            "ca_bundle": settings.ca_bundle,
            "max_connections": settings.delivery_concurrency,
        }
        return cls(settings.delivery_senders, options, settings.delivery_timeout_seconds)

    async def start(self) -> None:
        """Start every child; returns once each has started (or failed to)."""
        if self._keepers:
            return
        started = [asyncio.get_running_loop().create_future() for _ in range(self.processes)]
        self._keepers = [
            asyncio.create_task(self._keep(n, started[n]), name=f"sender-{n}")
            for n in range(self.processes)
        ]
        self._keepers.append(asyncio.create_task(self._watch(), name="sender-watch"))
        await asyncio.wait(started)

    async def close(self) -> None:
        """Let the children finish what they were given, then stop them."""
        self._closing = True
        self._changed.set()
        for keeper in self._keepers:
            if keeper.get_name() == "sender-watch":
                keeper.cancel()
        for child in self._children:
            if child is not None:
                child.close_input()
        keepers = [k for k in self._keepers if k.get_name() != "sender-watch"]
        self._keepers = []
        if not keepers:
            return
        _, busy = await asyncio.wait(keepers, timeout=self.timeout_seconds + STOP_GRACE_SECONDS)
        if busy:
            log.warning("sender processes still busy past the attempt timeout; killing them")
            for child in self._children:
                if child is not None:
                    child.kill()
            _, busy = await asyncio.wait(busy, timeout=STOP_GRACE_SECONDS)
            for keeper in busy:
                keeper.cancel()

    @property
    def pids(self) -> list[int]:
        """Process ids of the children running now."""
        return [
            c.transport.get_pid()
            for c in self._children
            if c is not None and c.alive and c.transport is not None
        ]

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
        child = self._least_busy() or await self._choose()
        if child is None:
            return _failed("no sender process is running")
        self._next_id += 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AttemptResult] = loop.create_future()
        overdue_at = loop.time() + self.timeout_seconds + self.overdue_grace_seconds
        child.post(self._next_id, url, body, headers, future, overdue_at)
        return await future

    async def _watch(self) -> None:
        """Kill a child that stopped answering: its attempts end as failed ones
        (retried), and it is started again. Each attempt has its own timeout in
        the child, so an answer overdue by the grace period means it hangs."""
        loop = asyncio.get_running_loop()
        while not self._closing:
            await asyncio.sleep(WATCH_SECONDS)
            for child in self._children:
                if child is not None and child.alive and child.stuck(loop.time()):
                    log.error(
                        "sender process %d has not answered an attempt for %.0f s; killing it",
                        child.number,
                        self.timeout_seconds + self.overdue_grace_seconds,
                    )
                    child.kill()

    def _least_busy(self) -> _Child | None:
        """The live child with the fewest attempts in flight, if one is live."""
        best: _Child | None = None
        for child in self._children:
            if (
                child is not None
                and child.alive
                and (best is None or len(child.pending) < len(best.pending))
            ):
                best = child
        return best

    async def _choose(self) -> _Child | None:
        """The live child with the fewest attempts in flight; waits a while for one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_seconds
        while True:
            if (best := self._least_busy()) is not None:
                return best
            if self._closing or loop.time() >= deadline:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - loop.time())

    def _child_environment(self) -> dict[str, str]:
        """Ours without our settings (the secret key, API keys, the database URL):
        a sender needs only its options."""
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("EDGESENSE_") or name == "EDGESENSE_LOG_FORMAT"
        }
        env["EDGESENSE_SENDER_OPTIONS"] = json.dumps(self._options)
        return env

    async def _keep(self, number: int, started: asyncio.Future[None]) -> None:
        """Run child `number`, starting it again whenever it exits unasked."""
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._closing:
            child = _Child(number)
            try:
                transport, _ = await loop.subprocess_exec(
                    lambda child=child: child,  # type: ignore[misc]
                    sys.executable,
                    "-m",
                    "edgesense.delivery.send.sender_process",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=None,
                    env=self._child_environment(),
                )
            except OSError as exc:
                log.error("cannot start sender process %d: %s", number, exc)
            except Exception:
                log.exception("cannot start sender process %d", number)
            else:
                if self._closing:
                    child.close_input()  # close() ran while it was starting
                self._children[number] = child
                self._changed.set()
                if not started.done():
                    started.set_result(None)
                began = loop.time()
                try:
                    await asyncio.shield(child.exited)
                except asyncio.CancelledError:
                    transport.kill()
                    raise
                finally:
                    self._children[number] = None
                    if self._closing:
                        await _reap(transport)
                    else:
                        transport.close()
                if self._closing:
                    return
                code = transport.get_returncode()
                failures = 1 if loop.time() - began > RESTART_MAX_SECONDS else failures + 1
                log.error("sender process %d exited (code %s); starting it again", number, code)
            if not started.done():
                started.set_result(None)
            failures = max(failures, 1)
            await asyncio.sleep(backoff_delay(failures, RESTART_BASE_SECONDS, RESTART_MAX_SECONDS))


async def _reap(transport: asyncio.SubprocessTransport) -> None:
    """Wait for a stopping child, killing it past the grace period."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STOP_GRACE_SECONDS
    while transport.get_returncode() is None and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    if transport.get_returncode() is None:
        transport.kill()
    transport.close()
