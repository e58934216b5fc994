"""Store fixtures for both backends: SQLite in tmp_path, PostgreSQL on 127.0.0.1:5432 in a throwaway
database (unique name, dropped afterwards), and held items made like the relay makes them."""

from __future__ import annotations

import hashlib
import time
import uuid

import asyncpg

from gateway.model import Finding
from gateway.quarantine import HeldItem, open_store
from tests.support.peers import make_message

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
VIRUS = "Eicar-Test-Signature"       # the signature name of held_item's virus findings (an admin confirms it)
EVIDENCE = {"pii": ("SSN ***-**-6789",), "virus": (VIRUS,)}


class PgDatabase:
    """A throwaway PostgreSQL database: `async with PgDatabase() as url: ...`."""

    def __init__(self) -> None:
        self.name = f"gw_test_{uuid.uuid4().hex[:12]}"

    async def __aenter__(self) -> str:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()
        return f"postgresql://postgres@127.0.0.1:5432/{self.name}"

    async def __aexit__(self, *exc: object) -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()


async def store_url(backend: str, tmp_path, stack) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'q.db'}"
    return await stack.enter_async_context(PgDatabase())


async def opened(url: str):
    store = open_store(url)
    await store.open()
    return store


def held_item(*, subject: str = "Quarterly numbers", kinds: tuple[str, ...] = ("pii.ssn",), rule: str =
              "outbound/pii", rcpts: tuple[str, ...] = ("bob@example.org",), sender: str = "alice@example.gov",
              received_at: float | None = None, body: str = "My SSN is 123-45-6789, social security.\n",
              approvals: int = 1, direction: str = "outbound", raw: bytes | None = None) -> HeldItem:
    raw = raw if raw is not None else make_message(subject=subject, body=body, sender=sender, to=rcpts[0])
    findings = tuple(Finding(kind=k, detector=k.split(".")[0], detail=f"{k} found in the body", part="part 1",
                             evidence=EVIDENCE.get(k.split(".")[0], ())) for k in kinds)
    item_id = f"{int(time.time() * 1000):012x}{uuid.uuid4().hex[:8]}"
    return HeldItem(id=item_id, received_at=received_at or time.time(), direction=direction,
                    client_address="127.0.0.1", helo="client.test", mail_from=sender, rcpt_tos=rcpts,
                    subject=subject, size=len(raw), sha256=hashlib.sha256(raw).hexdigest(), rule=rule,
                    action="quarantine", findings=findings, raw=raw,
                    extra={"approvals": approvals, "release_role": "reviewer", "notice": "n", "tags": []})
