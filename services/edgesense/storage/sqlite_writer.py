"""SQLite write transactions in one hop: one thread, one connection.

SQLite has one writer at a time. Through SQLAlchemy and aiosqlite a transaction is
several round trips between the event loop and aiosqlite's thread (BEGIN,
each statement, each fetch, COMMIT), and on a busy event loop every one of
them waits for its turn: measured beside a loaded dispatcher, a claim held
the write lock for 10 ms and a 240-event store for 20 ms, most of it waiting
for the loop, while everything else waited for the lock. A `SqliteWriter`
runs a whole transaction, as a plain function of a `sqlite3.Connection`, in
its own thread; transactions queue there and run back to back, so the
database's write lock is held for the database work only. The engine's other
writers in this process (rare ones: holding, releasing, redelivering) pause
the thread while they write (`exclusive`, used by `engine.transaction`), so
the two never meet on SQLite's lock and its busy-wait naps.

The connection gets the engine's pragmas (WAL, synchronous=FULL,
busy_timeout); the function runs inside BEGIN IMMEDIATE and is committed, or
rolled back if it raises. Database errors become `Unavailable`, naming what
was being done.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from edgesense.common.errors import Unavailable
from edgesense.storage.engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    register_thread_writer,
    sqlite_pragmas,
)

T = TypeVar("T")


class SqliteWriter:
    def __init__(
        self, engine: AsyncEngine, path: str, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS
    ) -> None:
        """Writes to `engine`'s SQLite file at `path`, beside the engine's other writers;
        waits up to `busy_timeout_ms` for another process's write lock."""
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._engine = engine
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._conn: sqlite3.Connection | None = None
        register_thread_writer(engine, self)

    async def run(self, what: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)` as one write transaction; Unavailable if the database fails.

        Transactions queue in the writer thread and run back to back: no
        lock is held across a return to the event loop.
        """
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._transaction, work)
        except sqlite3.Error as exc:
            text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise Unavailable(f"database unavailable while {what}: {text}") from exc

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the writer thread while another connection of this process writes
        (`engine.transaction` does this), so the two never wait on SQLite's lock."""
        loop = asyncio.get_running_loop()
        holding: asyncio.Future[None] = loop.create_future()
        release = threading.Event()

        def hold() -> None:
            loop.call_soon_threadsafe(_resolve, holding)
            release.wait()

        held = loop.run_in_executor(self._executor, hold)
        try:
            await holding
            yield
        finally:
            release.set()
            await held

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            conn = sqlite3.connect(
                self._path, timeout=self._busy_timeout_ms / 1000, check_same_thread=False
            )
            sqlite_pragmas(conn, None)
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            self._conn = conn
        if conn.in_transaction:  # a failed COMMIT left it open
            conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    async def close(self) -> None:
        register_thread_writer(self._engine, None)

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
