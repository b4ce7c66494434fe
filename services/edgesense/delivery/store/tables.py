"""The delivery service's tables (SQLAlchemy Core); migrations/versions creates them.

Times are UNIX seconds (float): compared on every claim, so they stay plain
numbers on both SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from edgesense.delivery.store.rows import ORDER_WAITING

metadata = MetaData()
SEQ = BigInteger().with_variant(Integer, "sqlite")

# One row per accepted event: the serialized edgesense.v1.Event.
events = Table(
    "events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("project_id", String(128), nullable=False),
    Column("event", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    # Retention reads old events by creation time (online_indexes.py on PostgreSQL).
    Index("ix_events_created", "created_at"),
)

# One row per (event, matching webhook): the outbox.
deliveries = Table(
    "deliveries",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("delivery_id", String(40), nullable=False, unique=True),
    Column("event_id", String(64), nullable=False),
    Column("webhook_id", String(40), nullable=False),
    Column("project_id", String(128), nullable=False),
    Column("event_name", String(32), nullable=False),
    Column("device_id", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("status_reason", Text),
    Column("attempt_count", Integer, nullable=False),  # all attempts ever made
    Column("cycle_attempts", Integer, nullable=False),  # attempts since (re)queued
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", Float),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # The event's device while the webhook is ordered, else NULL (rows.ORDERED_HEAD).
    Column("order_key", String(128)),
    # Claims read the due rows through these on SQLite. On PostgreSQL they are
    # replaced by the same columns holding only waiting rows (pending or
    # held), ix_deliveries_waiting and ix_deliveries_webhook_waiting, built
    # concurrently (online_indexes.py explains why).
    Index("ix_deliveries_due", "status", "next_attempt_at", "seq", "webhook_id"),
    Index("ix_deliveries_webhook", "webhook_id", "seq"),
    Index("ix_deliveries_webhook_due", "webhook_id", "status", "next_attempt_at", "seq"),
    # Stats read a webhook's deliveries by creation time; recover its failed
    # ones by failure time (only failed rows are in that index). On
    # PostgreSQL both are built concurrently (online_indexes.py).
    Index("ix_deliveries_webhook_created", "webhook_id", "created_at"),
    Index(
        "ix_deliveries_webhook_failed",
        "webhook_id",
        "updated_at",
        "seq",
        sqlite_where=text("status = 'failed'"),
        postgresql_where=text("status = 'failed'"),
    ),
    # Retention reads ended deliveries by end time (only ended rows are in
    # that index), and whether any delivery still refers to an event. On
    # PostgreSQL both are built concurrently (online_indexes.py).
    Index(
        "ix_deliveries_ended",
        "updated_at",
        sqlite_where=text("status IN ('succeeded', 'failed')"),
        postgresql_where=text("status IN ('succeeded', 'failed')"),
    ),
    Index("ix_deliveries_event", "event_id"),
    # Claims look up whether a keyed delivery has an earlier one waiting
    # (rows.ORDERED_HEAD); only waiting keyed rows are in it, so unordered
    # webhooks never write to it. Built concurrently on PostgreSQL.
    Index(
        "ix_deliveries_order",
        "webhook_id",
        "order_key",
        "seq",
        sqlite_where=text(ORDER_WAITING),
        postgresql_where=text(ORDER_WAITING),
    ),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", SEQ, primary_key=True, autoincrement=True),
    Column("delivery_id", String(40), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("response_body", Text),
)

# One row per (rule, device) pair a reading was judged for: its
# common.thresholds.State. Changed only in the transaction that stores the
# reading (rules/alerts.py plans the change).
rule_states = Table(
    "rule_states",
    metadata,
    Column("rule_id", String(40), primary_key=True),
    Column("device_id", String(128), primary_key=True),
    Column("project_id", String(128), nullable=False),
    Column("phase", String(16), nullable=False),
    Column("streak", Integer, nullable=False),
    Column("since", Float),
    Column("last_at", Float),
    Column("alert_id", String(40)),
    Column("version", BigInteger, nullable=False),
)

# One row per breach of a rule by a device, from `triggered` to `resolved`;
# the rule's condition as it was when it triggered.
alerts = Table(
    "alerts",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("alert_id", String(40), nullable=False, unique=True),
    Column("project_id", String(128), nullable=False),
    Column("rule_id", String(40), nullable=False),
    Column("rule_name", Text, nullable=False),
    Column("rule_version", Integer, nullable=False),  # the rule's version it triggered under
    Column("device_id", String(128), nullable=False),
    Column("gateway_id", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("field", String(256), nullable=False),
    Column("operator", String(16), nullable=False),
    Column("threshold", Float, nullable=False),
    Column("threshold_high", Float),
    Column("clear_threshold", Float),
    Column("value", Float, nullable=False),
    Column("since", Float, nullable=False),
    Column("triggered_at", Float, nullable=False),
    Column("triggered_event_id", String(64), nullable=False),
    Column("resolved_at", Float),
    Column("resolved_value", Float),
    Column("resolved_reason", String(32)),
    Column("resolved_event_id", String(64)),
    Column("updated_at", Float, nullable=False),
    # Listings, newest first per project; a rule's alerts; retention of
    # resolved ones.
    Index("ix_alerts_project", "project_id", "seq"),
    Index("ix_alerts_rule", "rule_id", "state"),
    Index("ix_alerts_resolved", "resolved_at"),
    # The rules with active alerts, and those alerts (the endings' sweep).
    Index(
        "ix_alerts_active",
        "rule_id",
        "seq",
        sqlite_where=text("state = 'active'"),
        postgresql_where=text("state = 'active'"),
    ),
)

# One row per (project, device) seen in a stored event: the devices view
# (devices/view.py DeviceState), written by the devices flusher every 2
# seconds, never by the accept transaction. `recent` is a JSON array of
# [timestamp, event id, event name], newest first.
devices = Table(
    "devices",
    metadata,
    Column("project_id", String(128), primary_key=True),
    Column("device_id", String(128), primary_key=True),
    Column("gateway_id", String(128), nullable=False),
    Column("last_event", String(32), nullable=False),
    Column("last_event_id", String(64), nullable=False),
    Column("last_event_at", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("status_at", Float),
    Column("status_changed_at", Float),
    Column("first_seen_at", Float, nullable=False),
    Column("last_seen_at", Float, nullable=False),
    Column("readings", LargeBinary),
    Column("readings_omitted", Boolean, nullable=False),
    Column("readings_at", Float),
    Column("readings_event_id", String(64)),
    Column("recent", Text, nullable=False),
    # Listings by status and by gateway_id, in device order; the totals by
    # status; retention by last seen.
    Index("ix_devices_status", "project_id", "status", "device_id"),
    Index("ix_devices_gateway_id", "project_id", "gateway_id", "device_id"),
    Index("ix_devices_seen", "last_seen_at"),
)
