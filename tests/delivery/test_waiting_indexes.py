"""PostgreSQL's waiting indexes (store/online_indexes.py, migration 0008):
partial indexes holding only pending and held deliveries, which replace the
full ix_deliveries_due and ix_deliveries_webhook_due, are usable by every
statement that reads waiting rows in any plan, and are given back as the
full ones by the downgrade."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from alembic import command
from sqlalchemy import event

from bench.databases import admin_dsn
from edgesense.delivery.store.online_indexes import (
    ONLINE_INDEXES,
    REPLACED,
    ensure_online_indexes,
)
from edgesense.delivery.store.outbox import open_outbox
from edgesense.delivery.store.outbox_postgres import PostgresOutbox
from edgesense.delivery.store.rows import PENDING, SUCCEEDED
from edgesense.storage.engine import create_engine, dispose_engine
from edgesense.storage.migrate import _config
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.delivery.conftest import new_delivery
from tests.delivery.test_outbox import LEASE, NOW, attempt_outcome, store

pytestmark = pytest.mark.postgres

WAITING_INDEXES = tuple(REPLACED.values())
INDEXES = (
    "SELECT c.relname, c.oid, pg_get_expr(i.indpred, i.indrelid) AS predicate, i.indisvalid"
    " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
    " WHERE i.indrelid = 'deliveries'::regclass"
)


@pytest.fixture
async def database() -> AsyncIterator[str]:
    url, admin = await create_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(url, admin)


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(admin_dsn(url))


def literal(value: Any) -> str:
    """`value` written in SQL (EXECUTE of a prepared statement takes no parameters)."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(map(literal, value)) + "]::varchar[]"
    if value is None:
        return "NULL"
    return repr(value)


async def indexes(url: str) -> dict[str, tuple[str | None, bool, int]]:
    """The indexes on deliveries: name -> (partial condition, valid, oid)."""
    connection = await connect(url)
    try:
        rows = await connection.fetch(INDEXES)
    finally:
        await connection.close()
    return {row["relname"]: (row["predicate"], row["indisvalid"], row["oid"]) for row in rows}


async def test_the_due_rows_are_indexed_only_while_they_wait(database: str) -> None:
    """A new outbox has the waiting indexes, partial, and not the full ones
    they replace (migrations 0001 and 0002 made those, the opening drops them)."""
    outbox = await open_outbox(database)
    await outbox.close()
    found = await indexes(database)
    for name in WAITING_INDEXES:
        predicate, valid, _ = found[name]
        assert valid, name
        assert predicate is not None, name
        assert "'pending'" in predicate, predicate
        assert "'held'" in predicate, predicate
        assert name in ONLINE_INDEXES
    assert not set(REPLACED) & set(found), found


async def test_an_outbox_made_before_them_gets_them_and_keeps_its_deliveries(
    database: str,
) -> None:
    """A database as an earlier version left it (the full indexes, no waiting
    ones, deliveries waiting): the next opening builds the waiting indexes,
    drops the full ones, and the waiting deliveries are claimed as before."""
    outbox = await open_outbox(database)
    try:
        await store(outbox, *(new_delivery(n, "wh_a", due=NOW) for n in range(1, 4)))
    finally:
        await outbox.close()
    connection = await connect(database)
    try:
        for name in WAITING_INDEXES:
            await connection.execute(f"DROP INDEX {name}")
        await connection.execute(
            "CREATE INDEX ix_deliveries_due"
            " ON deliveries (status, next_attempt_at, seq, webhook_id)"
        )
        await connection.execute(
            "CREATE INDEX ix_deliveries_webhook_due"
            " ON deliveries (webhook_id, status, next_attempt_at, seq)"
        )
    finally:
        await connection.close()
    assert set(REPLACED) <= set(await indexes(database))

    outbox = await open_outbox(database)
    try:
        found = await indexes(database)
        assert set(WAITING_INDEXES) <= {name for name, (_, valid, _) in found.items() if valid}
        assert not set(REPLACED) & set(found), found
        # Built once: opening again finds them and changes nothing (the same
        # index objects, not rebuilt ones).
        assert isinstance(outbox, PostgresOutbox)
        await ensure_online_indexes(outbox.engine)
        assert await indexes(database) == found
        claimed = await outbox.claim("me", NOW, LEASE, 10)
        assert sorted(c.delivery_id for c in claimed) == ["dlv_1", "dlv_2", "dlv_3"]
    finally:
        await outbox.close()


