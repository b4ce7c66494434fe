"""rule_states and alerts: what threshold alert rules remember and raise

New tables, created empty with their indexes (nothing to build concurrently).
rule_states holds one row per (rule, device) pair that a reading has been
judged for (common/thresholds.py State); alerts one row per breach, from its
`triggered` transition to its `resolved` one. Both change in the
transaction that stores the reading judged (store/outbox_*.py).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "rule_states",
        sa.Column("rule_id", sa.String(40), primary_key=True),
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("project_id", sa.String(128), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("streak", sa.Integer, nullable=False),
        sa.Column("since", sa.Float),
        sa.Column("last_at", sa.Float),
        sa.Column("alert_id", sa.String(40)),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "alerts",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.String(40), nullable=False, unique=True),
        sa.Column("project_id", sa.String(128), nullable=False),
        sa.Column("rule_id", sa.String(40), nullable=False),
        sa.Column("rule_name", sa.Text, nullable=False),
        sa.Column("rule_version", sa.Integer, nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("gateway_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("field", sa.String(256), nullable=False),
        sa.Column("operator", sa.String(16), nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("threshold_high", sa.Float),
        sa.Column("clear_threshold", sa.Float),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("triggered_at", sa.Float, nullable=False),
        sa.Column("triggered_event_id", sa.String(64), nullable=False),
        sa.Column("resolved_at", sa.Float),
        sa.Column("resolved_value", sa.Float),
        sa.Column("resolved_reason", sa.String(32)),
        sa.Column("resolved_event_id", sa.String(64)),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_alerts_project", "alerts", ["project_id", "seq"])
    op.create_index("ix_alerts_rule", "alerts", ["rule_id", "state"])
    op.create_index("ix_alerts_resolved", "alerts", ["resolved_at"])
    op.create_index(
        "ix_alerts_active",
        "alerts",
        ["rule_id", "seq"],
        sqlite_where=sa.text("state = 'active'"),
        postgresql_where=sa.text("state = 'active'"),
    )


def downgrade() -> None:
    op.drop_table("alerts")
    op.drop_table("rule_states")
