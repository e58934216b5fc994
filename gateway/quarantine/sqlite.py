"""SQLite quarantine store: the embedded default. WAL with synchronous=FULL, so a commit survives power loss.

One connection per process, its transactions serialised by a lock; between processes (several
workers or `gateway quarantine` next to `gateway run`) BEGIN IMMEDIATE and the busy timeout order
the writers, so the held -> releasing claim is atomic across processes too.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite

from gateway.quarantine import StoreError
from gateway.quarantine.schema import SQLITE as MIGRATIONS
from gateway.quarantine.sql import SqlStore


class _Conn:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self.db.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def execute(self, sql: str, *args: Any) -> None:
        await self.db.execute(sql, args)


class SqliteStore(SqlStore):
    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self.db: aiosqlite.Connection | None = None
        self._lock: asyncio.Lock | None = None

    async def open(self) -> None:
        if self.path not in ("", ":memory:"):
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._lock = asyncio.Lock()
        try:
            self.db = await aiosqlite.connect(self.path, isolation_level=None)
            await self.db.execute("PRAGMA journal_mode=WAL")
            await self.db.execute("PRAGMA synchronous=FULL")
            await self.db.execute("PRAGMA busy_timeout=10000")
            await self.db.execute("PRAGMA foreign_keys=ON")
            await self._migrate()
        except sqlite3.Error as e:
            raise StoreError(f"cannot open quarantine {self.path}: {e}") from e

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[_Conn]:
        assert self.db and self._lock, "store not open"
        async with self._lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield _Conn(self.db)
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")

    async def _migrate(self) -> None:
        async with self._tx() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = (await conn.fetch("SELECT MAX(version) FROM schema_version"))[0][0] or 0
            for version, statements in enumerate(MIGRATIONS[current:], current + 1):
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version (version) VALUES (?)", version)
                if version == 2:
                    await self._backfill_categories(conn)
                if version == 4:
                    await self._backfill_session_epochs(conn)
                if version == 5:
                    await self._backfill_rescans(conn)

    async def close(self) -> None:
        if self.db:
            await self.db.close()
            self.db = None
