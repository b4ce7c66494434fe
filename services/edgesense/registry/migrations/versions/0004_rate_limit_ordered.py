"""a webhook's rate limit and ordered option

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
    # Columns with a constant default: no table rewrite on PostgreSQL (11+) nor SQLite.
    op.add_column(
        "webhooks",
        sa.Column("rate_limit_per_second", sa.Integer, nullable=False, server_default="0"),
    )
    op.add_column(
        "webhooks", sa.Column("ordered", sa.Boolean, nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("ordered")
        batch.drop_column("rate_limit_per_second")
