"""The outbox's indexes that PostgreSQL builds without blocking writes.

A plain CREATE INDEX on a large deliveries table blocks every write to it
(accept, claim, record) until the index is built; CREATE INDEX CONCURRENTLY
does not, but it cannot run inside a transaction, and a migration runs in
one (storage/migrate.py). So migrations 0003 to 0005 create these indexes
on SQLite only, and on PostgreSQL `ensure_online_indexes` builds them, outside any
transaction. The delivery service runs it in the background once it serves
(record/maintenance.py `build_indexes_until_done`, until it reports them
all built; retention waits for that): on a large table a build takes
minutes, and the first process started after an upgrade serves meanwhile.
`open_outbox` runs it once before answering unless told not to (the tests
use that, to have the indexes there).

The build holds a session-level advisory lock and turns off the session's
timeouts (statement_timeout, lock_timeout and, from PostgreSQL 17,
transaction_timeout: a role or database may set them, and CREATE INDEX
CONCURRENTLY waits, through lock waits, for every older transaction on the
table), then ends its session (the connection is closed, not pooled),
done, failed or cancelled. So it needs a connection that is one server
session: PostgreSQL directly, or PgBouncer in session mode. In transaction
mode the build still runs, but the lock and the settings stay with a
server connection that other clients share and that outlives the build:
the other processes see the build taken until PgBouncer closes it.

- at every start one catalog read finds them valid (and the REPLACED ones
  gone), and nothing else runs;
- otherwise, by the one process that gets an advisory lock (processes
  starting together build each index once), an index left invalid by a
  build that was interrupted is dropped, the missing ones are built
  concurrently, and then the REPLACED ones are dropped concurrently. Until
  then the queries that use them (recover, stats, retention, claims'
  lookups of ordered webhooks' earlier deliveries) read the rows without
  them, and claims read the REPLACED indexes.

The others do not wait for the lock: a statement waiting for it would be a
transaction that CREATE INDEX CONCURRENTLY itself waits for (it waits out
every transaction older than its snapshot), and PostgreSQL would end one of
the two as a deadlock. So `pg_try_advisory_lock`, and a process that does
not get it goes on without waiting (the one that did builds them);
`ensure_online_indexes` answers False then, and the background loop asks
again later, so that the indexes still get built if that process dies.

The waiting indexes. On PostgreSQL the due rows are read through two
partial indexes that hold only waiting deliveries (pending or held),
ix_deliveries_waiting and ix_deliveries_webhook_waiting; they replace
migrations 0001 and 0002's ix_deliveries_due and ix_deliveries_webhook_due,
which held every delivery kept. A delivery that ends leaves them: its
outcome's update writes no entry there, and they stay the size of the
backlog, not of the history (at 1,000 deliveries/s and 7 days of
retention, 600 million rows, each index written at every outcome). SQLite
keeps the full ones: its planner uses a partial index only where the query
repeats the index's condition term for term. Every statement that reads
them names the statuses as literals (rows.py, reads.py): PostgreSQL uses a
partial index for a parameter only in a plan made for its value.
Migration 0008 marks the schema that has them; its downgrade builds the
full ones again.
"""

from __future__ import annotations

import contextlib
import logging
import time
import zlib

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from edgesense.delivery.store.rows import ORDER_WAITING, WAITING_SQL
from edgesense.storage.engine import translate

