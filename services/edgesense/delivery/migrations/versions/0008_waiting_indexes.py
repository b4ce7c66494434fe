"""PostgreSQL's waiting indexes: the version that has them, and the way back

On PostgreSQL, claims read the due rows through two partial indexes of
waiting deliveries (pending or held), ix_deliveries_waiting and
ix_deliveries_webhook_waiting, in place of migrations 0001 and 0002's full
ix_deliveries_due and ix_deliveries_webhook_due. Like the indexes of 0003 to
0005, they are not created here: `store/online_indexes.py` builds them
concurrently once delivery serves, without blocking writes to a large
table, then drops the full ones concurrently. So the upgrade changes
nothing; this revision marks the schema that has them (a release that
predates it refuses to start on it, as with any newer revision). SQLite
keeps the full indexes.

The downgrade, on PostgreSQL, builds the full indexes again and drops the
waiting ones, inside the migration's transaction: on a large table it
blocks writes to deliveries while it builds (run it with delivery stopped).
Without it, a release before this one would read waiting rows by status
through other indexes.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing: store/online_indexes.py builds the waiting indexes (see above)."""


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_deliveries_due"
        " ON deliveries (status, next_attempt_at, seq, webhook_id)"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_deliveries_webhook_due"
        " ON deliveries (webhook_id, status, next_attempt_at, seq)"
    )
    op.execute("DROP INDEX IF EXISTS ix_deliveries_webhook_waiting")
    op.execute("DROP INDEX IF EXISTS ix_deliveries_waiting")
