"""SQLite quarantine store: the embedded default. WAL with synchronous=FULL, so a commit survives power loss."""

from __future__ import annotations

import json
import os
import sqlite3

import aiosqlite

from gateway.quarantine import HeldItem, StoreError, findings_from_json, findings_json

MIGRATIONS: list[str] = [
    """
    CREATE TABLE held (
        id TEXT PRIMARY KEY,
        received_at REAL NOT NULL,
        direction TEXT NOT NULL,
        client_address TEXT NOT NULL,
        helo TEXT NOT NULL,
        mail_from TEXT NOT NULL,
        rcpt_tos TEXT NOT NULL,          -- JSON list
        subject TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        rule TEXT NOT NULL,
        action TEXT NOT NULL,
        findings TEXT NOT NULL,          -- JSON list of findings
        status TEXT NOT NULL DEFAULT 'held',
        legal_hold INTEGER NOT NULL DEFAULT 0,
        extra TEXT NOT NULL DEFAULT '{}',
        raw BLOB
    );
    CREATE INDEX held_status_received ON held (status, received_at);
    """,
]
_COLUMNS = ("id, received_at, direction, client_address, helo, mail_from, rcpt_tos, subject, size, sha256, "
            "rule, action, findings, status, legal_hold, extra")


class SqliteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self.db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        if self.path not in ("", ":memory:"):
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        try:
            self.db = await aiosqlite.connect(self.path, isolation_level=None)
            await self.db.execute("PRAGMA journal_mode=WAL")
            await self.db.execute("PRAGMA synchronous=FULL")
            await self.db.execute("PRAGMA busy_timeout=5000")
            await self._migrate()
        except sqlite3.Error as e:
            raise StoreError(f"cannot open quarantine {self.path}: {e}") from e

    async def _migrate(self) -> None:
        assert self.db
        await self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        async with self.db.execute("SELECT MAX(version) FROM schema_version") as cur:
            row = await cur.fetchone()
        current = row[0] or 0
        for version, script in enumerate(MIGRATIONS[current:], current + 1):
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, script.split(";")):
                    await self.db.execute(statement)
                await self.db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        if self.db:
            await self.db.close()
            self.db = None

    async def hold(self, item: HeldItem) -> None:
        assert self.db, "store not open"
        try:
            await self.db.execute(
                f"INSERT INTO held ({_COLUMNS}, raw) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (item.id, item.received_at, item.direction, item.client_address, item.helo, item.mail_from,
                 json.dumps(list(item.rcpt_tos)), item.subject, item.size, item.sha256, item.rule, item.action,
                 findings_json(item.findings), item.status, int(item.legal_hold), json.dumps(item.extra),
                 item.raw))
        except sqlite3.Error as e:
            raise StoreError(f"quarantine write failed: {e}") from e

    async def get(self, item_id: str, *, with_raw: bool = True) -> HeldItem | None:
        assert self.db, "store not open"
        raw_col = ", raw" if with_raw else ""
        async with self.db.execute(f"SELECT {_COLUMNS}{raw_col} FROM held WHERE id = ?", (item_id,)) as cur:
            row = await cur.fetchone()
        return _item(row, with_raw) if row else None

    async def list(self, *, status: str | None = None, limit: int = 1000) -> list[HeldItem]:
        assert self.db, "store not open"
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        async with self.db.execute(
                f"SELECT {_COLUMNS} FROM held {where} ORDER BY received_at DESC LIMIT ?", (*args, limit)) as cur:
            rows = await cur.fetchall()
        return [_item(r, False) for r in rows]

    async def stats(self) -> tuple[int, float | None]:
        """(held items, received_at of the oldest held one), for /metrics and /healthz."""
        assert self.db, "store not open"
        async with self.db.execute("SELECT COUNT(*), MIN(received_at) FROM held WHERE status = 'held'") as cur:
            count, oldest = await cur.fetchone()
        return count, oldest


def _item(row: tuple, with_raw: bool) -> HeldItem:
    return HeldItem(
        id=row[0], received_at=row[1], direction=row[2], client_address=row[3], helo=row[4], mail_from=row[5],
        rcpt_tos=tuple(json.loads(row[6])), subject=row[7], size=row[8], sha256=row[9], rule=row[10],
        action=row[11], findings=findings_from_json(row[12]), status=row[13], legal_hold=bool(row[14]),
        extra=json.loads(row[15]), raw=row[16] if with_raw else None)
