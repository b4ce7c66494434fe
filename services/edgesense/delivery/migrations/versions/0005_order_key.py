"""deliveries.order_key: the event's device while the webhook is ordered, and its index

A nullable column without a default: adding it rewrites no row, on SQLite or
PostgreSQL, and the rows already stored have no key (they are not ordered,
see store/rows.py ORDERED_HEAD). The partial index ix_deliveries_order holds
only keyed rows that are waiting (pending or held): claims look up there
whether a keyed delivery has an earlier one waiting. As with 0003 and 0004,
on PostgreSQL this migration does not create it: `store/online_indexes.py`
builds it concurrently once delivery serves, without blocking writes to a
large table.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# rows.ORDER_WAITING, written out: a migration keeps the schema it made.
ORDER_WAITING = "order_key IS NOT NULL AND status IN ('pending', 'held')"


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("order_key", sa.String(128), nullable=True))
    if op.get_bind().dialect.name != "sqlite":
        return
    op.create_index(
        "ix_deliveries_order",
        "deliveries",
        ["webhook_id", "order_key", "seq"],
        sqlite_where=sa.text(ORDER_WAITING),
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_deliveries_order")
    op.drop_column("deliveries", "order_key")
