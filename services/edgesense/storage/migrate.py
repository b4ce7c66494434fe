"""Versioned schema migrations (Alembic), run by each service as it starts.

Each component (`registry`, `delivery`) has its own migration folder and its
own version table, so the two can share one database or use two. Concurrent
starts are serialised: on PostgreSQL by an advisory lock held for the
migration's transaction, on SQLite by the write lock that `BEGIN IMMEDIATE`
takes (tests/storage/test_migrate.py starts six at once). Within one
process, run one migration at a time: Alembic keeps its context in module
globals, and two interleaved on one event loop trip over each other.
"""

from __future__ import annotations

import zlib
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from edgesense.storage.engine import translate


def _config(component: str, connection: Any) -> Config:
    location = resources.files("edgesense") / component / "migrations"
    cfg = Config()
    cfg.set_main_option("script_location", str(location))
    cfg.attributes["connection"] = connection
    cfg.attributes["version_table"] = f"alembic_version_{component}"
    return cfg


async def migrate(engine: AsyncEngine, component: str) -> None:
    """Bring `component`'s tables to the newest schema version."""
    with translate(f"migrating the {component} schema"):
        async with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                lock_id = zlib.crc32(f"edgesense-migrate-{component}".encode())
                await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
            await conn.run_sync(
                lambda sync_conn: command.upgrade(_config(component, sync_conn), "head")
            )
