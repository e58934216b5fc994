"""PostgreSQL quarantine store (asyncpg): one database shared by several gateway nodes.

The held -> releasing claim is a single conditional UPDATE, so of two nodes releasing the same item
one wins. Migrations run under an advisory lock, so nodes starting together do not race. The audit
table has a trigger that refuses UPDATE, DELETE and TRUNCATE.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from gateway.quarantine import StoreError
from gateway.quarantine.schema import POSTGRES as MIGRATIONS
from gateway.quarantine.sql import SqlStore

_MIGRATION_LOCK = 0x6761746577  # "gatew": the advisory lock key for schema migrations


def numbered(sql: str) -> str:
    """`?` placeholders -> `$1, $2, ...` (our SQL has no `?` anywhere else)."""
    pieces = sql.split("?")
    return pieces[0] + "".join(f"${n}{piece}" for n, piece in enumerate(pieces[1:], 1))


class _Conn:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return list(await self.conn.fetch(numbered(sql), *args))

    async def execute(self, sql: str, *args: Any) -> None:
        await self.conn.execute(numbered(sql), *args)


class PostgresStore(SqlStore):
    dialect = "postgresql"

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.url = url
        self.min_size, self.max_size = min_size, max_size
        self.pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            self.pool = await asyncpg.create_pool(self.url, min_size=self.min_size, max_size=self.max_size,
                                                  command_timeout=60)
            await self._migrate()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise StoreError(f"cannot open quarantine {_redacted(self.url)}: {e}") from e

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[_Conn]:
        assert self.pool, "store not open"
        async with self.pool.acquire() as conn, conn.transaction():
            yield _Conn(conn)

    async def _migrate(self) -> None:
        async with self._tx() as conn:
            await conn.execute(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = (await conn.fetch("SELECT MAX(version) FROM schema_version"))[0][0] or 0
            for version, statements in enumerate(MIGRATIONS[current:], current + 1):
                for statement in statements:
                    await conn.conn.execute(statement)      # no parameters: `$$` bodies stay as written
                await conn.execute("INSERT INTO schema_version (version) VALUES (?)", version)
                if version == 2:
                    await self._backfill_categories(conn)
                if version == 4:
                    await self._backfill_session_epochs(conn)
                if version == 5:
                    await self._backfill_rescans(conn)

    async def close(self) -> None:
        if self.pool:
            await self.pool.close()
            self.pool = None


def _redacted(url: str) -> str:
    """The URL without a password, for messages."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{creds}{at}{host}"
