"""The quarantine store and the release service, against BOTH backends (SQLite and the real PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from gateway import policy
from gateway.actions import Actions
from gateway.pipeline import Pipeline
from gateway.quarantine import Query, User
from gateway.release import Refused, ReleaseService
from tests.support.quarantine_fixtures import VIRUS, held_item, opened, store_url
from tests.support.settings import make_settings

BACKENDS = ["sqlite", "postgres"]
REVIEWER = User("rita", "reviewer")
REVIEWER2 = User("rolf", "reviewer")
ADMIN = User("ada", "admin")


@pytest.fixture(params=BACKENDS)
async def env(request, tmp_path, sink):
    async with contextlib.AsyncExitStack() as stack:
        url = await store_url(request.param, tmp_path, stack)
        settings = make_settings(tmp_path, sink.port, quarantine={"url": url})
        store = await opened(url)
        stack.push_async_callback(store.close)
        pipeline = Pipeline(settings, policy.load(settings))
        service = ReleaseService(settings, store, pipeline, Actions(settings, store))
        yield service


async def test_hold_get_roundtrip_and_migrations_are_versioned(env, tmp_path):
    store = env.store
    item = held_item(subject="Über naïve ☃")
    await store.hold(item)
    got = await store.get(item.id)
    assert got.raw == item.raw and got.subject == "Über naïve ☃" and got.findings == item.findings
    assert got.summary() == item.summary()
    assert (await store.get(item.id, with_raw=False)).raw is None
    # reopening runs no migration twice and keeps the data
    again = await opened(store.url if hasattr(store, "url") else f"sqlite:///{store.path}")
    try:
        assert (await again.get(item.id)).raw == item.raw
    finally:
        await again.close()


async def test_filters_sorting_pagination_counts_and_oldest(env):
    store = env.store
    now = time.time()
    items = [
        held_item(subject="Payroll file", kinds=("pii.ssn",), rule="outbound/pii", received_at=now - 3600),
        held_item(subject="Invoice 100%_off", kinds=("virus",), rule="inbound/malware", direction="inbound",
                  sender="eve@evil.example", rcpts=("carol@example.gov",), received_at=now - 7200),
        held_item(subject="Draft memo", kinds=("confidential.marking", "pii.card"), rule="outbound/confidential",
                  received_at=now - 60),
    ]
    for item in items:
        await store.hold(item)
    page = await store.query(Query())
    assert page.total == 3 and [i.subject for i in page.items] == ["Draft memo", "Payroll file", "Invoice 100%_off"]
    assert [i.subject for i in (await store.query(Query(category="pii"))).items] == ["Draft memo", "Payroll file"]
    assert [i.subject for i in (await store.query(Query(direction="inbound"))).items] == ["Invoice 100%_off"]
    assert (await store.query(Query(rule="outbound/pii"))).items[0].subject == "Payroll file"
    assert (await store.query(Query(sender="EVIL"))).items[0].subject == "Invoice 100%_off"
    assert (await store.query(Query(recipient="carol@"))).total == 1
    assert (await store.query(Query(text="100%_"))).total == 1          # wildcards are literal
    assert (await store.query(Query(text="%"))).total == 1
    assert (await store.query(Query(text="' OR 1=1 --"))).total == 0
    assert (await store.query(Query(since=now - 5000, until=now - 100))).items[0].subject == "Payroll file"
    asc = await store.query(Query(sort="subject", descending=False, limit=2, offset=1))
    assert asc.total == 3 and [i.subject for i in asc.items] == ["Invoice 100%_off", "Payroll file"]
    assert (await store.query(Query(sort="size; DROP TABLE held"))).total == 3   # unknown sort key: default
    assert await store.counts() == {"confidential": 1, "pii": 2, "virus": 1}
    assert abs(await store.oldest_held() - (now - 7200)) < 1
    stats = await store.stats(since=now - 86400)
    assert sum(sum(c.values()) for c in stats["per_day"].values()) == 4
    assert {r["rule"] for r in stats["rules"]} == {"outbound/pii", "inbound/malware", "outbound/confidential"}


async def test_release_delivers_with_original_envelope_through_the_live_path(env, sink):
    item = held_item(rcpts=("bob@example.org", "dan@example.org"))
    await env.store.hold(item)
    outcome = await env.release(item.id, REVIEWER, "False positive: test number")
    assert outcome.status == "released", outcome.message
    [got] = sink.messages
    assert got.mail_from == "alice@example.gov" and got.rcpt_tos == ["bob@example.org", "dan@example.org"]
    assert b"X-Gateway-Id: " + item.id.encode() in got.data and item.raw.split(b"\r\n\r\n", 1)[1] in got.data
    stored = await env.store.get(item.id, with_raw=False)
    assert stored.status == "released" and stored.decided_by == "rita"
    [entry] = [e for e in await env.store.audit_log(held_id=item.id) if e.action == "release"]
    assert entry.actor == "rita" and entry.reason == "False positive: test number"
    with pytest.raises(Refused, match="released, not held"):
        await env.release(item.id, REVIEWER, "again")
    assert len(sink.messages) == 1


async def test_concurrent_releases_deliver_exactly_once(env, sink):
    item = held_item()
    await env.store.hold(item)
    results = await asyncio.gather(*(env.release(item.id, user, "ok") for user in (REVIEWER, REVIEWER2, ADMIN)),
                                   return_exceptions=True)
    await sink.wait_for(1, timeout=2)
    await asyncio.sleep(0.2)
    assert len(sink.messages) == 1
    assert sum(1 for r in results if not isinstance(r, Exception) and r.status == "released") == 1
    assert all(isinstance(r, Refused) for r in results if isinstance(r, Exception))


async def test_two_stores_on_one_database_release_exactly_once(env, sink):
    """Two nodes: a second store on the same database, each releasing at once."""
    item = held_item()
    await env.store.hold(item)
    url = env.store.url if hasattr(env.store, "url") else f"sqlite:///{env.store.path}"
    other = await opened(url)
    try:
        node2 = ReleaseService(env.settings, other, env.pipeline, env.actions)
        results = await asyncio.gather(env.release(item.id, REVIEWER, "a"), node2.release(item.id, REVIEWER2, "b"),
                                       return_exceptions=True)
    finally:
        await other.close()
    await asyncio.sleep(0.2)
    assert len(sink.messages) == 1, results
    assert (await env.store.get(item.id, with_raw=False)).status == "released"


async def test_failed_delivery_goes_back_to_held_with_the_error(env, sink):
    item = held_item()
    await env.store.hold(item)
    sink.mode = "tempfail"
    outcome = await env.release(item.id, REVIEWER, "fp")
    assert outcome.status == "failed" and "451" in outcome.message
    stored = await env.store.get(item.id, with_raw=False)
    assert stored.status == "held" and "Sink says try later" in stored.error
    sink.mode = "accept"
    assert (await env.release(item.id, REVIEWER, "fp, retry")).status == "released"
    assert len(sink.messages) == 1
    actions = [e.action for e in await env.store.audit_log(held_id=item.id)]
    assert actions[:2] == ["release", "release-failed"]


async def test_crash_between_claim_and_delivery_is_recovered(env, sink):
    item = held_item()
    await env.store.hold(item)
    claimed = await env.store.claim(item.id, "rita")       # the node dies right here
    assert claimed.raw == item.raw
    with pytest.raises(Refused, match="releasing, not held"):
        await env.release(item.id, REVIEWER2, "meanwhile")
    assert await env.recover() == []                       # not yet stuck long enough
    object.__setattr__(env.settings.quarantine, "stuck_release_minutes", 0)
    assert await env.recover() == [item.id]
    stored = await env.store.get(item.id, with_raw=False)
    assert stored.status == "held" and "interrupted" in stored.error
    assert (await env.release(item.id, REVIEWER2, "after recovery")).status == "released"
    assert len(sink.messages) == 1


async def test_roles_reason_and_two_person_approval(env, sink):
    virus = held_item(kinds=("virus",), rule="inbound/malware")
    pii = held_item(approvals=2)
    await env.store.hold(virus)
    await env.store.hold(pii)
    with pytest.raises(Refused) as e:
        await env.release(virus.id, REVIEWER, "looks fine")
    assert e.value.status == 403
    with pytest.raises(Refused, match="reason"):
        await env.release(virus.id, ADMIN, "  ")
    with pytest.raises(Refused, match="confirm"):
        await env.release(virus.id, ADMIN, "sample for the AV vendor")
    assert (await env.release(virus.id, ADMIN, "sample for the AV vendor", confirm=VIRUS)).status == "released"
    first = await env.release(pii.id, REVIEWER, "customer asked")
    assert first.status == "approved" and sink.messages[1:] == []
    assert (await env.release(pii.id, REVIEWER, "me again")).status == "approved"   # same reviewer twice: still 1
    assert (await env.release(pii.id, REVIEWER2, "agreed")).status == "released"
    assert len(sink.messages) == 2


async def test_release_to_some_recipients_then_the_rest(env, sink):
    item = held_item(rcpts=("bob@example.org", "dan@example.org"))
    await env.store.hold(item)
    outcome = await env.release(item.id, REVIEWER, "bob only", ["bob@example.org"])
    assert outcome.status == "partly-released"
    assert (await env.store.get(item.id, with_raw=False)).status == "held"
    with pytest.raises(Refused, match="Not a recipient"):
        await env.release(item.id, REVIEWER, "x", ["mallory@example.org"])
    assert (await env.release(item.id, REVIEWER, "now dan")).status == "released"
    assert [m.rcpt_tos for m in sink.messages] == [["bob@example.org"], ["dan@example.org"]]


async def test_rescan_with_new_findings_stops_the_release_once(env, sink):
    # the message is malformed now (missing final boundary): the current policy finds malformed.*
    raw = (b"From: a@example.gov\r\nTo: b@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n")
    item = held_item(raw=raw, kinds=("pii.ssn",))
    await env.store.hold(item)
    outcome = await env.release(item.id, REVIEWER, "fp")
    assert outcome.status == "failed" and "new findings" in outcome.message
    assert any(k.startswith("malformed.") for k in outcome.rescan.added) and "pii.ssn" in outcome.rescan.removed
    assert sink.messages == [] and (await env.store.get(item.id, with_raw=False)).status == "held"
    assert (await env.release(item.id, REVIEWER, "seen the re-scan, still fine")).status == "released"


async def test_purge_keeps_legal_hold_metadata_and_audit(env):
    old = held_item(received_at=time.time() - 40 * 86400)
    kept = held_item(received_at=time.time() - 40 * 86400)
    new = held_item()
    for item in (old, kept, new):
        await env.store.hold(item)
    await env.legal_hold(kept.id, ADMIN, True, "litigation 2026-17")
    with pytest.raises(Refused) as e:
        await env.legal_hold(kept.id, REVIEWER, False, "x")
    assert e.value.status == 403
    await env.note(old.id, REVIEWER, "sender called")
    assert await env.purge() == 1
    purged = await env.store.get(old.id)
    assert purged.raw is None and purged.status == "expired" and purged.subject == old.subject
    assert (await env.store.get(kept.id)).raw == kept.raw and (await env.store.get(new.id)).raw == new.raw
    assert [e.action for e in await env.store.audit_log(held_id=old.id)] == ["note"]
    with pytest.raises(Refused, match="purged"):
        await env.rescan(purged)
    with pytest.raises(Refused, match="expired, not held"):
        await env.release(old.id, ADMIN, "too late")


async def test_delete_and_the_audit_log_is_append_only(env):
    item = held_item()
    await env.store.hold(item)
    assert (await env.delete(item.id, REVIEWER, "spam")).status == "deleted"
    with pytest.raises(Refused, match="deleted"):
        await env.delete(item.id, REVIEWER, "again")
    with pytest.raises(Refused, match="deleted, not held"):
        await env.release(item.id, ADMIN, "undo?")
    assert [e.action for e in await env.store.audit_log(held_id=item.id)] == ["delete"]
    for sql in ("UPDATE audit SET reason = 'x'", "DELETE FROM audit"):
        with pytest.raises(Exception, match="append-only"):
            async with env.store._tx() as conn:
                await conn.execute(sql)
    assert len(await env.store.audit_log()) == 1


async def test_users_and_tokens(env):
    store = env.store
    await store.add_user("rita", "reviewer", "$argon2id$fake")
    assert (await store.get_user("rita")).role == "reviewer"
    await store.add_token("t1", "rita", "h" * 64)
    assert (await store.user_for_token("h" * 64)).name == "rita"
    assert await store.revoke_token("t1") and not await store.revoke_token("t1")
    assert await store.user_for_token("h" * 64) is None
    assert await store.secret("review") == await store.secret("review")


async def test_a_version_1_sqlite_store_is_migrated_and_backfilled(tmp_path):
    """A quarantine written by the relay core (schema 1) opens with its items filterable by category."""
    import sqlite3

    from gateway.quarantine.schema import SQLITE
    from gateway.quarantine.sql import _values

    path = tmp_path / "v1.db"
    item = held_item(kinds=("pii.ssn", "confidential.marking"))
    with sqlite3.connect(path) as db:
        for statement in SQLITE[0]:
            db.execute(statement)
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (1)")
        db.execute("INSERT INTO held (id, received_at, direction, client_address, helo, mail_from, rcpt_tos, subject, "
                   "size, sha256, rule, action, findings, status, legal_hold, extra, raw) "
                   "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (*_values(item)[:16], item.raw))
    store = await opened(f"sqlite:///{path}")
    try:
        assert (await store.query(Query(category="confidential"))).items[0].id == item.id
        assert await store.counts() == {"confidential": 1, "pii": 1}
        assert (await store.get(item.id)).raw == item.raw
        async with store._tx() as conn:
            versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY version")]
            assert versions == list(range(1, len(SQLITE) + 1))
    finally:
        await store.close()