async def test_statements_on_waiting_rows_use_the_waiting_indexes_in_a_generic_plan(
    database: str,
) -> None:
    """The outbox's statements that read waiting rows by status (defer,
    hold, release, fail, expire, the counts) name the statuses as literals,
    so PostgreSQL can use a partial index even in a generic plan, the one it
    may settle on for a prepared statement after five runs. Each statement
    the outbox sent is prepared again with generic plans forced and
    sequential scans off (the table is almost empty) and the other indexes
    by webhook or status dropped: its plan reads one of the waiting indexes.
    A status passed as a parameter would not be proven to be pending or
    held, and the plan would scan the table."""
    outbox = await open_outbox(database)
    assert isinstance(outbox, PostgresOutbox)
    sent: list[tuple[str, tuple[Any, ...]]] = []

    def capture(*args: Any) -> None:
        statement, parameters = args[2], args[3]
        where = statement.partition("WHERE")[2]
        if "deliveries" in statement and "status" in where:  # a read by status
            sent.append((statement, tuple(parameters or ())))

    try:
        await store(outbox, *(new_delivery(n, "wh_a", due=NOW) for n in range(1, 4)))
        await outbox.claim("me", NOW, LEASE, 1)
        await outbox.record("me", [attempt_outcome("dlv_1", 1, NOW, 5, 200, SUCCEEDED)], NOW)
        event.listen(outbox.engine.sync_engine, "before_cursor_execute", capture)
        await outbox.defer("wh_a", NOW + 60, "paused", NOW)
        await outbox.hold(["wh_a"], "webhook disabled", NOW)
        assert await outbox.held_count("p", ["wh_a"]) == 2
        assert await outbox.waiting_counts() == {PENDING: 0, "held": 2}
        await outbox.release_held(["wh_a"], NOW)
        await outbox.fail_all(["wh_a"], "webhook deleted", NOW)
        await outbox.expire_held(NOW, "held too long", NOW)
    finally:
        event.remove(outbox.engine.sync_engine, "before_cursor_execute", capture)
        await outbox.close()
    assert len(sent) >= 7, sent
    connection = await connect(database)
    try:
        transaction = connection.transaction()
        await transaction.start()  # rolled back: the indexes dropped below come back
        await connection.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await connection.execute("SET LOCAL enable_seqscan = off")
        # Only the waiting indexes left to read rows by webhook or status (on
        # an almost empty table any index on webhook_id costs the same).
        for name in await indexes(database):
            if name not in WAITING_INDEXES and not name.startswith("deliveries_"):
                await connection.execute(f"DROP INDEX {name}")
        for number, (statement, parameters) in enumerate(sent):
            await connection.execute(f"PREPARE s{number} AS {statement}")
            arguments = ", ".join(map(literal, parameters))
            run = (
                f"EXPLAIN EXECUTE s{number}({arguments})"
                if parameters
                else f"EXPLAIN EXECUTE s{number}"
            )
            plan = "\n".join(row[0] for row in await connection.fetch(run))
            assert "_waiting" in plan, (statement, plan)
        await transaction.rollback()
    finally:
        await connection.close()


async def test_the_downgrade_gives_back_the_full_indexes(database: str) -> None:
    """Down to 0007 (and on down to 0001, whose step back from 0002 drops the
    full indexes): the full indexes come back, the waiting ones go, and a
    release before 0008 finds the indexes it reads."""
    outbox = await open_outbox(database)
    await outbox.close()
    engine = create_engine(database)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(_config("delivery", sync), "0007"))
        found = await indexes(database)
        assert set(REPLACED) <= {name for name, (_, valid, _) in found.items() if valid}
        assert not set(WAITING_INDEXES) & set(found), found
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(_config("delivery", sync), "0001"))
        assert "ix_deliveries_due" in await indexes(database)
    finally:
        await dispose_engine(engine)
