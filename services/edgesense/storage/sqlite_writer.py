"""SQLite write transactions in one hop: one thread, one connection.

SQLite has one writer at a time. Through SQLAlchemy and aiosqlite a transaction is
several round trips between the event loop and aiosqlite's thread (BEGIN,
each statement, each fetch, COMMIT), and on a busy event loop every one of
them waits for its turn: measured beside a loaded dispatcher, a claim held
the write lock for 10 ms and a 240-event store for 20 ms, most of it waiting
for the loop, while everything else waited for the lock. A `SqliteWriter`
runs a whole transaction, as a plain function of a `sqlite3.Connection`, in
its own thread; transactions queue there and run back to back, so the
database's write lock is held for the database work only.

Whoever owns a writer sends all of its process's writes to that database
through it (the delivery outbox does: `delivery.store.outbox_sqlite`), so
they never meet each other on SQLite's lock and its busy-wait naps; other
processes' writers wait up to the busy timeout. Readers on other
connections (the engine's, through aiosqlite) neither wait for it nor make
it wait: the database is in WAL mode.

The connection gets the engine's pragmas (WAL, synchronous=FULL,
busy_timeout; a transaction run with durable=False alone commits without
the fsync, see `run`); the function runs inside BEGIN IMMEDIATE and is
committed, or rolled back if it raises. Database errors become
`Unavailable`, naming what was being done.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from edgesense.common.errors import Unavailable
from edgesense.storage.engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    SQLITE_SYNCHRONOUS,
    short_error,
    sqlite_pragmas,
)

T = TypeVar("T")


class SqliteWriter:
    def __init__(self, engine: AsyncEngine, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> None:
        """Writes to the database file of the SQLite `engine` (opened as the engine
        opens it, so URI-form URLs work too); waits up to `busy_timeout_ms` for
        another process's write lock."""
        args, options = engine.dialect.create_connect_args(engine.url)
        self._database: str = args[0]
        self._uri = bool(options.get("uri", False))
        self._busy_timeout_ms = busy_timeout_ms
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._conn: sqlite3.Connection | None = None
        self._wal = False  # the connection's journal mode is WAL

    async def run(
        self, what: str, work: Callable[[sqlite3.Connection], T], *, durable: bool = True
    ) -> T:
        """`work(connection)` as one write transaction; Unavailable if the database fails.

        Transactions queue in the writer thread and run back to back: no
        lock is held across a return to the event loop. `durable=False`:
        committed without waiting for the disk (synchronous=NORMAL for this
        transaction; in WAL mode a power loss may undo it, never corrupt
        anything, and the next durable commit's fsync covers it too; outside
        WAL mode it is durable like the rest), for derived data such as the
        devices view, whose writes should not cost the hot path an fsync.
        """
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._transaction, work, durable)
        except sqlite3.Error as exc:
            raise Unavailable(f"database unavailable while {what}: {short_error(exc)}") from exc

    def _transaction(self, work: Callable[[sqlite3.Connection], T], durable: bool) -> T:
        conn = self._conn
        if conn is None:
            conn = sqlite3.connect(
                self._database,
                timeout=self._busy_timeout_ms / 1000,
                check_same_thread=False,
                uri=self._uri,
            )
            sqlite_pragmas(conn, None)
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            self._wal = conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            self._conn = conn
        if conn.in_transaction:  # a failed COMMIT left it open
            conn.execute("ROLLBACK")
        if durable or not self._wal:
            return self._run(conn, work)
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            return self._run(conn, work)
        finally:
            self._restore_durability(conn)

    def _restore_durability(self, conn: sqlite3.Connection) -> None:
        """The engine's synchronous setting again after a durable=False
        transaction. Where that fails (a transaction a failed ROLLBACK left
        open refuses it), the connection is dropped, so the hot path's
        commits never go without their fsync: the next transaction opens a
        new one with the engine's pragmas. Never raises: the transaction's
        own error, if any, is the one reported."""
        if not conn.in_transaction:
            try:
                conn.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
                return
            except sqlite3.Error:
                pass
        self._conn = None
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    @staticmethod
    def _run(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
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
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)
