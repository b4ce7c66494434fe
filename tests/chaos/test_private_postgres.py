"""tests.support.postgres.PrivatePostgres, which the chaos test restarts: a
server of our own on a free port, fsync on, whose committed rows survive both
kinds of restart it offers, and which leaves nothing behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from bench.databases import admin_dsn
from tests.support.postgres import PrivatePostgres, postgres_bin


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[PrivatePostgres]:
    if postgres_bin() is None:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql")
    postgres = PrivatePostgres()
    try:
        await asyncio.to_thread(postgres.start)
        yield postgres
    finally:
        await asyncio.to_thread(postgres.remove, tmp_path)


async def query(url: str, statement: str) -> object:
    connection = await asyncpg.connect(admin_dsn(url))
    try:
        return await connection.fetchval(statement)
    finally:
        await connection.close()


async def test_committed_rows_survive_a_fast_restart_and_an_immediate_stop(
    server: PrivatePostgres, tmp_path: Path
) -> None:
    url = await asyncio.to_thread(server.create_database, "kept")
    assert f"@127.0.0.1:{server.port}/kept" in url
    assert await query(url, "SHOW fsync") == "on"
    await query(url, "CREATE TABLE t (n int)")
    await query(url, "INSERT INTO t VALUES (1)")

    await asyncio.to_thread(server.restart, "fast")
    await query(url, "INSERT INTO t VALUES (2)")
    await asyncio.to_thread(server.stop, "immediate")
    assert not server.running()
    with pytest.raises(ConnectionRefusedError):
        await query(url, "SELECT 1")
    await asyncio.to_thread(server.start)

    assert await query(url, "SELECT array_agg(n ORDER BY n) FROM t") == [1, 2]
    root = server.root
    assert root is not None
    assert root.exists()
    await asyncio.to_thread(server.remove, tmp_path)
    assert not root.exists()
    assert (tmp_path / f"postgres-{server.port}.log").exists()
