"""Versioned schema migrations for both backends.

A migration is a list of statements applied in one transaction together with its row in
`schema_version`; a store runs the ones it has not seen at open. Never edit a shipped migration:
add the next one. The two dialects differ only in types, the sequence and the trigger syntax.
"""

from __future__ import annotations

_HELD_V1 = """
    CREATE TABLE held (
        id TEXT PRIMARY KEY,
        received_at {real} NOT NULL,
        direction TEXT NOT NULL,
        client_address TEXT NOT NULL,
        helo TEXT NOT NULL,
        mail_from TEXT NOT NULL,
        rcpt_tos TEXT NOT NULL,
        subject TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        rule TEXT NOT NULL,
        action TEXT NOT NULL,
        findings TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'held',
        legal_hold INTEGER NOT NULL DEFAULT 0,
        extra TEXT NOT NULL DEFAULT '{{}}',
        raw {blob}
    )"""


def _v2(real: str, serial: str) -> list[str]:
    return [
        # release bookkeeping on the item itself
        f"ALTER TABLE held ADD COLUMN claimed_at {real}",
        "ALTER TABLE held ADD COLUMN claimed_by TEXT",
        "ALTER TABLE held ADD COLUMN error TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE held ADD COLUMN released_to TEXT NOT NULL DEFAULT '[]'",
        f"ALTER TABLE held ADD COLUMN decided_at {real}",
        "ALTER TABLE held ADD COLUMN decided_by TEXT NOT NULL DEFAULT ''",
        f"ALTER TABLE held ADD COLUMN purged_at {real}",
        # one row per finding category, for the category filter and the counts
        "CREATE TABLE held_category (held_id TEXT NOT NULL REFERENCES held(id), category TEXT NOT NULL, "
        "PRIMARY KEY (held_id, category))",
        "CREATE INDEX held_category_category ON held_category (category)",
        "CREATE INDEX held_received ON held (received_at)",
        "CREATE INDEX held_rule ON held (rule)",
        # two-person release: one row per distinct approver
        "CREATE TABLE approval (held_id TEXT NOT NULL REFERENCES held(id), reviewer TEXT NOT NULL, "
        f"at {real} NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (held_id, reviewer))",
        # the append-only audit log
        f"CREATE TABLE audit (id {serial} PRIMARY KEY, at {real} NOT NULL, actor TEXT NOT NULL, "
        "action TEXT NOT NULL, held_id TEXT, reason TEXT NOT NULL DEFAULT '', "
        "detail TEXT NOT NULL DEFAULT '{}')",
        "CREATE INDEX audit_held ON audit (held_id, at)",
        "CREATE TABLE users (name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL, "
        f"created_at {real} NOT NULL, disabled INTEGER NOT NULL DEFAULT 0)",
        "CREATE TABLE tokens (id TEXT PRIMARY KEY, user_name TEXT NOT NULL REFERENCES users(name), "
        f"token_hash TEXT NOT NULL UNIQUE, created_at {real} NOT NULL, revoked_at {real})",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ]


def _v3(real: str, serial: str) -> list[str]:
    return [
        # the notifier's durable outbox: rows written in the hold's own transaction (docs/notifications.md)
        f"CREATE TABLE outbox (id {serial} PRIMARY KEY, held_id TEXT, recipient TEXT NOT NULL, role TEXT NOT NULL, "
        "template TEXT NOT NULL, digest TEXT NOT NULL DEFAULT '', context TEXT NOT NULL DEFAULT '{}', "
        f"created_at {real} NOT NULL, due_at {real} NOT NULL, status TEXT NOT NULL DEFAULT 'pending', "
        f"attempts INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '', claimed_at {real}, claimed_by TEXT, "
        f"sent_at {real})",
        "CREATE INDEX outbox_status_due ON outbox (status, due_at)",
        "CREATE INDEX outbox_held ON outbox (held_id)",
        # a sender's request for release, with the business justification, until a reviewer answers it
        "CREATE TABLE release_request (held_id TEXT PRIMARY KEY REFERENCES held(id), address TEXT NOT NULL, "
        f"justification TEXT NOT NULL, at {real} NOT NULL, answered_at {real}, answered_by TEXT, "
        "answer TEXT NOT NULL DEFAULT '')",
    ]


def _v4() -> list[str]:
    return [
        # A random value per account, replaced whenever its sessions must end (logout, password change,
        # disable); a session cookie carries the value it was issued with. Rows made before this get one
        # in the backfill that runs with this migration.
        "ALTER TABLE users ADD COLUMN session_epoch TEXT NOT NULL DEFAULT ''",
    ]


def _v5(real: str, serial: str) -> list[str]:
    return [
        # what re-scans found (every one, deduplicated): the role a release needs counts them too
        "ALTER TABLE held ADD COLUMN rescan_findings TEXT NOT NULL DEFAULT '[]'",
        # our Authentication-Results value at receipt: written again on release (the checks do not re-run)
        "ALTER TABLE held ADD COLUMN auth_results TEXT NOT NULL DEFAULT ''",
    ]


def _v6(real: str, serial: str) -> list[str]:
    return [
        # the chain-letter detector's memory, shared by every worker and node: a letter's bottom-k sketch
        # (space-separated hashes) and an inverted index from each hash to the letters that have it
        f"CREATE TABLE letter (id {serial} PRIMARY KEY, sketch TEXT NOT NULL, subject TEXT NOT NULL, "
        f"first_seen {real} NOT NULL, last_seen {real} NOT NULL, copies INTEGER NOT NULL DEFAULT 1)",
        "CREATE INDEX letter_first_seen ON letter (first_seen)",
        "CREATE INDEX letter_last_seen ON letter (last_seen)",
        "CREATE TABLE letter_hash (hash BIGINT NOT NULL, "
        "letter_id BIGINT NOT NULL REFERENCES letter(id) ON DELETE CASCADE, PRIMARY KEY (hash, letter_id))",
        "CREATE INDEX letter_hash_letter ON letter_hash (letter_id)",
    ]


SQLITE: list[list[str]] = [
    [_HELD_V1.format(real="REAL", blob="BLOB"),
     "CREATE INDEX held_status_received ON held (status, received_at)"],
    [*_v2("REAL", "INTEGER"),
     "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN "
     "SELECT RAISE(ABORT, 'the audit log is append-only'); END",
     "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN "
     "SELECT RAISE(ABORT, 'the audit log is append-only'); END"],
    _v3("REAL", "INTEGER"),
    _v4(),
    _v5("REAL", "INTEGER"),
    _v6("REAL", "INTEGER"),
]

POSTGRES: list[list[str]] = [
    [_HELD_V1.format(real="DOUBLE PRECISION", blob="BYTEA"),
     "CREATE INDEX held_status_received ON held (status, received_at)"],
    [*_v2("DOUBLE PRECISION", "BIGSERIAL"),
     "CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
     "$$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
     "CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE OR TRUNCATE ON audit "
     "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()"],
    _v3("DOUBLE PRECISION", "BIGSERIAL"),
    _v4(),
    _v5("DOUBLE PRECISION", "BIGSERIAL"),
    _v6("DOUBLE PRECISION", "BIGSERIAL"),
]
