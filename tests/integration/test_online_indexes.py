"""PostgreSQL's online indexes (store/online_indexes.py) are built in the
background of a running delivery service: while a build waits, the service
stores and sends; a process that finds another building them asks again
until they are there; a build cut short by a stop leaves nothing running
and is done again by the next start."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest
from prometheus_client import REGISTRY

from bench.databases import admin_dsn
from edgesense.delivery.record.maintenance import build_indexes_until_done
from edgesense.delivery.store.online_indexes import LOCK_ID, ONLINE_INDEXES, REPLACED
from edgesense.delivery.store.outbox import open_outbox
from tests.conftest import create_postgres_database, drop_postgres_database
from tests.integration.cluster import Cluster, reading
from tests.support.receivers import Receiver
from tests.support.waiting import eventually

pytestmark = pytest.mark.postgres

# The sessions of this database building an index, for at least $1 seconds.
BUILDERS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
    " AND query LIKE 'CREATE INDEX CONCURRENTLY%' AND extract(epoch FROM now() - query_start) >= $1"
)
INDEXES = (
    "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
    " WHERE c.relname = ANY($1::text[])"
)


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """A delivery database migrated to the newest schema, its online indexes
    not built yet (as after an upgrade that adds one)."""
    url, admin = await create_postgres_database()
    try:
        outbox = await open_outbox(url, build_indexes=False)
        await outbox.close()
        yield url
    finally:
        await drop_postgres_database(url, admin)


@pytest.fixture
async def admin(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(admin_dsn(database_url))
    yield connection
    await connection.close()


@pytest.fixture
async def writer(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A transaction that has written to deliveries and stays open: CREATE
    INDEX CONCURRENTLY waits for it to end (so a build is under way for as
    long as the test keeps it), and it blocks no other write."""
    connection = await asyncpg.connect(admin_dsn(database_url))
    transaction = connection.transaction()
    await transaction.start()
    await connection.execute("LOCK TABLE deliveries IN ROW EXCLUSIVE MODE")
    yield connection
    if not connection.is_closed():
        await transaction.rollback()
        await connection.close()


@pytest.fixture
def cluster_env(cluster_env: dict[str, str], writer: asyncpg.Connection) -> dict[str, str]:
    """The cluster starts while the writer holds its transaction open."""
    return cluster_env


def gauge() -> float | None:
    return REGISTRY.get_sample_value("edgesense_outbox_indexes_built")


async def built(admin: asyncpg.Connection) -> dict[str, bool]:
    """The online and replaced indexes there are: name -> valid."""
    rows = await admin.fetch(INDEXES, [*ONLINE_INDEXES, *REPLACED])
    return {row["relname"]: row["indisvalid"] for row in rows}


async def building(admin: asyncpg.Connection, for_at_least: float = 0.0) -> bool:
    return bool(await admin.fetch(BUILDERS, for_at_least))


async def all_built(admin: asyncpg.Connection) -> bool:
    found = await built(admin)
    return all(found.get(name) for name in ONLINE_INDEXES) and not REPLACED.keys() & found.keys()


async def test_delivery_stores_and_sends_while_its_indexes_are_built(
    cluster: Cluster,
    receiver: Receiver,
    admin: asyncpg.Connection,
    writer: asyncpg.Connection,
) -> None:
    await eventually(lambda: building(admin), what="the index build to wait for the writer")
    assert gauge() == 0
    webhook_id = await cluster.register(receiver.url)
    answers = await cluster.publish([reading(), reading()])
    assert answers[0].accepted == 2
    await receiver.wait_for(2)
    assert len(await cluster.deliveries(webhook_id)) == 2
    # All that while the build waited: the claims read the full indexes.
    assert await building(admin)
    assert not await all_built(admin)
    await writer.execute("ROLLBACK")
    await writer.close()
    await eventually(lambda: all_built(admin), what="the online indexes to be built")
    await eventually(lambda: gauge() == 1, what="the gauge to say so")
    # And the service goes on through them.
    await cluster.publish([reading()])
    await receiver.wait_for(3)


