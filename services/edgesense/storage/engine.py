"""SQLAlchemy async engines for SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode with `synchronous=FULL` (a confirmed write survives a
power cut, not only a process kill) and a busy timeout, so a second process or
a long reader makes writers wait instead of failing at once. Database errors
are translated into `Unavailable` where they enter our code (`translate`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from edgesense.common.errors import ConfigurationError, Unavailable

SQLITE_BUSY_TIMEOUT_MS = 10_000
# Every commit waits for the disk (see above); SqliteWriter.run(durable=False)
# relaxes it for one transaction of derived data.
SQLITE_SYNCHRONOUS = "FULL"


def create_engine(url: str) -> AsyncEngine:
    """An async engine for `url`, creating the SQLite file's folder if needed."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigurationError(f"EDGESENSE_DATABASE_URL is not a database URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.drivername != "sqlite+aiosqlite":
            raise ConfigurationError(
                "EDGESENSE_DATABASE_URL: use sqlite+aiosqlite:///path for SQLite"
            )
        if parsed.database in (None, "", ":memory:"):
            # Each connection would have a database of its own, lost at exit.
            raise ConfigurationError(
                "EDGESENSE_DATABASE_URL: SQLite needs a file (sqlite+aiosqlite:///path),"
                " not an in-memory database"
            )
        if not parsed.query.get("uri"):  # a URI (file:…?mode=…) is not a path
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, pool_size=5
        )
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    if backend == "postgresql":
        if parsed.drivername != "postgresql+asyncpg":
            raise ConfigurationError(
                "EDGESENSE_DATABASE_URL: use postgresql+asyncpg://… for PostgreSQL"
            )
        return create_async_engine(parsed, pool_size=10, max_overflow=10, pool_pre_ping=True)
    raise ConfigurationError(
        f"EDGESENSE_DATABASE_URL: unsupported database {backend!r} (sqlite or postgresql)"
    )


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # aiosqlite's default transaction handling is replaced by explicit BEGIN
    # (see _sqlite_begin), so writers take the lock at the start and a busy
    # database waits for busy_timeout instead of failing mid-transaction.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # Writers take the write lock up front; readers (see `reading`) do not.
    if conn.get_execution_options().get("edgesense_read"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# asyncpg's errors for a connection lost (class 08: ConnectionDoesNotExist
# among them) or refused by a server shutting down, starting or recovering
# (57P01-57P03), worded as SQLAlchemy's disconnects are: "unavailable", not
# an error of the statement.
_DRIVER_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.CrashShutdownError,
)


@contextlib.contextmanager
def translate(what: str) -> Iterator[None]:
    """Map database failures to Unavailable, naming what was being done."""
    try:
        yield
    except (OperationalError, DBAPIError) as exc:
        raise Unavailable(f"database unavailable while {what}: {short_error(exc)}") from exc
    except SQLAlchemyError as exc:
        raise Unavailable(f"database error while {what}: {short_error(exc)}") from exc
    except _DRIVER_UNAVAILABLE as exc:  # from a `driver_pool`: the server gone or going
        raise Unavailable(f"database unavailable while {what}: {short_error(exc)}") from exc
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise Unavailable(f"database error while {what}: {short_error(exc)}") from exc
    except (OSError, ConnectionError) as exc:
        raise Unavailable(f"database unreachable while {what}: {exc}") from exc


# SQLite has one writer at a time; a writer that finds the lock taken sleeps
# in SQLite's busy handler (1, 2, 5 ... 100 ms naps), which put a floor of
# about 200 ms under latency. The writers of one process therefore queue on
# an asyncio lock first (made by `writer_lock`, held by whoever owns the
# engine and passed to `transaction`) and meet SQLite's lock only across
# processes. PostgreSQL locks rows, not the database: no lock there.
def writer_lock(engine: AsyncEngine) -> asyncio.Lock | None:
    """The lock `engine`'s writers in this process share: one per SQLite engine, else None."""
    return asyncio.Lock() if engine.dialect.name == "sqlite" else None


@contextlib.asynccontextmanager
async def transaction(
    engine: AsyncEngine, what: str, *, lock: asyncio.Lock | None
) -> AsyncIterator[AsyncConnection]:
    """A write transaction (on SQLite: BEGIN IMMEDIATE), after taking `lock`.

    `lock` is required so that every writer says how it queues: on SQLite the
    `writer_lock` its owner made for the engine (forgetting it would bring
    back SQLite's busy-wait naps), None on PostgreSQL or where nothing else of
    this process writes.
    """
    async with lock if lock is not None else contextlib.nullcontext():
        with translate(what):
            async with engine.begin() as conn:
                yield conn


@contextlib.asynccontextmanager
async def reading(engine: AsyncEngine, what: str) -> AsyncIterator[AsyncConnection]:
    """A read-only transaction. On SQLite it does not take the write lock, and
    in WAL mode a reader sees a snapshot: it neither waits for a writer (of
    this process or another) nor makes one wait."""
    with translate(what):
        async with engine.execution_options(edgesense_read=True).begin() as conn:
            yield conn


# What SQLAlchemy's asyncpg dialect takes in the URL for itself, not for asyncpg.connect.
_DIALECT_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func")


async def driver_pool(engine: AsyncEngine, max_size: int) -> asyncpg.Pool:
    """A plain asyncpg pool to the PostgreSQL database `engine` connects to
    (the same URL, so the same host, credentials and TLS settings).

    For the few statements run for every event or delivery: through
    SQLAlchemy each transaction also costs a ping at checkout (pre_ping), a
    BEGIN and a COMMIT of its own, and Python work per statement; a single
    statement on a pooled asyncpg connection is one round trip, its own
    transaction. Connections are not reset when released (asyncpg's default
    reset is a round trip per use): nothing run on them changes session
    state, and an open transaction is always ended by asyncpg itself.
    """
    _args, options = engine.dialect.create_connect_args(engine.url)
    for name in _DIALECT_ONLY:
        options.pop(name, None)
    # min_size=0: connections are made on use. With a floor, asyncpg keeps
    # reconnecting in the background while the server is down, logging a
    # traceback at every try.
    return await asyncpg.create_pool(min_size=0, max_size=max_size, reset=_keep_session, **options)


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """No reset query when a connection goes back to the pool (see driver_pool)."""


async def dispose_engine(engine: AsyncEngine, wait_seconds: float = 5.0) -> None:
    """Close the pool once connections still in use (by work being
    cancelled or shielded at shutdown) have been returned to it."""
    pool: Any = engine.pool
    deadline = asyncio.get_running_loop().time() + wait_seconds
    # The pool has no "returned" event to wait on: poll it briefly.
    while pool.checkedout() > 0 and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await engine.dispose()


def short_error(exc: Exception) -> str:
    """A database error's first line (its driver's, if wrapped), at most 200 characters."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    return text.splitlines()[0][:200] if text else type(exc).__name__
