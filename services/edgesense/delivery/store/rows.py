"""The outbox's rows, statuses and per-delivery statements, shared by both databases.

This module is the one home of the row types and statuses: the rest of
delivery imports them from here (`outbox` is the interface that takes and
returns them).

The rows are NamedTuples: one is made per delivery at each step, and a
frozen dataclass's __init__ cost several times more (measured in profiles).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import NamedTuple

PENDING, SUCCEEDED, FAILED, HELD = "pending", "succeeded", "failed", "held"
STATUSES = (PENDING, SUCCEEDED, FAILED, HELD)
WAITING = (PENDING, HELD)  # not ended: what claims, holds and the queue's counts read


class StoredEvent(NamedTuple):
    event_id: str
    project_id: str
    payload: bytes  # serialized edgesense.v1.Event


class NewDelivery(NamedTuple):
    """A delivery to store, its fields the deliveries table's columns in
    INSERT_DELIVERY's order: the rows go to the driver as they are (on
    PostgreSQL, a column of them as each array of _ACCEPT)."""

    delivery_id: str
    event_id: str
    webhook_id: str
    project_id: str
    event_name: str
    device_id: str
    status: str
    status_reason: str | None
    next_attempt_at: float  # later than now while its webhook's sends are paused
    lease_owner: str | None  # set when handed straight to a dispatcher
    lease_expires_at: float | None
    created_at: float
    updated_at: float
    # The event's device when the webhook is `ordered` (see ORDERED_HEAD),
    # None otherwise: the default, so an unordered row is built as before.
    order_key: str | None = None


class Claimed(NamedTuple):
    """A leased delivery and its event, as a claim returns it (fields in its
    RETURNING order)."""

    seq: int
    delivery_id: str
    webhook_id: str
    event_id: str
    attempt_count: int
    cycle_attempts: int
    event: bytes
    created_at: float = 0.0
    project_id: str = ""  # whose share of the send slots it uses
    # It has an order key (stored while its webhook was ordered): its end
    # releases its device's next delivery, whatever the webhook's setting now.
    keyed: bool = False

    @classmethod
    def fresh(
        cls,
        delivery_id: str,
        webhook_id: str,
        event_id: str,
        event: bytes,
        created_at: float,
        project_id: str,
    ) -> Claimed:
        """A delivery being stored already leased to this process (handed
        straight to its dispatcher): no attempts yet, and no `seq`, which the
        database assigns and nothing after the claim reads."""
        return cls(0, delivery_id, webhook_id, event_id, 0, 0, event, created_at, project_id)


class Outcome(NamedTuple):
    """One attempt's log entry and the delivery's state after it."""

    delivery_id: str
    attempt: int
    started_at: float
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None
    status: str
    status_reason: str | None
    cycle_attempts: int
    next_attempt_at: float
    keyed: bool = False  # the claimed delivery's (Claimed.keyed)


# The statements run once per delivery (storing it, writing its outcome and
# logging its attempt) go to the driver directly as executemany: SQLAlchemy's
# per-row parameter processing cost more than the database work here
# (measured on SQLite: recording outcomes went from 6,200 to 11,000 a second,
# storing deliveries from 18,500 to 23,500). PostgreSQL stores a whole batch
# in one statement instead (outbox_postgres._ACCEPT).
# NewDelivery's fields are the deliveries table's columns, in one order for
# every statement that stores them (this one; on PostgreSQL, _ACCEPT).
DELIVERY_COLUMNS = ", ".join(NewDelivery._fields)
INSERT_DELIVERY = (
    f"INSERT INTO deliveries ({DELIVERY_COLUMNS}, attempt_count, cycle_attempts)"  # noqa: S608
    f" VALUES ({', '.join('?' * len(NewDelivery._fields))}, 0, 0)"
)
UPDATE_OUTCOME = (
    "UPDATE deliveries SET status = ?, status_reason = ?, attempt_count = attempt_count + ?,"
    " cycle_attempts = ?, next_attempt_at = ?, lease_owner = NULL, lease_expires_at = NULL,"
    " updated_at = ? WHERE delivery_id = ? AND lease_owner = ?"
)
# An attempt's log entry is written exactly when its outcome is: only if
# UPDATE_OUTCOME matches (the delivery is still leased by the one recording
# it), in the same transaction. An outcome of a lease that expired and was
# taken by another process writes neither; one recorded twice (a batch sent
# again after a commit whose answer was lost) finds the lease cleared by the
# first. SQLite, one writer, logs the attempt first, while the lease it checks
# is still there (UPDATE_OUTCOME clears it): LOG_ATTEMPT_IF_LEASED, then
# UPDATE_OUTCOME; the check is one more lookup of the delivery per attempt
# (measured: 0.2-0.4 ms more for 100 outcomes, before a commit of several).
# PostgreSQL, where another process's claim could take an expired lease
# between two statements, does both in one (RECORD_ATTEMPT: the update, and
# the log entry for the row it returns), measured as fast as the unchecked
# insert and update it replaced; a checked insert that locked the row before
# the update took 10-15% longer.
LOG_ATTEMPT_IF_LEASED = (
    "INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, status_code, error,"
    " response_body) SELECT delivery_id, ?, ?, ?, ?, ?, ? FROM deliveries"
    " WHERE delivery_id = ? AND lease_owner = ?"
)
RECORD_ATTEMPT = (
    "WITH recorded AS (UPDATE deliveries SET status = ?, status_reason = ?,"
    " attempt_count = attempt_count + ?, cycle_attempts = ?, next_attempt_at = ?,"
    " lease_owner = NULL, lease_expires_at = NULL, updated_at = ?"
    " WHERE delivery_id = ? AND lease_owner = ? RETURNING delivery_id)"
    " INSERT INTO attempts (delivery_id, attempt, started_at, duration_ms, status_code, error,"
    " response_body) SELECT delivery_id, ?, ?, ?, ?, ?, ? FROM recorded"
)


def delivery_rows(
    planned: Sequence[NewDelivery], new_event_ids: Collection[str]
) -> list[NewDelivery]:
    """INSERT_DELIVERY parameters: the planned deliveries of new events."""
    return [d for d in planned if d.event_id in new_event_ids]


def keyed_ids(rows: Sequence[NewDelivery]) -> list[str]:
    """PARK_NEW's ids: the deliveries of `rows` (as stored) with an order key."""
    return [d.delivery_id for d in rows if d.order_key]


