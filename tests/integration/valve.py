"""A TCP proxy whose server-to-client direction can be shut, for tests that
need a reply lost on the way: delivery stores a batch and confirms it, and
the bridge never hears of it (so it never acknowledges the MQTT message)."""

from __future__ import annotations

import asyncio
import contextlib


class Valve:
    """Passes bytes both ways between clients and `target`, until `hold_replies`.

    `hold_replies` stops what the server sends on the connections open at that
    moment from reaching their clients (the bytes are kept, never delivered);
    connections made afterwards pass both ways again.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._open: list[asyncio.Event] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def hold_replies(self) -> None:
        for passing in self._open:
            passing.clear()
        self._open = []

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        passing = asyncio.Event()
        passing.set()
        self._open.append(passing)
        for pump in (self._pump(reader, up_writer, None), self._pump(up_reader, writer, passing)):
            task = asyncio.create_task(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, passing: asyncio.Event | None
    ) -> None:
        try:
            while data := await source.read(65536):
                if passing is not None:
                    await passing.wait()
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                sink.close()
