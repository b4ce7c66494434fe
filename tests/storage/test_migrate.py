"""Migrations on a real database (SQLite file, PostgreSQL): services started at
the same moment, as separate processes, on one empty database each migrate
it and every one of them starts (on SQLite the write lock serialises them,
on PostgreSQL an advisory lock per component)."""

from __future__ import annotations

import asyncio
import sys

from sqlalchemy import text

from edgesense.storage.engine import create_engine, dispose_engine

HEADS = {"delivery": "0008", "registry": "0005"}
START = """
import asyncio, sys
from edgesense.storage.engine import create_engine, dispose_engine
from edgesense.storage.migrate import migrate

async def start(url, component):
    engine = create_engine(url)
    try:
        await migrate(engine, component)
    finally:
        await dispose_engine(engine)

print("ready", flush=True)
sys.stdin.readline()  # all at once: the test starts them together
asyncio.run(start(sys.argv[1], sys.argv[2]))
"""


async def test_concurrent_starts_on_one_empty_database_all_migrate_it(database_url: str) -> None:
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            START,
            database_url,
            component,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for component in ["delivery", "registry"] * 3
    ]
    for process in processes:  # each has imported everything it needs
        assert process.stdout is not None
        assert await process.stdout.readline() == b"ready\n"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(b"go\n")
    assert [await process.wait() for process in processes] == [0] * 6
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            for component, head in HEADS.items():
                versions = await conn.execute(
                    text(f"SELECT version_num FROM alembic_version_{component}")
                )
                assert [v for (v,) in versions] == [head]
            for table in (
                "events",
                "deliveries",
                "attempts",
                "webhooks",
                "webhook_changes",
                "rules",
                "rule_changes",
            ):
                assert (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar() == 0
    finally:
        await dispose_engine(engine)
