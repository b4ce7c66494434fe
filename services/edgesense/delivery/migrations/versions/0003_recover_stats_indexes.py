"""each webhook's deliveries by creation time (stats), and its failed ones by failure time (recover)

On SQLite this migration creates both indexes. On PostgreSQL it creates
none: the deliveries table may be large there, and a plain CREATE INDEX
blocks writes to it while it builds, while CREATE INDEX CONCURRENTLY cannot
run in the transaction a migration runs in (storage/migrate.py). There
`store/online_indexes.py` builds them concurrently once delivery serves.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.create_index("ix_deliveries_webhook_created", "deliveries", ["webhook_id", "created_at"])
    # Partial: only failed rows are in it, so recording an outcome (which
    # changes updated_at) writes to it only when the delivery fails for good.
    op.create_index(
        "ix_deliveries_webhook_failed",
        "deliveries",
        ["webhook_id", "updated_at", "seq"],
        sqlite_where=sa.text("status = 'failed'"),
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_deliveries_webhook_failed")
    op.execute("DROP INDEX IF EXISTS ix_deliveries_webhook_created")
