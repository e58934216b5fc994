"""The quarantine: held messages kept durably until ITSD releases or deletes them.

One Store protocol, backends chosen by `[quarantine] url`. `hold` returns only once the item is
durably committed: the SMTP client gets its 250 after that and not before.

Release is a state machine on the item: held -> releasing (an atomic claim: only one caller wins)
-> released, or back to held with the error when delivery failed. An item left in `releasing` by a
crash goes back to held by `recover_stuck` (run at start-up and by purge). Deleted items keep their
raw content until purge; purge removes raw content after the retention period, except on legal
hold, and marks still-held items expired. The audit log only ever grows.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from gateway.findinggroups import reason
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
    error: str = ""                  # the last failed release attempt, for the reviewer
    released_to: tuple[str, ...] = ()   # recipients a release has already reached
    claimed_at: float | None = None
    claimed_by: str = ""
    decided_at: float | None = None  # released or deleted: when and by whom
    decided_by: str = ""
    purged_at: float | None = None
    rescan_findings: tuple[Finding, ...] = ()   # what re-scans found since, recorded by each re-scan
    auth_results: str = ""           # our Authentication-Results value at receipt, written again on release

    @property
    def recorded_findings(self) -> tuple[Finding, ...]:
        """Every finding the item ever had: at hold and by any re-scan (each once)."""
        return tuple(dict.fromkeys((*self.findings, *self.rescan_findings)))

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.category for f in self.recorded_findings))

    @property
    def virus_names(self) -> tuple[str, ...]:
        """The signature names of every virus found, at hold or by a re-scan: what an admin confirms."""
        return virus_names(self.recorded_findings)

    @property
    def approvals_required(self) -> int:
        try:
            return max(1, int(self.extra.get("approvals", 1)))
        except (TypeError, ValueError):
            return 1

    @property
    def release_role(self) -> str:
        """The role a release needs: admin for anything a virus was ever found in, or when the rule
        (at hold or at a re-scan) says so; else reviewer."""
        if "virus" in self.categories or "admin" in (self.extra.get("release_role"),
                                                    self.extra.get("rescan_release_role")):
            return "admin"
        return "reviewer"

    @property
    def pending_rcpts(self) -> tuple[str, ...]:
        return tuple(r for r in self.rcpt_tos if r not in self.released_to)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.kind for f in self.recorded_findings))

    def summary(self) -> dict[str, object]:
        """The fields of `gateway quarantine list --json` and GET /api/held."""
        return {"id": self.id, "status": self.status, "direction": self.direction, "mail_from": self.mail_from,
                "rcpt_tos": list(self.rcpt_tos), "subject": self.subject, "rule": self.rule,
                "kinds": list(self.kinds), "received_at": self.received_at, "size": self.size,
                "legal_hold": self.legal_hold, "reason": reason(self.rule, self.recorded_findings)}

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


def virus_names(findings: tuple[Finding, ...]) -> tuple[str, ...]:
    """Signature names of the virus findings (the antivirus detector's evidence), in order, each once;
    a virus finding without one counts as "virus"."""
    return tuple(dict.fromkeys((f.evidence[0] if f.evidence else "virus") for f in findings
                               if f.category == "virus"))


def findings_json(findings: tuple[Finding, ...]) -> str:
    return json.dumps([f.as_dict() for f in findings])


def findings_from_json(text: str) -> tuple[Finding, ...]:
    return tuple(Finding.from_dict(d) for d in json.loads(text or "[]"))


STATUSES = ("held", "releasing", "released", "deleted", "expired")
ROLES = ("reviewer", "admin")
SORTS = {"received": "received_at", "size": "size", "sender": "mail_from", "subject": "subject",
         "rule": "rule", "status": "status", "direction": "direction"}


@dataclass(frozen=True)
class Query:
    """A filtered, sorted page of the quarantine. Text filters are case-insensitive substrings."""

    status: str | None = None
    direction: str | None = None
    category: str | None = None      # a category ("pii"), or a kind ("pii.ssn")
    kind: str | None = None          # exact kind
    rule: str | None = None          # substring of the rule name
    sender: str | None = None
    recipient: str | None = None
    since: float | None = None       # received_at >= since
    until: float | None = None       # received_at < until
    text: str | None = None          # in the subject
    search: str | None = None        # in the sender, the recipients, the subject or the findings
    requested: bool = False          # only items whose sender asked for release (not yet answered)
    sort: str = "received"           # a key of SORTS
    descending: bool = True
    offset: int = 0
    limit: int = 50

    @classmethod
    def from_params(cls, params: Mapping[str, object], *, limit: int = 50) -> Query:
        """Filters from query parameters or CLI options (strings); a bad value raises ValueError."""
        def text(key: str) -> str | None:
            value = params.get(key)
            if value in (None, ""):
                return None
            # Control characters never match a stored value (a NUL even breaks PostgreSQL's text parameters).
            return re.sub(r"[\x00-\x1f\x7f]", "", str(value)).strip()[:200] or None

        status = text("status")
        if status and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        sort = text("sort") or "received"
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}")
        order = text("order") or "desc"
        if order not in ("asc", "desc"):
            raise ValueError("order must be asc or desc")
        return cls(status=status, direction=text("direction"), category=text("category"), kind=text("kind"),
                   rule=text("rule"), search=text("q"),
                   sender=text("sender"), recipient=text("recipient"), since=_when("since", text("since")),
                   until=_when("until", text("until"), end=True), text=text("subject"), sort=sort,
                   descending=order == "desc", offset=min(max(0, _number("offset", text("offset"), 0)), 10**9),
                   limit=max(1, min(_number("limit", text("limit"), limit), 1000)),
                   requested=text("requested") in ("1", "true", "yes", "on"))


def _number(name: str, value: str | None, default: int) -> int:
    """A whole number of at most 12 digits (a longer one is no page anyone asked for)."""
    if value is None:
        return default
    if not re.fullmatch(r"[+-]?[0-9]{1,12}", value):
        raise ValueError(f"{name} must be a whole number of at most 12 digits")
    return int(value)


def _when(name: str, value: str | None, *, end: bool = False) -> float | None:
    """'2026-11-29' or an ISO date-time (UTC unless it says otherwise) -> epoch seconds.
    A bare date as the end of a range means the end of that day; 9999-12-31 has no end (OverflowError),
    so it is a ValueError like any bad date."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        if end and len(value) == 10:
            moment += timedelta(days=1)
        return moment.timestamp()
    except (ValueError, OverflowError):
        raise ValueError(f"{name} must be an ISO date or date-time between 0001-01-01 and 9999-12-30 "
                         "(e.g. 2026-11-29 or 2026-11-29T14:00)") from None


@dataclass(frozen=True)
class Page:
    items: list[HeldItem]
    total: int


@dataclass(frozen=True)
class User:
    name: str
    role: str                        # reviewer | admin
    password_hash: str = ""
    created_at: float = 0.0
    disabled: bool = False
    session_epoch: str = ""          # replaced to end every session of the account (logout, passwd, disable)


@dataclass(frozen=True)
class Token:
    id: str
    user_name: str
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    action: str                      # view | download | release | release-failed | approve | delete | note | ...
    held_id: str | None
    reason: str
    detail: dict


@dataclass(frozen=True)
class OutboxNotice:
    """A notice to send: written to the outbox (with the hold, or after a decision), sent by the notifier."""

    recipient: str
    template: str                    # held | itsd | decided
    role: str                        # sender | recipient | supervisor | itsd
    context: dict                    # the facts the template may show (masked; never body text)
    held_id: str | None = None
    digest: str = ""                 # "": on its own; hourly | daily | itsd: grouped into one digest
    due_at: float = 0.0              # not before (0: now)


@dataclass(frozen=True)
class OutboxRow:
    id: int
    held_id: str | None
    recipient: str
    role: str
    template: str
    digest: str
    context: dict
    created_at: float
    due_at: float
    status: str                      # pending | sending | sent | failed | skipped
    attempts: int
    error: str
    sent_at: float | None = None


@dataclass(frozen=True)
class ReleaseRequest:
    held_id: str
    address: str
    justification: str
    at: float
    answered_at: float | None = None
    answered_by: str = ""
    answer: str = ""


@dataclass(frozen=True)
class StoredLetter:
    """A chain letter in the shared memory: its sketch, when first seen, copies seen so far."""
    id: int
    sketch: tuple[int, ...]
    subject: str
    first_seen: float
    copies: int


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def hold(self, item: HeldItem, notices: Sequence[OutboxNotice] = ()) -> None: ...
    async def get(self, item_id: str, *, with_raw: bool = True) -> HeldItem | None: ...
    async def list(self, *, status: str | None = None, limit: int = 1000) -> list[HeldItem]: ...
    async def query(self, query: Query) -> Page: ...
    async def counts(self, *, status: str | None = "held") -> dict[str, int]: ...
    async def oldest_held(self) -> float | None: ...
    async def stats(self, *, since: float) -> dict[str, object]: ...
    # release state machine
    async def claim(self, item_id: str, by: str) -> HeldItem | None: ...
    async def finish_release(self, item_id: str, by: str, delivered_to: list[str]) -> HeldItem: ...
    async def unclaim(self, item_id: str, error: str) -> None: ...
    async def recover_stuck(self, older_than: float) -> list[str]: ...
    async def delete(self, item_id: str, by: str) -> bool: ...
    async def set_legal_hold(self, item_id: str, on: bool) -> bool: ...
    async def update_extra(self, item_id: str, values: dict) -> None: ...
    async def record_rescan(self, item_id: str, findings: Sequence[Finding], extra: dict | None = None) -> None: ...
    async def approve(self, item_id: str, reviewer: str, reason: str) -> list[str]: ...
    async def approvals(self, item_id: str) -> list[tuple[str, float, str]]: ...
    async def clear_approvals(self, item_id: str) -> None: ...
    async def purge(self, before: float) -> int: ...
    # audit, append-only
    async def audit(self, actor: str, action: str, held_id: str | None = None, reason: str = "",
                    detail: dict | None = None) -> None: ...
    async def audit_log(self, *, held_id: str | None = None, limit: int = 200, offset: int = 0,
                        actor: str | None = None, action: str | None = None, since: float | None = None,
                        until: float | None = None) -> list[AuditEntry]: ...
    async def audit_count(self, *, held_id: str | None = None, actor: str | None = None, action: str | None = None,
                          since: float | None = None, until: float | None = None) -> int: ...
    async def audit_actions(self) -> list[str]: ...
    async def choices(self, *, status: str | None = "held") -> dict[str, list[str]]: ...
    # accounts
    async def add_user(self, name: str, role: str, password_hash: str) -> None: ...
    async def set_password(self, name: str, password_hash: str) -> bool: ...
    async def end_sessions(self, name: str) -> bool: ...
    async def set_disabled(self, name: str, disabled: bool) -> bool: ...
    async def remove_user(self, name: str) -> bool: ...
    async def get_user(self, name: str) -> User | None: ...
    async def users(self) -> list[User]: ...
    async def add_token(self, token_id: str, user_name: str, token_hash: str) -> None: ...
    async def user_for_token(self, token_hash: str) -> User | None: ...
    async def tokens(self, user_name: str | None = None) -> list[Token]: ...
    async def revoke_token(self, token_id: str) -> bool: ...
    async def secret(self, key: str) -> str: ...
    async def letter_candidates(self, hashes: Sequence[int], *, since: float, min_shared: int,
                                limit: int = 8) -> list[StoredLetter]: ...
    async def letter_copied(self, letter_id: int) -> int: ...
    async def remember_letter(self, sketch: Sequence[int], subject: str, *, size: int, max_age: float) -> None: ...
    async def letter_count(self) -> int: ...
    # the notifier's outbox (gateway/notify/) and release requests
    async def enqueue(self, notices: Sequence[OutboxNotice]) -> None: ...
    async def claim_notices(self, by: str, *, limit: int, lease_seconds: float) -> list[OutboxRow]: ...
    async def notices_done(self, ids: Sequence[int], status: str) -> None: ...
    async def notices_retry(self, ids: Sequence[int], error: str, retry_at: float | None) -> None: ...
    async def outbox(self, *, status: str | None = None, held_id: str | None = None,
                     limit: int = 200) -> list[OutboxRow]: ...
    async def outbox_stats(self, alert_after: int) -> dict[str, int]: ...
    async def retry_failed_notices(self) -> int: ...
    async def request_release(self, item_id: str, address: str, justification: str) -> None: ...
    async def release_request(self, item_id: str) -> ReleaseRequest | None: ...
    async def open_requests(self, ids: Sequence[str]) -> set[str]: ...
    async def answer_request(self, item_id: str, by: str, answer: str) -> bool: ...


def open_store(url: str) -> Store:
    """`sqlite:///path` or `postgresql://user@host/db` -> an unopened Store."""
    if url.startswith("sqlite://"):
        from gateway.quarantine.sqlite import SqliteStore
        return SqliteStore(url.removeprefix("sqlite://"))
    if url.startswith(("postgresql://", "postgres://")):
        from gateway.quarantine.postgres import PostgresStore
        return PostgresStore(url)
    raise StoreError(f"unsupported quarantine url {url!r} (use sqlite:///path or postgresql://user@host/db)")
