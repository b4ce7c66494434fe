"""devices: the devices and gateways seen, for GET /api/devices

A new table, created empty with its indexes (nothing to build concurrently).
One row per (project, device) seen in a stored event, written by the devices
flusher (delivery/devices/tracker.py), deleted by retention once the device
has not been seen for EDGESENSE_RETENTION_DAYS.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("project_id", sa.String(128), primary_key=True),
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("gateway_id", sa.String(128), nullable=False),
        sa.Column("last_event", sa.String(32), nullable=False),
        sa.Column("last_event_id", sa.String(64), nullable=False),
        sa.Column("last_event_at", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_at", sa.Float),
        sa.Column("status_changed_at", sa.Float),
        sa.Column("first_seen_at", sa.Float, nullable=False),
        sa.Column("last_seen_at", sa.Float, nullable=False),
        sa.Column("readings", sa.LargeBinary),
        sa.Column("readings_omitted", sa.Boolean, nullable=False),
        sa.Column("readings_at", sa.Float),
        sa.Column("readings_event_id", sa.String(64)),
        sa.Column("recent", sa.Text, nullable=False),
    )
    op.create_index("ix_devices_status", "devices", ["project_id", "status", "device_id"])
    op.create_index("ix_devices_gateway_id", "devices", ["project_id", "gateway_id", "device_id"])
    op.create_index("ix_devices_seen", "devices", ["last_seen_at"])


def downgrade() -> None:
    op.drop_table("devices")