# name -> its CREATE INDEX CONCURRENTLY statement (the same columns as
# migrations 0003, 0004 and 0005; the waiting indexes, see above).
ONLINE_INDEXES = {
    "ix_deliveries_waiting": (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_deliveries_waiting"
        f" ON deliveries (status, next_attempt_at, seq, webhook_id) WHERE {WAITING_SQL}"
    ),
    "ix_deliveries_webhook_waiting": (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_deliveries_webhook_waiting"
        f" ON deliveries (webhook_id, status, next_attempt_at, seq) WHERE {WAITING_SQL}"
    ),
    "ix_deliveries_webhook_created": (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_deliveries_webhook_created"
        " ON deliveries (webhook_id, created_at)"
    ),
    "ix_deliveries_webhook_failed": (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_deliveries_webhook_failed"
        " ON deliveries (webhook_id, updated_at, seq) WHERE status = 'failed'"
    ),
    "ix_deliveries_ended": (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_deliveries_ended"
        " ON deliveries (updated_at) WHERE status IN ('succeeded', 'failed')"
    ),
    "ix_deliveries_event": (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_deliveries_event ON deliveries (event_id)"
    ),
    "ix_events_created": (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_events_created ON events (created_at)"
    ),
    "ix_deliveries_order": (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_deliveries_order"
        f" ON deliveries (webhook_id, order_key, seq) WHERE {ORDER_WAITING}"
    ),
}
# Dropped (concurrently) once every ONLINE_INDEXES is valid: the full
# indexes (SQLite keeps them) -> the waiting ones that replace them.
REPLACED = {
    "ix_deliveries_due": "ix_deliveries_waiting",
    "ix_deliveries_webhook_due": "ix_deliveries_webhook_waiting",
}
VALID = text(
    "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
    " WHERE c.relname = ANY(:names) AND pg_table_is_visible(c.oid)"
)
LOCK_ID = zlib.crc32(b"edgesense-online-indexes-delivery")
# The build's session waits as long as it takes (see above).
TIMEOUTS_OFF = text(
    "SELECT set_config('statement_timeout', '0', false), set_config('lock_timeout', '0', false),"
    " CASE WHEN current_setting('server_version_num')::int >= 170000"
    " THEN set_config('transaction_timeout', '0', false) END"
)

log = logging.getLogger(__name__)


async def ensure_online_indexes(engine: AsyncEngine) -> bool:
    """Build the ONLINE_INDEXES that are missing or invalid, then drop the
    REPLACED ones (PostgreSQL only). True once they are all as they should
    be; False when another process holds the lock (it is building them).
    Raises Unavailable if the database fails; a build cut short (that, or a
    cancellation) leaves an invalid index, which the next call rebuilds."""
    if engine.dialect.name != "postgresql":
        return True
    with translate("building the outbox's indexes"):
        async with engine.connect() as plain:
            conn = await plain.execution_options(isolation_level="AUTOCOMMIT")
            if _done(await _found(conn)):
                return True
            locked = await conn.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": LOCK_ID})
            if not locked.scalar():
                return False  # another process is building them (see above)
            try:
                await conn.execute(TIMEOUTS_OFF)  # see above; the session ends below
                found = await _found(conn)
                for name, create in ONLINE_INDEXES.items():
                    if found.get(name) is False:  # a build that did not finish
                        await conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                    if found.get(name) is not True:
                        await _timed(conn, f"built index {name}", create)
                for name in sorted(REPLACED.keys() & found.keys()):
                    drop = f"DROP INDEX CONCURRENTLY IF EXISTS {name}"
                    await _timed(conn, f"dropped index {name}, replaced by {REPLACED[name]}", drop)
            finally:
                # Done, failed or cancelled (asyncpg has then asked the server
                # to cancel the statement): the connection is closed, not
                # pooled, and its session's end gives the lock back.
                with contextlib.suppress(Exception):
                    await plain.invalidate()
    return True


async def _timed(conn: AsyncConnection, done: str, statement: str) -> None:
    began = time.monotonic()
    await conn.execute(text(statement))
    log.info("outbox: %s in %.1f s", done, time.monotonic() - began)


async def _found(conn: AsyncConnection) -> dict[str, bool]:
    """The ONLINE_INDEXES and REPLACED indexes there are: name -> valid."""
    rows = await conn.execute(VALID, {"names": [*ONLINE_INDEXES, *REPLACED]})
    return {name: valid for name, valid in rows}


def _done(found: dict[str, bool]) -> bool:
    return all(found.get(name) for name in ONLINE_INDEXES) and not REPLACED.keys() & found.keys()
