"""SQLite quarantine store: the embedded default. WAL with synchronous=FULL, so a commit survives power loss.

One connection per process, its transactions serialised by a lock; between processes (several
workers or `gateway quarantine` next to `gateway run`) BEGIN IMMEDIATE and the busy timeout order
the writers, so the held -> releasing claim is atomic across processes too.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import sqlite3
import stat
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


SIDE_FILES = ("", "-wal", "-shm", "-journal")


def _owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def secure_files(path: str) -> None:
    """The database (held mail, the signing keys in `meta`) and its -wal/-shm: mode 0600, owned by the
    service user, taken to be the owner of their directory (/var/lib/gateway, systemd's StateDirectory=).

    Run as root (`gateway users add` before the service ever started), the files are created or taken
    back to that owner, so root never leaves a file the service cannot open; SQLite itself gives the
    -wal/-shm it creates later the database's owner and mode. Files are opened without following
    symbolic links and one with several hard links is refused: the directory's owner must not be able
    to make root chown another file. A StoreError says how to run the command instead."""
    directory = os.path.dirname(os.path.abspath(path))
    info = os.stat(directory)
    root = os.geteuid() == 0
    uid, gid = (info.st_uid, info.st_gid) if root else (os.geteuid(), os.getegid())
    service = _owner_name(info.st_uid)
    hint = (f"run it as the service user, e.g. `runuser -u {service} -- gateway ...`" if info.st_uid != os.geteuid()
            else "check the files' owner and mode")
    for suffix in SIDE_FILES:
        name = path + suffix
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if not suffix else 0)
        try:
            fd = os.open(name, flags, 0o600)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise StoreError(f"cannot open quarantine {name}: {e.strerror}; {hint}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
                raise StoreError(f"quarantine {name} is not a plain file of its own (a link?); refusing to use it")
            if root and (st.st_uid, st.st_gid) != (uid, gid):
                os.fchown(fd, uid, gid)
            if st.st_mode & 0o777 != 0o600:
                os.fchmod(fd, 0o600)
        except PermissionError as e:
            raise StoreError(f"quarantine {name} is owned by {_owner_name(st.st_uid)} with mode "
                             f"{st.st_mode & 0o777:o} and cannot be made 0600 ({e.strerror}); {hint}") from None
        finally:
            os.close(fd)


class SqliteStore(SqlStore):
    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self.db: aiosqlite.Connection | None = None
        self._lock: asyncio.Lock | None = None

    async def open(self) -> None:
        if self.path not in ("", ":memory:"):
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), mode=0o750, exist_ok=True)
            secure_files(self.path)
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

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[_Conn]:
        """A deferred transaction: readers do not wait for, nor block, writers in other processes (WAL)."""
        assert self.db and self._lock, "store not open"
        async with self._lock:
            await self.db.execute("BEGIN")
            try:
                yield _Conn(self.db)
            finally:
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
