"""A sender process: POSTs what the delivery service asks, answers how each went.

    python -m edgesense.delivery.send.sender_process   (started by `senders.SenderPool`)

Requests arrive on stdin and results leave on stdout, as `senders` frames;
`EDGESENSE_SENDER_OPTIONS` (JSON) holds the `HttpSender` settings. The
protocol's stdout is moved off file descriptor 1 first, so that nothing
printed by accident can corrupt it (fd 1 then points at stderr, the log).
Ctrl-C reaches the whole process group, and systemd signals the whole
cgroup: the sender ignores SIGINT and SIGTERM and stops when its stdin
closes, after finishing the attempts it was given (delivery kills it if
that takes longer than the attempt timeout).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

from edgesense.common import runtime
from edgesense.common.log_throttle import ThrottledLog
from edgesense.common.logs import configure_logging
from edgesense.delivery.send.attempt import AttemptResult, failed_attempt
from edgesense.delivery.send.http_sender import HttpSender
from edgesense.delivery.send.sender_wire import Batcher, Frames, result_message

log = logging.getLogger("edgesense.delivery.sender")
_internal_errors = ThrottledLog(log)  # a bug hit by every POST: one traceback, then a line a minute


class _Requests(asyncio.Protocol):
    """Each request frame starts a POST (`HttpSender.submit`: no task per
    attempt); each result goes out as it ends."""

    def __init__(self, sender: HttpSender, out: Batcher) -> None:
        self._sender = sender
        self._out = out
        self._frames = Frames()
        self._in_flight = 0
        self._all_answered = asyncio.Event()
        self._all_answered.set()
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        for request_id, url, body, headers in self._frames.feed(data):
            self._in_flight += 1
            self._all_answered.clear()
            try:
                self._sender.submit(url, body, headers, partial(self._answer, request_id))
            except Exception as exc:  # a bug of ours or pycurl's: still an answer
                _internal_errors.exception(
                    type(exc).__name__, "POST to a webhook failed unexpectedly"
                )
                # submit() raises before anything is sent: the attempt took no time.
                error = f"internal error: {type(exc).__name__}"
                self._answer(request_id, failed_attempt(datetime.now(UTC), time.monotonic(), error))

    def _answer(self, request_id: int, result: AttemptResult) -> None:
        self._out.send(result_message(request_id, result))
        self._in_flight -= 1
        if not self._in_flight:
            self._all_answered.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    async def finish(self) -> None:
        await self._all_answered.wait()
        self._out.flush()


async def serve(options: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    protocol_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray output goes to the log, not into the protocol
    writer, _ = await loop.connect_write_pipe(asyncio.Protocol, protocol_out)
    out = Batcher(writer.write)
    async with HttpSender(**options) as sender:
        requests = _Requests(sender, out)
        await loop.connect_read_pipe(lambda: requests, sys.stdin.buffer)
        await requests.closed
        await requests.finish()
    writer.close()


def main() -> None:
    # Signals meant for the service (Ctrl-C to the process group, systemd's
    # SIGTERM to the whole cgroup) are not for the senders: delivery stops
    # them itself, by closing their input once its attempts are done.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging("delivery")
    options = json.loads(os.environ["EDGESENSE_SENDER_OPTIONS"])
    runtime.run(serve(options))


if __name__ == "__main__":
    main()