def outcome_rows(owner: str, outcomes: Sequence[Outcome], now: float) -> list[tuple[object, ...]]:
    """UPDATE_OUTCOME parameters: each delivery's state after its outcome."""
    return [
        (
            o.status,
            o.status_reason,
            1 if o.attempt > 0 else 0,
            o.cycle_attempts,
            o.next_attempt_at,
            now,
            o.delivery_id,
            owner,
        )
        for o in outcomes
    ]


def log_attempt_rows(owner: str, outcomes: Sequence[Outcome]) -> list[tuple[object, ...]]:
    """LOG_ATTEMPT_IF_LEASED parameters: the outcomes that were attempts."""
    return [
        (
            o.attempt,
            o.started_at,
            o.duration_ms,
            o.status_code,
            o.error,
            o.response_body,
            o.delivery_id,
            owner,
        )
        for o in outcomes
        if o.attempt > 0
    ]


def record_attempt_rows(
    owner: str, outcomes: Sequence[Outcome], now: float
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """RECORD_ATTEMPT parameters for the outcomes that were attempts, and
    UPDATE_OUTCOME parameters for the others."""
    attempts: list[tuple[object, ...]] = []
    others: list[tuple[object, ...]] = []
    for o in outcomes:
        if o.attempt > 0:
            attempts.append(
                (
                    o.status,
                    o.status_reason,
                    1,
                    o.cycle_attempts,
                    o.next_attempt_at,
                    now,
                    o.delivery_id,
                    owner,
                    o.attempt,
                    o.started_at,
                    o.duration_ms,
                    o.status_code,
                    o.error,
                    o.response_body,
                )
            )
        else:
            others.append(
                (
                    o.status,
                    o.status_reason,
                    0,
                    o.cycle_attempts,
                    o.next_attempt_at,
                    now,
                    o.delivery_id,
                    owner,
                )
            )
    return attempts, others


# Ordered webhooks (`ordered`): a delivery with an order key (its event's
# device, set at accept while its webhook is ordered) is claimable only while
# no earlier delivery (lower seq) of the same webhook and key is pending or
# held: every claim statement, on both databases, adds this term to its due
# rows (`due`, the claimed table's alias in them). A delivery stays pending
# while it is leased, sent or waiting for a retry, so at most one per
# (webhook, device) is ever leased, and the next becomes claimable only once
# it has ended (succeeded, or failed for good); held ones keep their place
# when released. Being a database rule, it holds across several delivery
# processes on PostgreSQL. Rows without a key (unordered webhooks, and rows
# stored before the webhook became ordered) pass at its first term, without
# the lookup. The lookup reads ix_deliveries_order, which holds only keyed
# rows that are waiting: ORDER_WAITING is its condition, and its status terms
# are literals (as the index's are) so that both databases can use it.
#
# WAITING_SQL: a waiting delivery (pending or held), as the partial indexes'
# condition: literals, so that PostgreSQL may use those indexes in any plan
# (see online_indexes.py).
WAITING_SQL = "status IN (" + ", ".join(f"'{status}'" for status in WAITING) + ")"
ORDER_WAITING = f"order_key IS NOT NULL AND {WAITING_SQL}"

# Parked: a keyed delivery waiting behind an earlier one of its device has
# this as its next_attempt_at, past every due range, so claims never read it
# (without parking, every claim of the process, whatever webhook it is for,
# would read past a device's whole waiting backlog, one lookup each). It is
# parked when stored behind a waiting one (PARK_NEW), and again after
# release or recover made a device's backlog due at once (PARK_WEBHOOKS);
# the end of a keyed delivery (succeeded or failed, in the same transaction)
# unparks its device's next one (UNPARK_NEXT). On PostgreSQL a store and an
# end committing at the same moment can each miss the other's row, so the
# maintenance loop unparks any parked delivery left with nothing before it
# (UNPARK_ORPHANS, every round). ORDERED_HEAD stays the rule; parking
# only keeps claims from reading what the rule would refuse. `{ids}` is the
# engine's form of "is one of this list parameter".
PARKED_AT = 1e15
# The same "an earlier delivery of its device is waiting" test in each (as
# ORDERED_HEAD's, for the row being updated).
PARK_NEW = (
    "UPDATE deliveries SET next_attempt_at = ? WHERE delivery_id {ids}"
    " AND order_key IS NOT NULL AND"
    " EXISTS (SELECT 1 FROM deliveries AS earlier WHERE earlier.webhook_id = deliveries.webhook_id"
    " AND earlier.order_key = deliveries.order_key AND earlier.status IN ('pending', 'held')"
    " AND earlier.seq < deliveries.seq)"
)
# After a release or recovery, a webhook's keyed deliveries behind their
# device's first waiting one; `seq > (first of its device)` rather than an
# EXISTS, which PostgreSQL would turn into a join of every waiting row of a
# device with every other (12.7 s for 200 devices x 1,000 rows, measured);
# `{order_index}` as in UNPARK_ORPHANS (SQLite would read every due row).
PARK_WEBHOOKS = (
    "UPDATE deliveries {order_index} SET next_attempt_at = ? WHERE webhook_id {ids}"
    " AND order_key IS NOT NULL AND status IN ('pending', 'held') AND status = 'pending'"
    " AND next_attempt_at < ? AND (lease_expires_at IS NULL OR lease_expires_at < ?)"
    " AND seq > (SELECT MIN(w.seq) FROM deliveries AS w WHERE w.webhook_id = deliveries.webhook_id"
    " AND w.order_key = deliveries.order_key AND w.status IN ('pending', 'held'))"
)
UNPARK_NEXT = (
    "UPDATE deliveries SET next_attempt_at = ? WHERE next_attempt_at = ? AND seq IN ("
    " SELECT (SELECT MIN(w.seq) FROM deliveries AS w WHERE w.webhook_id = d.webhook_id"
    " AND w.order_key = d.order_key AND w.status IN ('pending', 'held'))"
    " FROM deliveries AS d WHERE d.delivery_id {ids} AND d.order_key IS NOT NULL)"
)
# Only a device's first waiting delivery can have nothing before it: one
# grouped read of ix_deliveries_order (61 ms for 200,000 waiting rows on
# PostgreSQL, where a NOT EXISTS form took 7.7 s). `{order_index}`: SQLite's
# INDEXED BY, without which it reads every pending and held row through
# ix_deliveries_due (every 2 s, on its one writer: fan-out lost 10 %).
UNPARK_ORPHANS = (
    "UPDATE deliveries SET next_attempt_at = ? WHERE next_attempt_at = ? AND status = 'pending'"
    " AND seq IN (SELECT MIN(seq) FROM deliveries {order_index} WHERE order_key IS NOT NULL"
    " AND status IN ('pending', 'held') GROUP BY webhook_id, order_key)"
)
ORDERED_HEAD = (
    "(due.order_key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries AS earlier"
    " WHERE earlier.webhook_id = due.webhook_id AND earlier.order_key = due.order_key"
    " AND earlier.status IN ('pending', 'held') AND earlier.seq < due.seq))"
)


# Test sends (POST /api/webhooks/{id}/test). A test delivery's id starts with
# TEST_DELIVERY_PREFIX, which no other id can: after `dlv_` an ordinary id
# has only [a-z2-7] (common/ids.py), never a second `_`. The id is on every
# row the steps pass (Claimed, Outcome), so the policy and the outcome writer
# tell a test delivery apart with no column and no claim cost.
TEST_DELIVERY_PREFIX = "dlv_test_"


def is_test_delivery(delivery_id: str) -> bool:
    """Is this the delivery of a test send?"""
    return delivery_id.startswith(TEST_DELIVERY_PREFIX)


# Operational events (webhook.disabled, webhook.enabled): their deliveries'
# ids start with OPERATIONAL_DELIVERY_PREFIX (the acceptor makes them so), by
# the same rule as test sends' (no ordinary id has a second `_`). A delivery
# of one that fails for good is reported as such, and the registry then
# publishes no webhook.disabled (operational events never cause one another).
OPERATIONAL_DELIVERY_PREFIX = "dlv_op_"


def is_operational_delivery(delivery_id: str) -> bool:
    """Is this the delivery of an operational event (not a test send's)?"""
    return delivery_id.startswith(OPERATIONAL_DELIVERY_PREFIX)


# Recover (POST /api/webhooks/{id}/recover): at most RECOVER_LIMIT deliveries
# per call, RECOVER_CHUNK per transaction, so no transaction holds its locks
# (on SQLite: the one write lock) for long.
RECOVER_LIMIT = 10_000
RECOVER_CHUNK = 500


class RecoverWindow(NamedTuple):
    """What a recover asks (see Outbox.recover): the webhook's deliveries that
    failed in [since, until) become `status` (with `reason`) and due at `now`."""

    project_id: str
    webhook_id: str
    since: float
    until: float
    status: str
    reason: str | None
    now: float


class Recovered(NamedTuple):
    """What a recover did: how many failed deliveries are due again, and the
    failure time of the oldest one left in the window (None: none left)."""

    recovered: int
    next_since: float | None


class StatsBucket(NamedTuple):
    """The attempts that started in one bucket of a stats window (see DeliveryStats)."""

    bucket: int  # 0 for the bucket that starts at the window's start
    succeeded: int
    retried: int
    failed: int
    # The bucket's attempt durations (ms) at the bucket percentiles asked
    # for, by nearest rank (every bucket listed has attempts).
    durations: dict[int, int]


class DeliveryStats(NamedTuple):
    """A webhook's deliveries created in a window, and those deliveries'
    attempts that started in it.

    An attempt succeeded when it got a 2xx answer (and no error); a failed
    one is `failed` when it was its delivery's last attempt and the delivery
    is failed, `retried` otherwise (another attempt followed or will).
    `durations` are the attempt durations (ms) at the percentiles asked
    for, by nearest rank (empty without attempts); each bucket's, at the
    bucket percentiles asked for.
    """

    counts: dict[str, int]  # by status, every status present
    buckets: list[StatsBucket]  # non-empty buckets only, oldest first
    durations: dict[int, int]  # percentile -> duration_ms
    attempts: int
    attempts_succeeded: int


def nearest_rank(percentile: int, count: int) -> int:
    """The rank (1 = smallest) of the `percentile`th of `count` values, by
    nearest rank: the smallest value with at least that share at or below it
    (in integers: 95 * 20 / 100 is 19 exactly, as a float it is not)."""
    return min(count, max(1, -(-percentile * count // 100)))


def ranked_durations(
    histogram: Sequence[tuple[int, int]], total: int, percentiles: Sequence[int]
) -> dict[int, int]:
    """The durations at `percentiles` by nearest rank, from a histogram of
    (duration, how many) sorted by duration and holding `total` values
    (empty without values)."""
    if not total:
        return {}
    ranks = sorted((nearest_rank(p, total), p) for p in percentiles)
    found: dict[int, int] = {}
    seen = 0
    pending = iter(ranks)
    rank, percentile = next(pending)
    for duration, count in histogram:
        seen += count
        while seen >= rank:
            found[percentile] = duration
            following = next(pending, None)
            if following is None:
                return found
            rank, percentile = following
    raise ValueError(f"the histogram holds {seen} values, not {total}")


# Retention (EDGESENSE_RETENTION_DAYS): ended deliveries, their attempts and
# the events no delivery refers to any more are deleted at most
# RETENTION_BATCH deliveries (and RETENTION_BATCH events) per transaction, so
# no transaction holds its locks (on SQLite: the one write lock) for long.
RETENTION_BATCH = 1_000
ENDED = (SUCCEEDED, FAILED)


class Deleted(NamedTuple):
    """What one retention batch deleted."""

    deliveries: int
    attempts: int
    events: int
