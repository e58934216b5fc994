"""The Store in SQL, shared by the SQLite and PostgreSQL backends.

A backend gives `_tx()`: an async context manager yielding a connection with `fetch(sql, *args)` and
`execute(sql, *args)` inside one transaction. SQL is written once with `?` placeholders (the
PostgreSQL backend numbers them); every value is a bound parameter, and the only text put into a
statement is chosen from fixed tables here (column names, sort keys, filter clauses).
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from gateway.model import Finding
from gateway.quarantine import (
    SORTS,
    AuditEntry,
    HeldItem,
    OutboxNotice,
    OutboxRow,
    Page,
    Query,
    ReleaseRequest,
    StoredLetter,
    StoreError,
    Token,
    User,
    findings_from_json,
    findings_json,
)

COLUMNS = ("id, received_at, direction, client_address, helo, mail_from, rcpt_tos, subject, size, sha256, "
           "rule, action, findings, status, legal_hold, extra, error, released_to, claimed_at, claimed_by, "
           "decided_at, decided_by, purged_at, rescan_findings, auth_results")
_N_COLUMNS = len(COLUMNS.split(","))


class Conn(Protocol):
    async def fetch(self, sql: str, *args: Any) -> list[Any]: ...
    async def execute(self, sql: str, *args: Any) -> None: ...


def like(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its wildcards escaped (used with ESCAPE '\\')."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


SEARCHED = ("mail_from", "rcpt_tos", "subject", "findings", "rescan_findings")


def where(query: Query) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    category = query.category
    kinds = [k for k in (query.kind, category if category and "." in category else None) if k]
    if category and "." in category:            # "pii.ssn" in the category box means the kind
        category = None
    simple = (("status = ?", query.status), ("direction = ?", query.direction),
              ("id IN (SELECT held_id FROM held_category WHERE category = ?)", category))
    for clause, value in simple:
        if value:
            clauses.append(clause)
            args.append(value)
    for kind in kinds:          # findings are stored as JSON written by findings_json: '"kind": "pii.ssn"'
        clauses.append("(LOWER(findings) LIKE ? ESCAPE '\\' OR LOWER(rescan_findings) LIKE ? ESCAPE '\\')")
        args += [like(json.dumps({"kind": kind})[1:-1])] * 2
    for clause, value in (("LOWER(mail_from) LIKE ? ESCAPE '\\'", query.sender),
                          ("LOWER(rcpt_tos) LIKE ? ESCAPE '\\'", query.recipient),
                          ("LOWER(subject) LIKE ? ESCAPE '\\'", query.text),
                          ("LOWER(rule) LIKE ? ESCAPE '\\'", query.rule)):
        if value:
            clauses.append(clause)
            args.append(like(value))
    if query.search:
        clauses.append("(" + " OR ".join(f"LOWER({c}) LIKE ? ESCAPE '\\'" for c in SEARCHED) + ")")
        args += [like(query.search)] * len(SEARCHED)
    if query.requested:
        clauses.append("id IN (SELECT held_id FROM release_request WHERE answered_at IS NULL)")
    if query.since is not None:
        clauses.append("received_at >= ?")
        args.append(float(query.since))
    if query.until is not None:
        clauses.append("received_at < ?")
        args.append(float(query.until))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


class SqlStore:
    """Everything but the connection: subclasses implement `_tx`, `open` and `close`."""

    def _tx(self) -> AbstractAsyncContextManager[Conn]:
        raise NotImplementedError

    def _read(self) -> AbstractAsyncContextManager[Conn]:
        """A transaction that only reads (SQLite: without taking the write lock across processes)."""
        return self._tx()

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._tx() as conn:
            return await conn.fetch(sql, *args)

    async def _backfill_categories(self, conn: Conn) -> None:
        """Items held before the categories table existed get their rows (migration 2)."""
        for held_id, findings in await conn.fetch(
                "SELECT id, findings FROM held WHERE id NOT IN (SELECT held_id FROM held_category)"):
            for category in dict.fromkeys(f.category for f in findings_from_json(findings)):
                await conn.execute("INSERT INTO held_category (held_id, category) VALUES (?, ?)", held_id, category)

    async def _backfill_session_epochs(self, conn: Conn) -> None:
        """Accounts made before sessions had epochs get one (migration 4)."""
        for (name,) in await conn.fetch("SELECT name FROM users WHERE session_epoch = ''"):
            await conn.execute("UPDATE users SET session_epoch = ? WHERE name = ?", _epoch(), name)

    # --- held items ---------------------------------------------------------------------------------

    async def hold(self, item: HeldItem, notices: Sequence[OutboxNotice] = ()) -> None:
        """The item, its categories and its notices (the outbox rows) in one transaction."""
        try:
            async with self._tx() as conn:
                await conn.execute(
                    f"INSERT INTO held ({COLUMNS}, raw) VALUES ({', '.join('?' * (_N_COLUMNS + 1))})",
                    *_values(item), item.raw)
                for category in item.categories:
                    await conn.execute("INSERT INTO held_category (held_id, category) VALUES (?, ?)",
                                       item.id, category)
                await _insert_notices(conn, notices)
        except StoreError:
            raise
        except Exception as e:      # any driver error: the caller answers 451
            raise StoreError(f"quarantine write failed: {e}") from e

    async def get(self, item_id: str, *, with_raw: bool = True) -> HeldItem | None:
        raw_col = ", raw" if with_raw else ""
        rows = await self._fetch(f"SELECT {COLUMNS}{raw_col} FROM held WHERE id = ?", item_id)
        return _item(rows[0], with_raw) if rows else None

    async def list(self, *, status: str | None = None, limit: int = 1000) -> list[HeldItem]:
        return (await self.query(Query(status=status, limit=limit))).items

    async def query(self, query: Query) -> Page:
        clause, args = where(query)
        column = SORTS.get(query.sort, "received_at")
        order = "DESC" if query.descending else "ASC"
        limit = max(1, min(int(query.limit), 10000))
        offset = max(0, int(query.offset))
        async with self._tx() as conn:
            total = (await conn.fetch(f"SELECT COUNT(*) FROM held{clause}", *args))[0][0]
            rows = await conn.fetch(f"SELECT {COLUMNS} FROM held{clause} ORDER BY {column} {order}, id {order} "
                                    f"LIMIT ? OFFSET ?", *args, limit, offset)
        return Page([_item(r, False) for r in rows], int(total))

    async def counts(self, *, status: str | None = "held") -> dict[str, int]:
        if status:
            rows = await self._fetch("SELECT c.category, COUNT(*) FROM held_category c JOIN held h ON h.id = c.held_id "
                                     "WHERE h.status = ? GROUP BY c.category ORDER BY c.category", status)
        else:
            rows = await self._fetch("SELECT category, COUNT(*) FROM held_category GROUP BY category "
                                     "ORDER BY category")
        return {r[0]: int(r[1]) for r in rows}

    async def held_summary(self) -> tuple[int, float | None]:
        """(items held now, received_at of the oldest of them): for /metrics and /healthz."""
        rows = await self._fetch("SELECT COUNT(*), MIN(received_at) FROM held WHERE status = 'held'")
        count, oldest = rows[0] if rows else (0, None)
        return int(count), (float(oldest) if oldest is not None else None)

    async def oldest_held(self) -> float | None:
        rows = await self._fetch("SELECT MIN(received_at) FROM held WHERE status = 'held'")
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    async def stats(self, *, since: float) -> dict[str, object]:
        """For the dashboard: held per category per day, top rules and senders, release rate per rule."""
        async with self._tx() as conn:
            per_day_rows = await conn.fetch(
                "SELECT h.received_at, c.category FROM held h JOIN held_category c ON c.held_id = h.id "
                "WHERE h.received_at >= ?", float(since))
            rules = await conn.fetch("SELECT rule, status, COUNT(*) FROM held WHERE received_at >= ? "
                                     "GROUP BY rule, status", float(since))
            senders = await conn.fetch("SELECT mail_from, COUNT(*) AS n FROM held WHERE received_at >= ? "
                                       "GROUP BY mail_from ORDER BY n DESC, mail_from LIMIT 10", float(since))
        per_day: dict[str, Counter[str]] = defaultdict(Counter)
        for received_at, category in per_day_rows:
            per_day[time.strftime("%Y-%m-%d", time.gmtime(received_at))][category] += 1
        by_rule: dict[str, Counter[str]] = defaultdict(Counter)
        for rule, status, n in rules:
            by_rule[rule][status] += int(n)
        rule_rows = []
        for rule, statuses in by_rule.items():
            decided = statuses["released"] + statuses["deleted"]
            rule_rows.append({"rule": rule, "total": sum(statuses.values()), "released": statuses["released"],
                              "deleted": statuses["deleted"],
                              "release_rate": statuses["released"] / decided if decided else None})
        rule_rows.sort(key=lambda r: (-r["total"], r["rule"]))
        return {"per_day": {d: dict(c) for d, c in sorted(per_day.items())}, "rules": rule_rows,
                "senders": [(r[0], int(r[1])) for r in senders]}

    # --- the release state machine -------------------------------------------------------------------

    async def claim(self, item_id: str, by: str) -> HeldItem | None:
        """held -> releasing, atomically: of concurrent callers (any process, any node) one wins."""
        async with self._tx() as conn:
            won = await conn.fetch("UPDATE held SET status = 'releasing', claimed_at = ?, claimed_by = ? "
                                   "WHERE id = ? AND status = 'held' RETURNING id", time.time(), by, item_id)
            if not won:
                return None
            rows = await conn.fetch(f"SELECT {COLUMNS}, raw FROM held WHERE id = ?", item_id)
        return _item(rows[0], True)

    async def finish_release(self, item_id: str, by: str, delivered_to: list[str]) -> HeldItem:
        """releasing -> released when every recipient has it, else back to held for the rest."""
        async with self._tx() as conn:
            rows = await conn.fetch("SELECT rcpt_tos, released_to FROM held WHERE id = ? AND status = 'releasing'",
                                    item_id)
            if not rows:
                raise StoreError(f"{item_id} is not being released")
            rcpts, done = json.loads(rows[0][0]), json.loads(rows[0][1])
            done = [*done, *(r for r in delivered_to if r not in done)]
            status = "released" if all(r in done for r in rcpts) else "held"
            await conn.execute("UPDATE held SET status = ?, released_to = ?, decided_at = ?, decided_by = ?, "
                               "error = '', claimed_at = NULL, claimed_by = NULL WHERE id = ?",
                               status, json.dumps(done), time.time(), by, item_id)
            if status == "released":
                await conn.execute("DELETE FROM approval WHERE held_id = ?", item_id)
        item = await self.get(item_id, with_raw=False)
        assert item
        return item

    async def unclaim(self, item_id: str, error: str) -> None:
        """releasing -> held, with the error the reviewer will see."""
        await self._fetch("UPDATE held SET status = 'held', error = ?, claimed_at = NULL, claimed_by = NULL "
                          "WHERE id = ? AND status = 'releasing' RETURNING id", error[:2000], item_id)

    async def recover_stuck(self, older_than: float) -> list[str]:
        """Items a crashed release left in `releasing` since before `older_than` go back to held."""
        rows = await self._fetch(
            "UPDATE held SET status = 'held', error = ?, claimed_at = NULL, claimed_by = NULL "
            "WHERE status = 'releasing' AND claimed_at < ? RETURNING id",
            "An interrupted release was recovered; check the recipients before releasing again", float(older_than))
        return sorted(r[0] for r in rows)

    async def delete(self, item_id: str, by: str) -> bool:
        rows = await self._fetch("UPDATE held SET status = 'deleted', decided_at = ?, decided_by = ? "
                                 "WHERE id = ? AND status = 'held' RETURNING id", time.time(), by, item_id)
        return bool(rows)

    async def set_legal_hold(self, item_id: str, on: bool) -> bool:
        rows = await self._fetch("UPDATE held SET legal_hold = ? WHERE id = ? RETURNING id", int(on), item_id)
        return bool(rows)

    async def update_extra(self, item_id: str, values: dict) -> None:
        async with self._tx() as conn:
            rows = await conn.fetch("SELECT extra FROM held WHERE id = ?", item_id)
            if rows:
                extra = {**json.loads(rows[0][0] or "{}"), **values}
                await conn.execute("UPDATE held SET extra = ? WHERE id = ?", json.dumps(extra), item_id)

    async def record_rescan(self, item_id: str, findings: Sequence[Finding], extra: dict | None = None) -> None:
        """Add what a re-scan found to the item's recorded findings (and its categories), with `extra`."""
        async with self._tx() as conn:
            await _record_findings(conn, item_id, findings)
            if extra:
                rows = await conn.fetch("SELECT extra FROM held WHERE id = ?", item_id)
                if rows:
                    await conn.execute("UPDATE held SET extra = ? WHERE id = ?",
                                       json.dumps({**json.loads(rows[0][0] or "{}"), **extra}), item_id)

    async def _backfill_rescans(self, conn: Conn) -> None:
        """Items re-scanned before the re-scan's findings were recorded get those of their last re-scan."""
        for held_id, extra in await conn.fetch("SELECT id, extra FROM held WHERE extra LIKE ?", '%"rescan"%'):
            try:
                found = json.loads(extra or "{}").get("rescan", {}).get("findings", [])
                findings = [Finding.from_dict(d) for d in found]
            except (ValueError, TypeError, KeyError, AttributeError):
                continue
            await _record_findings(conn, held_id, findings)

    async def approve(self, item_id: str, reviewer: str, reason: str) -> list[str]:
        """Record one reviewer's approval (once per reviewer); returns every approver so far."""
        async with self._tx() as conn:
            await conn.execute("INSERT INTO approval (held_id, reviewer, at, reason) VALUES (?, ?, ?, ?) "
                               "ON CONFLICT (held_id, reviewer) DO NOTHING", item_id, reviewer, time.time(), reason)
            rows = await conn.fetch("SELECT reviewer FROM approval WHERE held_id = ? ORDER BY at", item_id)
        return [r[0] for r in rows]

    async def approvals(self, item_id: str) -> list[tuple[str, float, str]]:
        rows = await self._fetch("SELECT reviewer, at, reason FROM approval WHERE held_id = ? ORDER BY at", item_id)
        return [(r[0], float(r[1]), r[2]) for r in rows]

    async def clear_approvals(self, item_id: str) -> None:
        await self._fetch("DELETE FROM approval WHERE held_id = ? RETURNING held_id", item_id)

    async def purge(self, before: float) -> int:
        """Remove the raw content of items received before `before`, except on legal hold."""
        now = time.time()
        rows = await self._fetch(
            "UPDATE held SET raw = NULL, purged_at = ?, "
            "status = CASE WHEN status = 'held' THEN 'expired' ELSE status END "
            "WHERE received_at < ? AND legal_hold = 0 AND raw IS NOT NULL AND status <> 'releasing' RETURNING id",
            now, float(before))
        return len(rows)

    # --- audit ---------------------------------------------------------------------------------------

    async def audit(self, actor: str, action: str, held_id: str | None = None, reason: str = "",
                    detail: dict | None = None) -> None:
        await self._fetch("INSERT INTO audit (at, actor, action, held_id, reason, detail) VALUES (?, ?, ?, ?, ?, ?) "
                          "RETURNING id", time.time(), actor[:200], action, held_id, reason[:4000],
                          json.dumps(detail or {}))

    async def audit_log(self, *, held_id: str | None = None, limit: int = 200, offset: int = 0,
                        actor: str | None = None, action: str | None = None, since: float | None = None,
                        until: float | None = None) -> list[AuditEntry]:
        """Newest first; actor is a case-insensitive substring, the rest exact."""
        clause, args = _audit_where(held_id, actor, action, since, until)
        rows = await self._fetch(f"SELECT id, at, actor, action, held_id, reason, detail FROM audit{clause} "
                                 "ORDER BY id DESC LIMIT ? OFFSET ?", *args, int(limit), max(0, int(offset)))
        return [AuditEntry(int(r[0]), float(r[1]), r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    async def audit_count(self, *, held_id: str | None = None, actor: str | None = None, action: str | None = None,
                          since: float | None = None, until: float | None = None) -> int:
        clause, args = _audit_where(held_id, actor, action, since, until)
        return int((await self._fetch(f"SELECT COUNT(*) FROM audit{clause}", *args))[0][0])

    async def audit_actions(self) -> list[str]:
        return [r[0] for r in await self._fetch("SELECT DISTINCT action FROM audit ORDER BY action")]

    async def choices(self, *, status: str | None = "held") -> dict[str, list[str]]:
        """The categories, kinds and rules of what is held now: the queue's filter choices."""
        clause, args = (" WHERE status = ?", [status]) if status else ("", [])
        rows = await self._fetch(f"SELECT rule, findings, rescan_findings FROM held{clause} "
                                 "ORDER BY received_at DESC LIMIT 5000", *args)
        rules, kinds = set(), set()
        for rule, findings, rescan in rows:
            rules.add(rule)
            kinds.update(f.kind for f in (*findings_from_json(findings), *findings_from_json(rescan)))
        return {"categories": sorted({k.split(".", 1)[0] for k in kinds}), "kinds": sorted(kinds),
                "rules": sorted(rules)}

    # --- accounts ------------------------------------------------------------------------------------

    async def add_user(self, name: str, role: str, password_hash: str) -> None:
        try:
            await self._fetch("INSERT INTO users (name, role, password_hash, created_at, session_epoch) "
                              "VALUES (?, ?, ?, ?, ?) RETURNING name", name, role, password_hash, time.time(),
                              _epoch())
        except Exception as e:
            raise StoreError(f"cannot add user {name!r}: {e}") from e

    async def set_password(self, name: str, password_hash: str) -> bool:
        """A new password hash; the account's sessions end with the old password."""
        rows = await self._fetch("UPDATE users SET password_hash = ?, session_epoch = ? WHERE name = ? RETURNING name",
                                 password_hash, _epoch(), name)
        return bool(rows)

    async def end_sessions(self, name: str) -> bool:
        """Every session cookie of this account stops working (they carry the epoch they were issued with)."""
        rows = await self._fetch("UPDATE users SET session_epoch = ? WHERE name = ? RETURNING name", _epoch(), name)
        return bool(rows)

    async def set_disabled(self, name: str, disabled: bool) -> bool:
        """Disable (its sessions end, its tokens are refused while disabled, its pending approvals of
        two-person releases are withdrawn) or enable an account."""
        async with self._tx() as conn:
            if not disabled:
                return bool(await conn.fetch("UPDATE users SET disabled = 0 WHERE name = ? RETURNING name", name))
            rows = await conn.fetch("UPDATE users SET disabled = 1, session_epoch = ? WHERE name = ? RETURNING name",
                                    _epoch(), name)
            if rows:
                await _withdraw_approvals(conn, name)
        return bool(rows)

    async def remove_user(self, name: str) -> bool:
        """The account, its API tokens and its pending approvals; the audit log keeps what it did."""
        async with self._tx() as conn:
            await conn.execute("DELETE FROM tokens WHERE user_name = ?", name)
            rows = await conn.fetch("DELETE FROM users WHERE name = ? RETURNING name", name)
            if rows:
                await _withdraw_approvals(conn, name)
        return bool(rows)

    async def get_user(self, name: str) -> User | None:
        rows = await self._fetch(f"SELECT {USER_COLUMNS} FROM users WHERE name = ?", name)
        return _user(rows[0]) if rows else None

    async def users(self) -> list[User]:
        rows = await self._fetch(f"SELECT {USER_COLUMNS} FROM users ORDER BY name")
        return [_user(r) for r in rows]

    async def add_token(self, token_id: str, user_name: str, token_hash: str) -> None:
        await self._fetch("INSERT INTO tokens (id, user_name, token_hash, created_at) VALUES (?, ?, ?, ?) "
                          "RETURNING id", token_id, user_name, token_hash, time.time())

    async def user_for_token(self, token_hash: str) -> User | None:
        rows = await self._fetch(
            "SELECT u.name, u.role, u.password_hash, u.created_at, u.disabled, u.session_epoch FROM tokens t "
            "JOIN users u ON u.name = t.user_name WHERE t.token_hash = ? AND t.revoked_at IS NULL", token_hash)
        return _user(rows[0]) if rows else None

    async def tokens(self, user_name: str | None = None) -> list[Token]:
        if user_name is None:
            rows = await self._fetch("SELECT id, user_name, created_at, revoked_at FROM tokens ORDER BY created_at")
        else:
            rows = await self._fetch("SELECT id, user_name, created_at, revoked_at FROM tokens WHERE user_name = ? "
                                     "ORDER BY created_at", user_name)
        return [Token(r[0], r[1], float(r[2]), None if r[3] is None else float(r[3])) for r in rows]

    async def revoke_token(self, token_id: str) -> bool:
        rows = await self._fetch("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL RETURNING id",
                                 time.time(), token_id)
        return bool(rows)

    async def secret(self, key: str) -> str:
        """A random secret shared by every node on this store (e.g. the review app's cookie key)."""
        async with self._tx() as conn:
            await conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                               key, secrets.token_urlsafe(48))
            return (await conn.fetch("SELECT value FROM meta WHERE key = ?", key))[0][0]

    # --- the chain-letter memory (gateway/detectors/chain_letter.py) ------------------------------------

    async def letter_candidates(self, hashes: Sequence[int], *, since: float, min_shared: int,
                                limit: int = 8) -> list[StoredLetter]:
        """Letters first seen since `since` sharing at least `min_shared` of these sketch hashes, most
        shared first: the few worth comparing in full."""
        if not hashes:
            return []
        marks = ", ".join("?" * len(hashes))
        async with self._read() as conn:
            rows = await conn.fetch(
                "SELECT l.id, l.sketch, l.subject, l.first_seen, l.copies, COUNT(*) FROM letter_hash h "
                f"JOIN letter l ON l.id = h.letter_id WHERE h.hash IN ({marks}) AND l.first_seen >= ? "
                "GROUP BY l.id, l.sketch, l.subject, l.first_seen, l.copies HAVING COUNT(*) >= ? "
                "ORDER BY COUNT(*) DESC, l.id LIMIT ?", *map(int, hashes), float(since), min_shared, limit)
        return [StoredLetter(id=int(r[0]), sketch=tuple(int(h) for h in r[1].split()), subject=r[2],
                             first_seen=float(r[3]), copies=int(r[4])) for r in rows]

    async def letter_copied(self, letter_id: int) -> int:
        """One more copy of a remembered letter seen: its count, after."""
        async with self._tx() as conn:
            await conn.execute("UPDATE letter SET copies = copies + 1, last_seen = ? WHERE id = ?",
                               time.time(), letter_id)
            rows = await conn.fetch("SELECT copies FROM letter WHERE id = ?", letter_id)
        return int(rows[0][0]) if rows else 1

    async def remember_letter(self, sketch: Sequence[int], subject: str, *, size: int, max_age: float) -> None:
        """Remember a letter; then forget those first seen more than `max_age` seconds ago and, past
        `size` letters, the least recently seen."""
        now = time.time()
        async with self._tx() as conn:
            rows = await conn.fetch("INSERT INTO letter (sketch, subject, first_seen, last_seen, copies) "
                                    "VALUES (?, ?, ?, ?, 1) RETURNING id",
                                    " ".join(map(str, sketch)), subject[:80], now, now)
            letter_id = rows[0][0]
            for h in dict.fromkeys(sketch):
                await conn.execute("INSERT INTO letter_hash (hash, letter_id) VALUES (?, ?)", int(h), letter_id)
            await conn.execute("DELETE FROM letter WHERE first_seen < ?", now - max_age)
            await conn.execute("DELETE FROM letter WHERE id NOT IN "
                               "(SELECT id FROM letter ORDER BY last_seen DESC, id DESC LIMIT ?)", size)

    async def letter_count(self) -> int:
        async with self._tx() as conn:
            return int((await conn.fetch("SELECT COUNT(*) FROM letter"))[0][0])


    # --- the notifier's outbox --------------------------------------------------------------------------

    async def enqueue(self, notices: Sequence[OutboxNotice]) -> None:
        if notices:
            async with self._tx() as conn:
                await _insert_notices(conn, notices)

    async def claim_notices(self, by: str, *, limit: int, lease_seconds: float) -> list[OutboxRow]:
        """Due notices -> sending, atomically: of several notifiers (processes, nodes) each row goes to one.

        PostgreSQL: FOR UPDATE SKIP LOCKED, so concurrent claimers take disjoint rows without waiting;
        SQLite: BEGIN IMMEDIATE serialises the claimers. A row claimed longer than the lease ago (its
        notifier died) is due again."""
        now = time.time()
        lock = " FOR UPDATE SKIP LOCKED" if getattr(self, "dialect", "") == "postgresql" else ""
        async with self._tx() as conn:
            await conn.execute("UPDATE outbox SET status = 'pending', claimed_at = NULL, claimed_by = NULL "
                               "WHERE status = 'sending' AND claimed_at < ?", now - lease_seconds)
            rows = await conn.fetch(
                f"UPDATE outbox SET status = 'sending', claimed_at = ?, claimed_by = ? WHERE id IN "
                f"(SELECT id FROM outbox WHERE status = 'pending' AND due_at <= ? ORDER BY due_at, recipient, id "
                f"LIMIT ?{lock}) RETURNING {OUTBOX_COLUMNS}", now, by[:200], now, int(limit))
        return sorted((_outbox_row(r) for r in rows), key=lambda r: r.id)

    async def notices_done(self, ids: Sequence[int], status: str) -> None:
        """sending -> sent (the next hop accepted it) or skipped (nothing left to say)."""
        assert status in ("sent", "skipped")
        async with self._tx() as conn:
            for notice_id in ids:
                await conn.execute("UPDATE outbox SET status = ?, sent_at = ?, claimed_at = NULL, claimed_by = NULL, "
                                   "attempts = attempts + ? WHERE id = ?", status, time.time(),
                                   int(status == "sent"), int(notice_id))

    async def notices_retry(self, ids: Sequence[int], error: str, retry_at: float | None) -> None:
        """A failed attempt: pending again from `retry_at`, or failed for good when it is None."""
        async with self._tx() as conn:
            for notice_id in ids:
                await conn.execute(
                    "UPDATE outbox SET status = ?, due_at = COALESCE(?, due_at), error = ?, attempts = attempts + 1, "
                    "claimed_at = NULL, claimed_by = NULL WHERE id = ?",
                    "pending" if retry_at is not None else "failed", retry_at, error[:1000], int(notice_id))

    async def outbox(self, *, status: str | None = None, held_id: str | None = None,
                     limit: int = 200) -> list[OutboxRow]:
        clauses, args = [], []
        for column, value in (("status", status), ("held_id", held_id)):
            if value:
                clauses.append(f"{column} = ?")
                args.append(value)
        clause = " WHERE " + " AND ".join(clauses) if clauses else ""
        rows = await self._fetch(f"SELECT {OUTBOX_COLUMNS} FROM outbox{clause} ORDER BY id DESC LIMIT ?",
                                 *args, int(limit))
        return [_outbox_row(r) for r in rows]

    async def outbox_stats(self, alert_after: int) -> dict[str, int]:
        """pending (waiting, digests included), failing (still retried, but `alert_after` attempts failed),
        failed (given up): failing + failed is the alert."""
        rows = await self._fetch("SELECT status, attempts, COUNT(*) FROM outbox "
                                 "WHERE status IN ('pending', 'sending', 'failed') GROUP BY status, attempts")
        stats = {"pending": 0, "failing": 0, "failed": 0}
        for status, attempts, n in rows:
            if status == "failed":
                stats["failed"] += int(n)
            else:
                stats["pending"] += int(n)
                if int(attempts) >= alert_after:
                    stats["failing"] += int(n)
        stats["alert"] = stats["failing"] + stats["failed"]
        return stats

    async def retry_failed_notices(self) -> int:
        """Given-up notices -> pending again, now (an admin fixed the cause)."""
        rows = await self._fetch("UPDATE outbox SET status = 'pending', attempts = 0, due_at = ? "
                                 "WHERE status = 'failed' RETURNING id", time.time())
        return len(rows)

    # --- release requests from senders ---------------------------------------------------------------

    async def request_release(self, item_id: str, address: str, justification: str) -> None:
        """The sender's request (a new one replaces an earlier one and is open again)."""
        async with self._tx() as conn:
            await conn.execute("DELETE FROM release_request WHERE held_id = ?", item_id)
            await conn.execute("INSERT INTO release_request (held_id, address, justification, at) VALUES (?, ?, ?, ?)",
                               item_id, address[:320], justification[:4000], time.time())

    async def release_request(self, item_id: str) -> ReleaseRequest | None:
        rows = await self._fetch("SELECT held_id, address, justification, at, answered_at, answered_by, answer "
                                 "FROM release_request WHERE held_id = ?", item_id)
        if not rows:
            return None
        r = rows[0]
        return ReleaseRequest(r[0], r[1], r[2], float(r[3]), None if r[4] is None else float(r[4]), r[5] or "",
                              r[6] or "")

    async def open_requests(self, ids: Sequence[str]) -> set[str]:
        ids = list(ids)[:1000]
        if not ids:
            return set()
        rows = await self._fetch(f"SELECT held_id FROM release_request WHERE answered_at IS NULL AND held_id IN "
                                 f"({', '.join('?' * len(ids))})", *ids)
        return {r[0] for r in rows}

    async def answer_request(self, item_id: str, by: str, answer: str) -> bool:
        rows = await self._fetch("UPDATE release_request SET answered_at = ?, answered_by = ?, answer = ? "
                                 "WHERE held_id = ? AND answered_at IS NULL RETURNING held_id",
                                 time.time(), by[:200], answer[:4000], item_id)
        return bool(rows)


def _audit_where(held_id: str | None, actor: str | None, action: str | None, since: float | None,
                 until: float | None) -> tuple[str, list[Any]]:
    clauses, args = [], []
    for clause, value in (("held_id = ?", held_id), ("action = ?", action), ("at >= ?", since), ("at < ?", until)):
        if value is not None and value != "":
            clauses.append(clause)
            args.append(value)
    if actor:
        clauses.append("LOWER(actor) LIKE ? ESCAPE '\\'")
        args.append(like(actor))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


async def _record_findings(conn: Conn, item_id: str, findings: Sequence[Finding]) -> None:
    rows = await conn.fetch("SELECT findings, rescan_findings FROM held WHERE id = ?", item_id)
    if not rows or not findings:
        return
    held, recorded = findings_from_json(rows[0][0]), findings_from_json(rows[0][1])
    merged = tuple(dict.fromkeys((*recorded, *findings)))
    if merged != recorded:
        await conn.execute("UPDATE held SET rescan_findings = ? WHERE id = ?", findings_json(merged), item_id)
    known = {f.category for f in (*held, *recorded)}
    for category in dict.fromkeys(f.category for f in findings if f.category not in known):
        await conn.execute("INSERT INTO held_category (held_id, category) VALUES (?, ?) "
                           "ON CONFLICT (held_id, category) DO NOTHING", item_id, category)


OUTBOX_COLUMNS = ("id, held_id, recipient, role, template, digest, context, created_at, due_at, status, attempts, "
                  "error, sent_at")


async def _insert_notices(conn: Conn, notices: Sequence[OutboxNotice]) -> None:
    now = time.time()
    for n in notices:
        await conn.execute("INSERT INTO outbox (held_id, recipient, role, template, digest, context, created_at, "
                           "due_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", n.held_id, n.recipient, n.role, n.template,
                           n.digest, json.dumps(n.context, default=str), now, float(n.due_at or now))


async def _withdraw_approvals(conn: Conn, name: str) -> None:
    """Approvals the account gave (in the app, or as `--by NAME` on the command line) that no release used yet."""
    await conn.execute("DELETE FROM approval WHERE reviewer = ? OR reviewer = ?", name, f"{name} (cli)")


def _outbox_row(row: Any) -> OutboxRow:
    return OutboxRow(id=int(row[0]), held_id=row[1], recipient=row[2], role=row[3], template=row[4], digest=row[5],
                     context=json.loads(row[6] or "{}"), created_at=float(row[7]), due_at=float(row[8]),
                     status=row[9], attempts=int(row[10]), error=row[11] or "",
                     sent_at=None if row[12] is None else float(row[12]))


def _values(item: HeldItem) -> tuple:
    return (item.id, float(item.received_at), item.direction, item.client_address, item.helo, item.mail_from,
            json.dumps(list(item.rcpt_tos)), item.subject, item.size, item.sha256, item.rule, item.action,
            findings_json(item.findings), item.status, int(item.legal_hold), json.dumps(item.extra), item.error,
            json.dumps(list(item.released_to)), item.claimed_at, item.claimed_by or None, item.decided_at,
            item.decided_by, item.purged_at, findings_json(item.rescan_findings), item.auth_results)


def _item(row: Any, with_raw: bool) -> HeldItem:
    raw = row[_N_COLUMNS] if with_raw else None
    return HeldItem(
        id=row[0], received_at=float(row[1]), direction=row[2], client_address=row[3], helo=row[4],
        mail_from=row[5], rcpt_tos=tuple(json.loads(row[6])), subject=row[7], size=int(row[8]), sha256=row[9],
        rule=row[10], action=row[11], findings=findings_from_json(row[12]), status=row[13],
        legal_hold=bool(row[14]), extra=json.loads(row[15] or "{}"), error=row[16] or "",
        released_to=tuple(json.loads(row[17] or "[]")), claimed_at=row[18], claimed_by=row[19] or "",
        decided_at=row[20], decided_by=row[21] or "", purged_at=row[22],
        rescan_findings=findings_from_json(row[23]), auth_results=row[24] or "",
        raw=bytes(raw) if raw is not None else None)


USER_COLUMNS = "name, role, password_hash, created_at, disabled, session_epoch"


def _epoch() -> str:
    return secrets.token_hex(16)


def _user(row: Any) -> User:
    return User(name=row[0], role=row[1], password_hash=row[2], created_at=float(row[3]), disabled=bool(row[4]),
                session_epoch=row[5] or "")
