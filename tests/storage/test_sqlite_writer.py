"""The SQLite writer thread: a locked database, a failing transaction, and the
engine's readers beside it, against a real SQLite file."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from edgesense.common.errors import ConfigurationError, Unavailable
from edgesense.storage.engine import create_engine, dispose_engine, reading, transaction
from edgesense.storage.sqlite_writer import SqliteWriter


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    async with transaction(engine, "creating a table", lock=None) as conn:
        await conn.execute(text("CREATE TABLE items (n INTEGER NOT NULL)"))
    yield engine
    await dispose_engine(engine)


Writers = Callable[..., SqliteWriter]


@pytest.fixture
async def writers(engine: AsyncEngine) -> AsyncIterator[Writers]:
    """SqliteWriters of `engine`'s file, closed at the end."""
    made: list[SqliteWriter] = []

    def make(**kwargs: int) -> SqliteWriter:
        made.append(SqliteWriter(engine, **kwargs))
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


def synchronous(conn: sqlite3.Connection) -> int:
    """The connection's PRAGMA synchronous (1 NORMAL, 2 FULL)."""
    return int(conn.execute("PRAGMA synchronous").fetchone()[0])


async def test_only_a_transaction_run_not_durable_skips_the_fsync(
    engine: AsyncEngine, writers: Writers
) -> None:
    """durable=False runs that one transaction at synchronous=NORMAL; every
    other, before and after, and after one that failed, at FULL."""
    writer = writers()
    assert await writer.run("storing events", synchronous) == 2
    assert await writer.run("writing a view", synchronous, durable=False) == 1
    assert await writer.run("storing events", synchronous) == 2

    def fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO items (n) VALUES (1)")
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(Unavailable, match="while writing a view: disk I/O error"):
        await writer.run("writing a view", fail, durable=False)
    assert await writer.run("storing events", synchronous) == 2
    assert await writer.run("storing events", insert(4)) == 4
    assert count(str(engine.url.database)) == 1


async def test_a_reader_on_the_engine_neither_waits_for_the_writer_nor_blocks_it(
    engine: AsyncEngine, writers: Writers
) -> None:
    path = str(engine.url.database)
    writer = writers(busy_timeout_ms=200)
    await writer.run("storing events", insert(1))
    # A read transaction held open through the engine (aiosqlite) while the
    # thread commits: in WAL mode the writer does not wait for it (outside
    # WAL it could not commit, and would fail after 200 ms), and the reader
    # keeps its snapshot.
    async with reading(engine, "counting") as conn:
        assert (await conn.execute(text("SELECT count(*) FROM items"))).scalar() == 1
        assert await writer.run("storing events", insert(2)) == 2
        assert (await conn.execute(text("SELECT count(*) FROM items"))).scalar() == 1
    # And a writer transaction in progress does not hold the reader up.
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO items (n) VALUES (3)")
    async with reading(engine, "counting") as conn:
        assert (await conn.execute(text("SELECT count(*) FROM items"))).scalar() == 2
    holder.execute("COMMIT")
    holder.close()
    assert count(path) == 3


@pytest.mark.parametrize("url", ["sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite://"])
def test_an_in_memory_database_is_refused(url: str) -> None:
    # Every connection (the engine's, the writer thread's) would have its own.
    with pytest.raises(ConfigurationError, match="not an in-memory database"):
        create_engine(url)


async def test_a_uri_form_url_is_one_file_for_the_engine_and_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    engine = create_engine(f"sqlite+aiosqlite:///file:{tmp_path / 'u.db'}?mode=rwc&uri=true")
    writer = SqliteWriter(engine)
    try:
        async with transaction(engine, "creating a table", lock=None) as conn:
            await conn.execute(text("CREATE TABLE items (n INTEGER NOT NULL)"))
        await writer.run("storing events", insert(7))
        async with reading(engine, "reading") as conn:
            assert (await conn.execute(text("SELECT n FROM items"))).scalar() == 7
    finally:
        await writer.close()
        await dispose_engine(engine)
    # No folder named after the URI ("file:") was made for it.
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("u.db")] == []
