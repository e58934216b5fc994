"""The quarantine: held messages kept durably until ITSD releases or deletes them.

One Store protocol, backends chosen by `[quarantine] url`. `hold` returns only once the item is
durably committed: the SMTP client gets its 250 after that and not before.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Protocol

from gateway.model import Finding, Mail, Verdict


class StoreError(Exception):
    """The store could not do what was asked (the caller answers 4xx or shows the error)."""


@dataclass(frozen=True)
class HeldItem:
    id: str
    received_at: float
    direction: str
    client_address: str
    helo: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    subject: str
    size: int
    sha256: str
    rule: str
    action: str
    findings: tuple[Finding, ...]
    status: str = "held"             # held | releasing | released | deleted | expired
    legal_hold: bool = False
    raw: bytes | None = None         # None once purged, or when listed without content
    extra: dict = field(default_factory=dict)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.kind for f in self.findings))

    def summary(self) -> dict[str, object]:
        """The fields of `gateway quarantine list --json` and GET /api/held."""
        return {"id": self.id, "status": self.status, "direction": self.direction, "mail_from": self.mail_from,
                "rcpt_tos": list(self.rcpt_tos), "subject": self.subject, "rule": self.rule,
                "kinds": list(self.kinds), "received_at": self.received_at, "size": self.size,
                "legal_hold": self.legal_hold}

    @classmethod
    def from_mail(cls, mail: Mail, verdict: Verdict) -> HeldItem:
        return cls(
            id=mail.id, received_at=mail.received_at, direction=mail.direction.value,
            client_address=mail.envelope.client_address, helo=mail.envelope.helo,
            mail_from=mail.envelope.mail_from, rcpt_tos=mail.envelope.rcpt_tos, subject=mail.parsed.subject,
            size=mail.size, sha256=hashlib.sha256(mail.raw).hexdigest(), rule=verdict.rule,
            action=verdict.action.value, findings=verdict.findings, raw=mail.raw,
            extra={"tags": list(verdict.tags), "notify": sorted(verdict.notify), "notice": verdict.notice,
                   "tag_rules": list(verdict.tag_rules), **verdict.options})


def findings_json(findings: tuple[Finding, ...]) -> str:
    return json.dumps([f.as_dict() for f in findings])


def findings_from_json(text: str) -> tuple[Finding, ...]:
    return tuple(Finding.from_dict(d) for d in json.loads(text or "[]"))


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def hold(self, item: HeldItem) -> None: ...
    async def get(self, item_id: str, *, with_raw: bool = True) -> HeldItem | None: ...
    async def list(self, *, status: str | None = None, limit: int = 1000) -> list[HeldItem]: ...


def open_store(url: str) -> Store:
    """`sqlite:///path` or `postgresql://...` -> an unopened Store."""
    if url.startswith("sqlite://"):
        from gateway.quarantine.sqlite import SqliteStore
        return SqliteStore(url.removeprefix("sqlite://"))
    raise StoreError(f"unsupported quarantine url {url!r} (use sqlite:///path)")
