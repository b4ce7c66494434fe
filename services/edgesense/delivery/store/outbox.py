"""The durable outbox: every database read and write of the delivery service.

`Outbox` is the one interface the rest of delivery uses; `open_outbox`
chooses its implementation from the database URL, in this one place. The
rows and statuses it takes and returns live in `rows`, and are imported from
there:

- `SqliteOutbox` (`outbox_sqlite`), the embedded default: one process owns
  the file, and every write is a plain `sqlite3` function run whole on one
  writer thread. SQLite has one writer at a time, and a transaction through
  SQLAlchemy and aiosqlite is a round trip to the event loop per statement,
  with the write lock held across them all; one hop to the thread was
  measured much faster.
- `PostgresOutbox` (`outbox_postgres`), where several delivery processes
  share the outbox and claim with `FOR UPDATE SKIP LOCKED`, so none waits on
  rows another is taking; its hot path (accept, claims, outcomes) runs on a
  plain asyncpg pool in one statement each, the rest on SQLAlchemy Core.

Both read (counts, listings) through SQLAlchemy (`reads`). The engine, and
on SQLite the writer thread, are made by `open_outbox` and owned by the
outbox it returns: nothing is looked up through module-level state.

Throughput comes from doing each step for a batch in one statement: a publish
batch is one transaction (events, then their deliveries); a claim is one
UPDATE … RETURNING over due rows; outcomes are written back in batches with
executemany. A claim is a lease: rows leased by a process that died become
due again when the lease expires, and an outcome (with its attempt's log
entry) is only written by the lease holder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from edgesense.delivery.rules.alerts import ActiveAlert, AlertPlan, Ending, RuleWork, Targets
from edgesense.delivery.store.devices import DeviceStore
from edgesense.delivery.store.online_indexes import ensure_online_indexes
from edgesense.delivery.store.outbox_postgres import PostgresOutbox
from edgesense.delivery.store.outbox_sqlite import SqliteOutbox
from edgesense.delivery.store.rows import (
    RECOVER_LIMIT,
    RETENTION_BATCH,
    Claimed,
    Deleted,
    DeliveryStats,
    NewDelivery,
    Outcome,
    Recovered,
    StoredEvent,
)
from edgesense.storage.engine import create_engine, driver_pool
from edgesense.storage.migrate import migrate
from edgesense.storage.sqlite_writer import SqliteWriter

__all__ = ["Outbox", "open_outbox"]

# Connections of a PostgreSQL outbox's asyncpg pool (accept, record, claims),
# beside the engine's for everything else.
POSTGRES_DRIVER_POOL = 10


class Outbox(Protocol):
    """The delivery service's storage. Every method is one transaction and
    raises `Unavailable` if the database fails.

    What a caller may rely on, on both databases: a method's writes take
    effect all together or not at all, never in part. It may not rely on a
    call that raised, or was cancelled, having changed nothing:

    - On SQLite every write runs whole on the writer thread, which does not
      see the caller's cancellation: a call cancelled after its transaction
      started still commits (its result is dropped); one cancelled while it
      waits in the writer's queue never runs.
    - On PostgreSQL a call cancelled before it commits rolls back. One whose
      commit was under way when the cancellation (or a lost connection) came
      may have committed or not, and so may one that raised `Unavailable`
      then. The hot path's single statements (accept without rules or
      ordered webhooks, claims, a batch of outcomes) are their own
      transactions: their commit is under way from the moment they are sent.

    So whoever cancels a write or sees it fail treats it as possibly done:
    the writes are safe to repeat (an event id already stored creates
    nothing; an outcome is written, and its attempt logged, only by the
    lease holder, once) or leave a lease that expires.
    """

    # The devices view's table (store/devices.py).
    devices: DeviceStore

    async def accept(
        self,
        stored: Sequence[StoredEvent],
        planned: Sequence[NewDelivery],
        now: float,
        rules: RuleWork | None = None,
    ) -> tuple[set[str], int]:
        """Store events and their deliveries in one transaction.

        Returns the ids of the events that were new, and how many deliveries
        were created; an event id already stored creates nothing. With
        `rules`, the same transaction judges the new readings' observations
        against their (rule, device) states (locked on PostgreSQL), writes
        the states, alerts, device.alert events and their deliveries that
        follow (counted with the others), and sets `rules.plan` to them.
        """
        ...

    async def end_alerts(
        self, reasons: Mapping[str, Ending], targets: Targets, now: float
    ) -> AlertPlan:
        """Resolve the alerts in `reasons` (alert id -> why: its rule was
        disabled, deleted or changed, and the version that says so) that are
        still active, each with a device.alert event, and reset their (rule,
        device) states (the device starts afresh, at that version at least);
        one transaction. An alert whose (project,
        device) is missing from `targets` stays active (a later call, with
        its targets, ends it). Returns what it wrote."""
        ...

    async def forget_states(self, rule_ids: Sequence[str]) -> int:
        """Delete every (rule, device) state of these (deleted) rules; how many."""
        ...

    async def alert_page(
        self,
        project_id: str,
        state: str,
        rule_id: str,
        device_id: str,
        limit: int,
        before_seq: int | None,
    ) -> list[Any]:
        """Alerts of the project, newest first, filtered (an empty filter: any)."""
        ...

    async def alerting(self) -> set[str]:
        """The rules with active alerts."""
        ...

    async def judged_rules(self) -> set[str]:
        """The rules with (rule, device) states."""
        ...

    async def active_alerts(
        self, rule_ids: Sequence[str], after_seq: int, limit: int
    ) -> list[ActiveAlert]:
        """Up to `limit` active alerts of these rules after `after_seq`, by seq."""
        ...

    async def delete_resolved_alerts(self, resolved_before: float, limit: int) -> int:
        """Retention: up to `limit` alerts resolved before `resolved_before`,
        the first resolved first (ix_alerts_resolved); how many."""
        ...

    async def claim(
        self, owner: str, now: float, lease_seconds: float, limit: int, exclude: Iterable[str] = ()
    ) -> list[Claimed]:
        """Lease up to `limit` due deliveries, oldest due first, none of `exclude`'s webhooks."""
        ...

    async def claim_for(
        self, owner: str, now: float, lease_seconds: float, limits: Mapping[str, int]
    ) -> list[Claimed]:
        """Lease, for each webhook, up to its limit of its due deliveries, oldest due first.

        Reads only those webhooks' rows (ix_deliveries_webhook_due, on
        PostgreSQL ix_deliveries_webhook_waiting): a lane that drained is
        refilled without passing over other webhooks' backlogs.
        """
        ...

    async def record(
        self, owner: str, outcomes: Sequence[Outcome], now: float, released: Sequence[str] = ()
    ) -> None:
        """Write each outcome's new state and, if it was an attempt, its log
        entry: both or neither, and only for deliveries still leased by
        `owner` (writing one clears the lease). So an outcome is written once
        even if recorded twice, and not at all by a process whose lease
        expired and was taken by another. `released`: those of the outcomes
        that ended a delivery of an ordered webhook; in the same transaction,
        each one's device's next delivery is unparked (rows.PARKED_AT)."""
        ...

    async def unpark_orphans(self, now: float) -> int:
        """Parked deliveries with nothing before them any more are due at `now`
        (the maintenance loop's safety net, see rows.PARKED_AT); how many."""
        ...

    async def defer(self, webhook_id: str, until: float, reason: str, now: float) -> int:
        """A webhook's pending deliveries that are due before `until` and not
        leased become due at `until` (its sends are paused until then)."""
        ...

    async def release_leases(self, owner: str, delivery_ids: Sequence[str]) -> None:
        """Hand claimed but unsent deliveries back (graceful shutdown)."""
        ...

    async def hold(self, webhook_ids: Sequence[str], reason: str, now: float) -> int:
        """Pending deliveries of disabled webhooks become held."""
        ...

    async def release_held(self, webhook_ids: Sequence[str], now: float) -> int:
        """Held deliveries of re-enabled webhooks are due again, with fresh
        attempts (an ordered webhook's: each device's first, the others parked)."""
        ...

    async def fail_all(self, webhook_ids: Sequence[str], reason: str, now: float) -> int:
        """Pending and held deliveries of deleted webhooks are failed."""
        ...

    async def expire_held(self, held_before: float, reason: str, now: float) -> int:
        """Deliveries held since before `held_before` are failed. A held row's
        `updated_at` is when it was put on hold (by hold, accept, an outcome,
        or a redeliver or recover while its webhook is disabled); nothing else
        changes it while the row is held."""
        ...

    async def delete_ended(self, ended_before: float, limit: int = RETENTION_BATCH) -> Deleted:
        """Retention, one batch: up to `limit` deliveries that ended (succeeded
        or failed) before `ended_before`, the first to end first, with their
        attempts; then up to `limit` events created before `ended_before` that
        no delivery refers to. Pending and held deliveries are never deleted.

        Reads only those rows (ix_deliveries_ended, ix_events_created,
        ix_deliveries_event). On PostgreSQL rows another transaction is
        changing are skipped, not waited for.
        """
        ...

    async def requeue(
        self, project_id: str, delivery_id: str, status: str, reason: str | None, now: float
    ) -> bool:
        """Redeliver: due now with fresh attempts (or held); False if not found."""
        ...

    async def counts(self) -> dict[str, int]:
        """Deliveries by status, every status present (reads every delivery kept)."""
        ...

    async def waiting_counts(self) -> dict[str, int]:
        """Deliveries pending and held (reads only those)."""
        ...

    async def page(
        self, project_id: str, webhook_id: str, status: str, limit: int, before_seq: int | None
    ) -> tuple[list[Any], dict[str, list[Any]]]:
        """Deliveries of a webhook, newest first, with their attempt logs."""
        ...

    async def one(self, project_id: str, delivery_id: str) -> tuple[Any, list[Any]] | None:
        """A delivery of the project and its attempt log; None if there is none."""
        ...

    async def build_indexes(self) -> bool:
        """Build the indexes PostgreSQL builds without blocking writes
        (online_indexes.py) that are missing. True once they are all there
        (at once on SQLite, whose migrations made them); False when another
        process is building them."""
        ...

    async def close(self) -> None:
        """Close what the outbox owns (its engine; on SQLite its writer thread,
        on PostgreSQL its asyncpg pool)."""
        ...

    async def recover(
        self,
        project_id: str,
        webhook_id: str,
        since: float,
        until: float,
        status: str,
        reason: str | None,
        now: float,
        limit: int = RECOVER_LIMIT,
    ) -> Recovered:
        """The webhook's deliveries that are failed and failed (`updated_at`)
        in [since, until), the `limit` that failed first, are due now with
        fresh attempts, as `status` (pending, or held with `reason`).

        In transactions of RECOVER_CHUNK deliveries; each changes only rows
        still failed, so two calls at once never count a delivery twice.
        Reads the webhook's failed rows only (ix_deliveries_webhook_failed).
        """
        ...

    async def stats(
        self,
        project_id: str,
        webhook_ids: Sequence[str],
        since: float,
        until: float,
        bucket_seconds: float,
        percentiles: Sequence[int],
        bucket_percentiles: Sequence[int] = (),
    ) -> DeliveryStats:
        """The deliveries of the project's `webhook_ids` (one webhook, or all
        of a project's) created in [since, until) and their attempts started
        in it, counted in the database (see DeliveryStats); attempts bucketed
        by `bucket_seconds` from `since`, the window's durations ranked at
        `percentiles` and each bucket's at `bucket_percentiles`. Reads those webhooks' rows of the
        window only (ix_deliveries_webhook_created).
        """
        ...

    async def held_count(self, project_id: str, webhook_ids: Sequence[str]) -> int:
        """Deliveries of the project's `webhook_ids` held now
        (ix_deliveries_webhook_due, on PostgreSQL ix_deliveries_webhook_waiting)."""
        ...

    async def active_alert_count(self, project_id: str) -> int:
        """The project's active alerts (ix_alerts_active: only active ones)."""
        ...

    async def event(self, project_id: str, event_id: str) -> bytes | None:
        """The project's stored event (a serialized edgesense.v1.Event); None if there is none."""
        ...


async def open_outbox(database_url: str, *, build_indexes: bool = True) -> Outbox:
    """The outbox at `database_url`, its schema migrated to the newest version,
    and (unless `build_indexes` is False: the delivery service builds them
    in the background while it serves) PostgreSQL's online indexes built."""
    engine = create_engine(database_url)
    try:
        await migrate(engine, "delivery")
        if build_indexes:
            await ensure_online_indexes(engine)  # PostgreSQL's, built without blocking writes
        if engine.dialect.name == "sqlite":
            return SqliteOutbox(engine, SqliteWriter(engine))
        return PostgresOutbox(engine, await driver_pool(engine, POSTGRES_DRIVER_POOL))
    except BaseException:
        await engine.dispose()
        raise
