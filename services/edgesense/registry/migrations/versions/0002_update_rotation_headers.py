"""webhook updates, secret rotation and custom headers

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Encrypted like secret_ciphertext (registry/secretbox.py); NULL: none.
    op.add_column("webhooks", sa.Column("headers_ciphertext", sa.Text))
    op.add_column("webhooks", sa.Column("previous_secrets_ciphertext", sa.Text))
    op.add_column("webhooks", sa.Column("secret_rotation_ends_at", sa.DateTime(timezone=True)))
    op.add_column("webhooks", sa.Column("updated_at", sa.DateTime(timezone=True)))
    op.execute("UPDATE webhooks SET updated_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("updated_at")
        batch.drop_column("secret_rotation_ends_at")
        batch.drop_column("previous_secrets_ciphertext")
        batch.drop_column("headers_ciphertext")
