"""Alembic environment (see edgesense.storage.alembic_env)."""

from edgesense.storage.alembic_env import run_migrations

run_migrations()
