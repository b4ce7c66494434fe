"""A sender process: POSTs what the delivery service asks, answers how each went.

    python -m edgesense.delivery.sender_process   (started by `senders.SenderPool`)

Requests arrive on stdin and results leave on stdout, as `senders` frames;
`EDGESENSE_SENDER_OPTIONS` (JSON) holds the `HttpSender` settings. The
protocol's stdout is moved off file descriptor 1 first, so that nothing
printed by accident can corrupt it (fd 1 then points at stderr, the log).
Ctrl-C reaches the whole process group: the sender ignores SIGINT and stops
when its stdin closes, after finishing the attempts it was given.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

from edgesense import runtime
from edgesense.cli import configure_logging
from edgesense.delivery.http_sender import HttpSender
from edgesense.delivery.senders import Batcher, Frames, result_message


class _Requests(asyncio.Protocol):
    def __init__(self, sender: HttpSender, out: Batcher) -> None:
        self._sender = sender
        self._out = out
        self._frames = Frames()
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        for request_id, url, body, headers in self._frames.feed(data):
            task = asyncio.create_task(self._post(request_id, url, body, headers))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    async def _post(self, request_id: int, url: str, body: bytes, headers: Any) -> None:
        result = await self._sender.post(url, body, headers)
        self._out.send(result_message(request_id, result))

    async def finish(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
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
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging("delivery")
    options = json.loads(os.environ["EDGESENSE_SENDER_OPTIONS"])
    runtime.run(serve(options))


if __name__ == "__main__":
    main()