async def test_a_process_that_finds_the_build_taken_asks_again_until_it_is_done(
    database_url: str, admin: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process holds the build's lock, then dies without building."""
    holder = await asyncpg.connect(admin_dsn(database_url))
    await holder.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
    outbox = await open_outbox(database_url, build_indexes=False)
    try:
        assert await outbox.build_indexes() is False
        caplog.set_level(logging.INFO, "edgesense.delivery.record.maintenance")
        built = asyncio.Event()
        chore = asyncio.create_task(build_indexes_until_done(outbox, built, retry_seconds=0.05))
        await eventually(
            lambda: "another delivery process is building" in caplog.text,
            what="the chore to find the lock taken",
        )
        assert not chore.done()
        assert gauge() == 0
        await holder.close()  # its session ends: the lock is free
        async with asyncio.timeout(30):
            await chore
        assert built.is_set()
        assert await all_built(admin)
        assert gauge() == 1
        # The build's session ended with it (the server lets go a moment after).
        await eventually(lambda: lock_free(admin), what="the build's lock to be given back")
    finally:
        await outbox.close()


async def test_a_build_cut_short_leaves_nothing_running_and_the_next_start_finishes_it(
    database_url: str, admin: asyncpg.Connection, writer: asyncpg.Connection
) -> None:
    outbox = await open_outbox(database_url, build_indexes=False)
    try:
        chore = asyncio.create_task(build_indexes_until_done(outbox, asyncio.Event()))
        await eventually(lambda: building(admin), what="the build to wait for the writer")
        chore.cancel()
        with pytest.raises(asyncio.CancelledError):
            await chore
        await eventually(lambda: not_building(admin), what="the build to be cancelled")
        await eventually(lambda: lock_free(admin), what="the build's lock to be given back")
        left = await built(admin)
        assert left.get("ix_deliveries_waiting") is False  # invalid, as PostgreSQL leaves it
    finally:
        await outbox.close()
    await writer.execute("ROLLBACK")
    await writer.close()
    again = await open_outbox(database_url, build_indexes=False)
    try:
        assert await again.build_indexes() is True
    finally:
        await again.close()
    assert await all_built(admin)


async def test_a_build_the_database_fails_gives_the_lock_back_and_is_done_again(
    database_url: str,
    admin: asyncpg.Connection,
    writer: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The build's statement ends in an error (here cancelled by an operator):
    its session ends, so no process is left waiting on a lock nobody holds,
    and the next try, after the retry delay, builds them."""
    caplog.set_level(logging.WARNING, "edgesense.delivery.record.maintenance")
    outbox = await open_outbox(database_url, build_indexes=False)
    built = asyncio.Event()
    chore = asyncio.create_task(build_indexes_until_done(outbox, built, retry_seconds=0.2))
    try:
        await eventually(lambda: building(admin), what="the build to wait for the writer")
        pid = await admin.fetchval(BUILDERS, 0.0)
        assert await admin.fetchval("SELECT pg_cancel_backend($1)", pid)
        await eventually(
            lambda: "building the online indexes failed (1 in a row)" in caplog.text,
            what="the failure to be logged",
        )
        # The failed build's session ends, and its lock with it (the retry,
        # in its own session, may hold the lock again by now).
        await eventually(lambda: session_gone(admin, pid), what="the failed build's session to end")
        await writer.execute("ROLLBACK")
        await writer.close()
        async with asyncio.timeout(30):
            await chore
        assert built.is_set()
        assert await all_built(admin)
        await eventually(lambda: lock_free(admin), what="the build's lock to be given back")
    finally:
        chore.cancel()
        await asyncio.gather(chore, return_exceptions=True)
        await outbox.close()


async def test_the_build_waits_past_the_timeouts_a_database_sets(
    database_url: str, admin: asyncpg.Connection, writer: asyncpg.Connection
) -> None:
    """A role or database may set statement_timeout and lock_timeout; CREATE
    INDEX CONCURRENTLY waits for every older transaction on the table, as
    long as that takes, in a session that turned them off."""
    name = await admin.fetchval("SELECT current_database()")
    for setting in ("statement_timeout", "lock_timeout"):
        await admin.execute(f'ALTER DATABASE "{name}" SET {setting} = 200')  # milliseconds
    outbox = await open_outbox(database_url, build_indexes=False)
    built = asyncio.Event()
    chore = asyncio.create_task(build_indexes_until_done(outbox, built, retry_seconds=0.05))
    try:
        await eventually(
            lambda: building(admin, for_at_least=1.0),
            what="the build to wait five times the timeouts",
        )
        assert not chore.done()
        await writer.execute("ROLLBACK")
        await writer.close()
        async with asyncio.timeout(30):
            await chore
        assert await all_built(admin)
    finally:
        chore.cancel()
        await asyncio.gather(chore, return_exceptions=True)
        await outbox.close()


async def not_building(admin: asyncpg.Connection) -> bool:
    return not await building(admin)


async def lock_held(admin: asyncpg.Connection) -> bool:
    """Whether a session holds the build's advisory lock (its key's low 32
    bits) in this database (other tests' databases build theirs too)."""
    query = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    return bool(await admin.fetchval(query, LOCK_ID))


async def session_gone(admin: asyncpg.Connection, pid: int) -> bool:
    return not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)


async def lock_free(admin: asyncpg.Connection) -> bool:
    return not await lock_held(admin)
