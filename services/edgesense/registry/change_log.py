"""A registry table's change log, as WatchWebhooks and WatchRules read it.

Every write to `webhooks` or `rules` appends a row (seq, id, project,
"upsert"/"delete") to its log in the same transaction. A watch stream
opens with a snapshot of the table and the log's last seq, read together;
then it follows the log from there (`changes_after`), with each change's
row as it is now. On PostgreSQL, writers and snapshots lock the log
(`LOCK TABLE … IN EXCLUSIVE MODE`) so that seqs commit in order and no
write falls between a snapshot's two reads; on SQLite the one writer does
that. `ChangeSignal` wakes this process's watchers at once after a write;
other replicas' writes are polled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from edgesense.storage.engine import reading, transaction

T = TypeVar("T")
M = TypeVar("M")
UPSERT, DELETE = "upsert", "delete"
# Watchers poll the change log this often for writes made by other replicas;
# writes in this process wake them at once.
WATCH_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Change:
    """One row of a change log: `key` is the webhook's or rule's id."""

    seq: int
    key: str
    project_id: str
    kind: str  # UPSERT or DELETE


@dataclass(frozen=True)
class ChangeLog(Generic[T]):
    """The log `changes` of the table `items`, whose rows `row` turns into T."""

    items: Table
    changes: Table
    key: str  # the id column, in both tables
    row: Callable[[Any], T]
    what: str  # "webhook", "rule": for messages
    order: str  # the column a snapshot is ordered by

    async def lock(self, conn: AsyncConnection) -> None:
        if conn.dialect.name == "postgresql":
            await conn.execute(text(f"LOCK TABLE {self.changes.name} IN EXCLUSIVE MODE"))

    async def log(self, conn: AsyncConnection, key: str, project_id: str, kind: str) -> None:
        """Append a change, in the writer's transaction (locking the log first)."""
        await self.lock(conn)
        await self.append(conn, key, project_id, kind)

    async def append(self, conn: AsyncConnection, key: str, project_id: str, kind: str) -> None:
        """Append a change in a transaction that has already taken `lock`."""
        await conn.execute(
            insert(self.changes).values(
                {
                    self.key: key,
                    "project_id": project_id,
                    "kind": kind,
                    "created_at": datetime.now(UTC),
                }
            )
        )

    async def snapshot(
        self, engine: AsyncEngine, writes: asyncio.Lock | None
    ) -> tuple[list[T], int]:
        """Every row, and the change seq the snapshot is consistent with."""
        async with transaction(engine, f"reading the {self.what} snapshot", lock=writes) as conn:
            # A write transaction: on SQLite it excludes writers between the
            # two reads; on PostgreSQL the log's lock does.
            await self.lock(conn)
            seq = (await conn.execute(select(func.max(self.changes.c.seq)))).scalar()
            rows = await conn.execute(select(self.items).order_by(self.items.c[self.order]))
            return [self.row(r) for r in rows], int(seq or 0)

    async def changes_after(
        self, engine: AsyncEngine, seq: int, limit: int = 500
    ) -> tuple[list[Change], dict[str, T]]:
        """Changes with a larger seq, and the current rows they name."""
        key = self.key
        async with reading(engine, f"reading {self.what} changes") as conn:
            rows = await conn.execute(
                select(self.changes)
                .where(self.changes.c.seq > seq)
                .order_by(self.changes.c.seq)
                .limit(limit)
            )
            changes = [Change(r.seq, getattr(r, key), r.project_id, r.kind) for r in rows]
            ids = {c.key for c in changes}
            current: dict[str, T] = {}
            if ids:
                found = await conn.execute(select(self.items).where(self.items.c[key].in_(ids)))
                current = {getattr(r, key): self.row(r) for r in found}
            return changes, current


class ChangeSignal:
    """Wakes the watchers of this process at once after a write."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def next(self) -> asyncio.Event:
        """The event the next notify() sets."""
        return self._event


class Watched(Protocol[T]):
    """A store a watch stream follows (WebhookStore, RuleStore)."""

    changed: ChangeSignal

    async def snapshot(self) -> tuple[list[T], int]: ...

    async def changes_after(self, seq: int) -> tuple[list[Change], dict[str, T]]: ...


async def watch(
    store: Watched[T],
    snapshot_item: Callable[[T], M],
    snapshot_end: M,
    change_item: Callable[[Change, T | None], M],
    stopping: Callable[[], bool],
) -> AsyncIterator[M]:
    """A watch stream's messages: each row of a snapshot, its end, then each
    change (with its row as it is now, None if gone) until `stopping()`."""
    # Shielded: a watcher that goes away mid-read must not cancel the
    # database call itself, which would strand its pooled connection.
    found, seq = await asyncio.shield(store.snapshot())
    for item in found:
        yield snapshot_item(item)
    yield snapshot_end
    while not stopping():
        wake = store.changed.next()  # before reading: a write meanwhile sets it
        changes, current = await asyncio.shield(store.changes_after(seq))
        for change in changes:
            yield change_item(change, current.get(change.key))
            seq = change.seq
        if not changes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), WATCH_POLL_SECONDS)
