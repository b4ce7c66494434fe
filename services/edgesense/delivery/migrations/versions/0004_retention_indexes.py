"""ended deliveries by end time, deliveries by event, events by creation time (retention)

Retention deletes deliveries that ended (succeeded or failed) before a
cutoff, oldest end first, then the events created before it that no
delivery refers to any more; these indexes let it read only those rows.
The ended index is partial: recording an outcome writes to it only when a
delivery ends. As with 0003, on PostgreSQL this migration creates none of
them: `store/online_indexes.py` builds them concurrently once delivery
serves, without blocking writes to a large table.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.create_index(
        "ix_deliveries_ended",
        "deliveries",
        ["updated_at"],
        sqlite_where=sa.text("status IN ('succeeded', 'failed')"),
    )
    op.create_index("ix_deliveries_event", "deliveries", ["event_id"])
    op.create_index("ix_events_created", "events", ["created_at"])


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_events_created")
    op.execute("DROP INDEX IF EXISTS ix_deliveries_event")
    op.execute("DROP INDEX IF EXISTS ix_deliveries_ended")
