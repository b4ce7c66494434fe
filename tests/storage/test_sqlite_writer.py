"""The SQLite writer thread: a locked database, a failing transaction, and the
engine's other writers, against a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from edgesense.common.errors import Unavailable
from edgesense.storage.engine import create_engine, dispose_engine, transaction
from edgesense.storage.sqlite_writer import SqliteWriter


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    async with transaction(engine, "creating a table") as conn:
        await conn.execute(text("CREATE TABLE items (n INTEGER NOT NULL)"))
    yield engine
    await dispose_engine(engine)


Writers = Callable[..., SqliteWriter]


@pytest.fixture
async def writers(engine: AsyncEngine) -> AsyncIterator[Writers]:
    """SqliteWriters of `engine`'s file, closed at the end."""
    made: list[SqliteWriter] = []

    def make(**kwargs: int) -> SqliteWriter:
        made.append(SqliteWriter(engine, str(engine.url.database), **kwargs))
        return made[-1]

    yield make
    for writer in made:
        await writer.close()


def insert(n: int) -> Callable[[sqlite3.Connection], int]:
    def work(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO items (n) VALUES (?)", (n,))
        return n

    return work


def count(path: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM items").fetchone()[0])


async def test_a_database_locked_by_another_process_is_unavailable_and_then_usable(
    engine: AsyncEngine, writers: Writers
) -> None:
    path = str(engine.url.database)
    writer = writers(busy_timeout_ms=200)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing, for too long
    began = time.monotonic()
    with pytest.raises(Unavailable, match="while storing events: database is locked"):
        await writer.run("storing events", insert(1))
    assert 0.15 < time.monotonic() - began < 5
    holder.execute("ROLLBACK")
    holder.close()
    assert await writer.run("storing events", insert(2)) == 2
    assert count(path) == 1


async def test_a_failing_transaction_is_rolled_back_and_the_next_one_commits(
    engine: AsyncEngine, writers: Writers
) -> None:
    path = str(engine.url.database)
    writer = writers()

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO items (n) VALUES (1)")
        raise ValueError("a bug in the middle of a transaction")

    with pytest.raises(ValueError, match="a bug"):
        await writer.run("storing events", half_then_fail)
    assert await writer.run("storing events", insert(3)) == 3
    assert count(path) == 1  # the half-done transaction left nothing


async def test_the_engines_other_writers_pause_the_thread_instead_of_colliding(
    engine: AsyncEngine, writers: Writers
) -> None:
    path = str(engine.url.database)
    writer = writers(busy_timeout_ms=200)

    # Many thread transactions queued while the engine writes, slowly,
    # through SQLAlchemy: neither side meets SQLite's lock (which would
    # fail the thread's transactions after 200 ms).
    async def slow_engine_write() -> None:
        async with transaction(engine, "holding") as conn:
            await conn.execute(text("INSERT INTO items (n) VALUES (0)"))
            await asyncio.sleep(0.5)

    results = await asyncio.gather(
        slow_engine_write(),
        *(writer.run("storing events", insert(n)) for n in range(1, 51)),
    )
    assert results[1:] == list(range(1, 51))
    assert count(path) == 51
