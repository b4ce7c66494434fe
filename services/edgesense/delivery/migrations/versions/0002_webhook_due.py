"""an index of each webhook's deliveries by status and due time; the due index carries the webhook

Claims for one webhook (a lane that drained) and state changes by webhook
(hold, release, defer, fail) read only that webhook's rows in that state.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The due index also carries the webhook: a claim that leaves some webhooks
    # out (their lanes are full) tells them apart without reading the rows.
    op.drop_index("ix_deliveries_due", "deliveries")
    op.create_index(
        "ix_deliveries_due", "deliveries", ["status", "next_attempt_at", "seq", "webhook_id"]
    )
    op.create_index(
        "ix_deliveries_webhook_due",
        "deliveries",
        ["webhook_id", "status", "next_attempt_at", "seq"],
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_webhook_due", "deliveries")
    op.drop_index("ix_deliveries_due", "deliveries")
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at", "seq"])
