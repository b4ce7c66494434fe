"""The body of every component's Alembic env.py: migrate on the connection
that edgesense.storage.migrate passes, into the component's version table."""

from __future__ import annotations

from alembic import context


def run_migrations() -> None:
    config = context.config
    context.configure(
        connection=config.attributes["connection"],
        target_metadata=None,
        version_table=config.attributes["version_table"],
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
