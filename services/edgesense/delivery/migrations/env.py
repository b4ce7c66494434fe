"""Alembic environment: runs on the connection edgesense.storage.migrate passes."""

from alembic import context

config = context.config
context.configure(
    connection=config.attributes["connection"],
    target_metadata=None,
    version_table=config.attributes["version_table"],
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
