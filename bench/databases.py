"""A fresh, empty database for each cluster: a SQLite file, or a new PostgreSQL database.

For PostgreSQL, `server_url` names the server and a database to connect to
for `CREATE DATABASE` (default: the machine's `postgres` database as user
`postgres`); each cluster gets `edgesense_bench_<random>`, dropped after.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path


def admin_dsn(sqlalchemy_url: str) -> str:
    """asyncpg's form of a SQLAlchemy URL."""
    return sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)


DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


@dataclass
class Database:
    kind: str = "sqlite"  # sqlite | postgresql
    server_url: str = DEFAULT_POSTGRES
    created: list[str] = field(default_factory=list)

    async def create(self, directory: Path) -> str:
        """A new empty database; answers its SQLAlchemy URL."""
        if self.kind == "sqlite":
            return f"sqlite+aiosqlite:///{directory / 'edgesense.db'}"
        name = "edgesense_bench_" + secrets.token_hex(4)
        await self._admin(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        base = self.server_url.rsplit("/", 1)[0]
        return f"{base}/{name}"

    async def size(self, url: str) -> int:
        """Bytes the database at `url` takes now: SQLite's file with its
        write-ahead log, or PostgreSQL's pg_database_size."""
        if self.kind == "sqlite":
            path = Path(url.split(":///", 1)[1])
            found = [path, path.with_name(path.name + "-wal")]
            return sum(p.stat().st_size for p in found if p.exists())
        import asyncpg

        name = url.rsplit("/", 1)[1]
        dsn = admin_dsn(self.server_url)
        connection = await asyncpg.connect(dsn)
        try:
            return int(await connection.fetchval("SELECT pg_database_size($1)", name))
        finally:
            await connection.close()

    async def drop_all(self) -> None:
        while self.created:
            name = self.created.pop()
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def _admin(self, statement: str) -> None:
        import asyncpg

        dsn = admin_dsn(self.server_url)
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()
