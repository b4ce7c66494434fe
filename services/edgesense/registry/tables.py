"""The registry's tables (SQLAlchemy Core); migrations/versions creates them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
)

metadata = MetaData()

webhooks = Table(
    "webhooks",
    metadata,
    Column("webhook_id", String(40), primary_key=True),
    Column("project_id", String(128), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("events", Text, nullable=False),  # JSON list
    Column("description", Text, nullable=False),
    Column("device_ids", Text, nullable=False),  # JSON list
    Column("secret_ciphertext", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("disabled_at", DateTime(timezone=True)),
    Column("disabled_reason", Text),
    # Added by 0002. The custom headers (a JSON object) and the live previous
    # secrets (a JSON list), each encrypted like the secret; NULL when none.
    Column("headers_ciphertext", Text),
    Column("previous_secrets_ciphertext", Text),
    # When the last previous secret of the latest rotation ends.
    Column("secret_rotation_ends_at", DateTime(timezone=True)),
    # Set by every write (0002 set it to created_at for the rows it found).
    Column("updated_at", DateTime(timezone=True)),
    # Added by 0004 (see RegisterWebhookRequest): 0 is no limit.
    Column("rate_limit_per_second", Integer, nullable=False, server_default="0"),
    Column("ordered", Boolean, nullable=False, server_default=false()),
)

# Every change, in commit order, so any number of watchers (in any replica)
# can follow them after a snapshot.
webhook_changes = Table(
    "webhook_changes",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("webhook_id", String(40), nullable=False),
    Column("project_id", String(128), nullable=False),
    Column("kind", String(8), nullable=False),  # "upsert" or "delete"
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Operational events (webhook.disabled, webhook.enabled) written in the same
# transaction as the status change they report, and deleted once delivery has
# confirmed them (registry/forwarder.py): a row here is one not yet published.
operational_events = Table(
    "operational_events",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    # The event's id, made once when the row is written: every publish of the
    # row (again after a crash, or by another replica) has the same id, and
    # delivery stores an event id once.
    Column("event_id", String(40), nullable=False, unique=True),
    Column("project_id", String(128), nullable=False),
    Column("event", LargeBinary, nullable=False),  # serialized edgesense.v1.Event
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Alert rules (added by 0005): what each rule of a project says, and its
# version, one more at each change of the condition (rule_validation.py).
rules = Table(
    "rules",
    metadata,
    Column("rule_id", String(40), primary_key=True),
    Column("project_id", String(128), nullable=False, index=True),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("field", String(256), nullable=False),
    Column("operator", String(8), nullable=False),
    Column("threshold", Double, nullable=False),
    Column("threshold_high", Double),  # "outside" and "inside" only
    # "gt"/"gte"/"lt"/"lte" only; NULL: the threshold (it follows the threshold's changes).
    Column("clear_threshold", Double),
    Column("count", Integer, nullable=False),
    Column("for_seconds", Integer, nullable=False),
    Column("severity", String(16), nullable=False),
    Column("device_ids", Text, nullable=False),  # JSON list
    Column("gateway_ids", Text, nullable=False),  # JSON list
    Column("enabled", Boolean, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Every change of a rule, in commit order, as webhook_changes is for webhooks:
# WatchRules follows it after a snapshot, in any replica.
rule_changes = Table(
    "rule_changes",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("rule_id", String(40), nullable=False),
    Column("project_id", String(128), nullable=False),
    Column("kind", String(8), nullable=False),  # "upsert" or "delete"
    Column("created_at", DateTime(timezone=True), nullable=False),
)
