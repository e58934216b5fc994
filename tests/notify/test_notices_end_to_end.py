"""Notices about held mail, end to end: real SMTP into the gateway, the hold writes the outbox rows,
the notifier sends them through the real next hop (the recording sink), and what staff receive is
read back from the sink. The notifier's rounds are driven with `run_once` so that each test decides
when time passes; one test runs it as the background task `gateway run` starts. Digest windows are
hours long, so the digest test moves the rows' due time instead of waiting (the only fake here)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
import signal
import struct
import sys
import time
import uuid
import warnings
from contextlib import AsyncExitStack

import pytest

from tests.support.paths import ROOT

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from gateway import config
from gateway.config import ConfigError
from gateway.notify.notifier import Notifier
from gateway.notify.plan import held_context
from gateway.notify.tokens import make_token, read_token
from gateway.quarantine import OutboxNotice, StoreError, User
from tests.support.peers import free_port, send
from tests.support.quarantine_fixtures import PgDatabase, held_item, opened
from tests.support.review_fixtures import ThreadSink, csrf_of, login, make_site, review_app

ADMIN = User("ada", "admin")
SECRET_BODY = "Payroll: employee SSN 123-45-6789, salary 98765"


def malformed(subject: str = "Quarterly report", sender: str = "alice@example.gov", to: str = "bob@example.org",
              extra: str = "", body: str = SECRET_BODY) -> bytes:
    """A multipart message without its closing boundary: the shipped policy holds it (malformed.*)."""
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@example.gov>\r\n{extra}MIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n"
            f"{body}\r\n--b1\r\nContent-Type: application/pdf; name=a.pdf\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n").encode()


def parsed(received) -> email.message.EmailMessage:
    return email.message_from_bytes(received.data, policy=email.policy.default)


def text_of(message: email.message.EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()


def html_of(message: email.message.EmailMessage) -> str:
    return message.get_body(("html",)).get_content()


async def notifier(running, **kwargs) -> Notifier:
    n = Notifier(running.settings, running.store, **kwargs)
    n.secret = await n.store.secret("notify-link-key")
    return n


async def hold(running, message: bytes, mail_from: str = "alice@example.gov", rcpts=("bob@example.org",)):
    code, text, _ = await send(running.port, mail_from, list(rcpts), message)
    assert code == 250, text
    return text.split()[-1]          # "250 2.0.0 Ok: queued as ID"


async def test_outbound_hold_tells_the_sender_why_with_id_and_link_but_not_the_sensitive_text(start_gateway, sink):
    gw = await start_gateway(notify={"from": "mail-policy@example.gov", "base_url": "https://review.example.gov"})
    item_id = await hold(gw, malformed())
    [row] = await gw.store.outbox()
    assert (row.recipient, row.template, row.role, row.status) == ("alice@example.gov", "held", "sender", "pending")
    assert sink.messages == []                         # nothing goes out on the mail path

    n = await notifier(gw)
    assert await n.run_once() == 1
    [received] = sink.messages
    assert received.mail_from in ("", "<>") and received.rcpt_tos == ["alice@example.gov"]     # null sender: no loops
    notice = parsed(received)
    assert notice["From"] == "mail-policy@example.gov" and notice["To"] == "alice@example.gov"
    assert notice["Auto-Submitted"] == "auto-generated"
    assert notice["Subject"] == "Your message was held for review: Quarterly report"
    text = text_of(notice)
    assert item_id in text and "bob@example.org" in text and "2026" in text
    assert "Provisions for Retrieving and Transmitting Information" in text           # the rule's notice
    assert "closing boundary" in text                                                 # the finding's detail
    assert "ITSD will review the message" in text
    for part in (text, html_of(notice), received.data.decode("latin-1")):
        assert "123-45-6789" not in part and "98765" not in part and "Payroll" not in part
    link = next(line for line in text.splitlines() if line.startswith("https://review.example.gov/request/"))
    assert read_token(n.secret, link.rsplit("/", 1)[1], 86400) == (item_id, "alice@example.gov")
    assert [r.status for r in await gw.store.outbox()] == ["sent"]
    assert await n.run_once() == 0 and len(sink.messages) == 1


async def test_inbound_hold_tells_the_local_recipient_never_the_external_sender(start_gateway, sink):
    gw = await start_gateway()
    item_id = await hold(gw, malformed(sender="partner@outside.test", to="carol@example.gov"),
                         mail_from="partner@outside.test", rcpts=("carol@example.gov", "dave@example.gov"))
    await (await notifier(gw)).run_once()
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == ["carol@example.gov", "dave@example.gov"]
    notice = parsed(sink.messages[0])
    assert notice["Subject"].startswith("A message to you was held for review")
    text = text_of(notice)
    assert item_id in text and "partner@outside.test" in text and "request/" not in text
    assert all("partner@outside.test" not in m.rcpt_tos for m in sink.messages)


async def test_held_bounce_and_auto_reply_notify_nobody_but_itsd(start_gateway, sink):
    gw = await start_gateway(notify={"itsd": "itsd@example.gov", "itsd_immediate": ["malformed"]})
    bounce = await hold(gw, malformed(sender="MAILER-DAEMON@example.gov"), mail_from="")
    auto = await hold(gw, malformed(extra="Auto-Submitted: auto-replied\r\n"))
    listed = await hold(gw, malformed(extra="List-Id: <staff.example.gov>\r\n"))
    rows = await gw.store.outbox()
    assert {(r.recipient, r.held_id) for r in rows} == {("itsd@example.gov", i) for i in (bounce, auto, listed)}
    await (await notifier(gw)).run_once()
    assert [m.rcpt_tos for m in sink.messages] == [["itsd@example.gov"]] * 3
    itsd = parsed(sink.messages[0])
    assert itsd["Subject"].startswith("[Gateway] Held for review: outbound/malformed")
    assert f"http://{gw.settings.review.listen}/held/" in text_of(itsd)


async def test_itsd_digest_and_per_person_digest_group_several_holds_into_one_notice(start_gateway, sink):
    gw = await start_gateway(notify={"itsd": "itsd@example.gov", "digest_people": {"Alice@example.gov": "hourly"}})
    ids = [await hold(gw, malformed(subject=f"Report {n}")) for n in range(3)]
    rows = await gw.store.outbox()
    assert {(r.recipient, r.digest) for r in rows} == {("alice@example.gov", "hourly"), ("itsd@example.gov", "itsd")}
    assert all(r.due_at > time.time() for r in rows)
    n = await notifier(gw)
    assert await n.run_once() == 0 and sink.messages == []          # the window has not closed
    async with gw.store._tx() as conn:                               # the hour passes
        await conn.execute("UPDATE outbox SET due_at = ?", time.time() - 1)
    assert await n.run_once() == 6
    by_rcpt = {m.rcpt_tos[0]: parsed(m) for m in sink.messages}
    assert len(sink.messages) == 2 and set(by_rcpt) == {"alice@example.gov", "itsd@example.gov"}
    digest = by_rcpt["alice@example.gov"]
    assert digest["Subject"] == "3 of your messages were held for review"
    text = text_of(digest)
    assert all(i in text for i in ids) and text.count("/request/") == 3
    assert by_rcpt["itsd@example.gov"]["Subject"] == "[Gateway] 3 messages held for review"


async def test_release_and_delete_tell_the_sender(start_gateway, sink):
    gw = await start_gateway()
    released, deleted = await hold(gw, malformed(subject="One")), await hold(gw, malformed(subject="Two"))
    n = await notifier(gw)
    await n.run_once()
    sink.messages.clear()
    service = gw.gateway.release_service()
    assert (await service.release(released, ADMIN, "business need confirmed")).status == "released"
    assert (await service.delete(deleted, ADMIN, "not allowed")).status == "deleted"
    assert [m.rcpt_tos for m in sink.messages] == [["bob@example.org"]]          # the released message itself
    await n.run_once()
    notices = {parsed(m)["Subject"]: parsed(m) for m in sink.messages[1:]}
    assert set(notices) == {"Your held message was released: One", "Your held message was deleted: Two"}
    assert all(m.rcpt_tos == ["alice@example.gov"] for m in sink.messages[1:])
    assert released in text_of(notices["Your held message was released: One"])
    # no release request, so the reviewer's own reason stays inside ITSD
    assert "not allowed" not in text_of(notices["Your held message was deleted: Two"])


async def test_outbox_retries_after_the_next_hop_was_down_and_delivers_exactly_once(start_gateway, sink, caplog):
    gw = await start_gateway(notify={"retry_seconds": 0.2, "alert_after": 2})
    item_id = await hold(gw, malformed())
    await sink.stop()                                   # the next hop goes away after the hold
    n = await notifier(gw)
    with caplog.at_level(logging.WARNING, logger="gateway.notify"):
        assert await n.run_once() == 1
        [row] = await gw.store.outbox()
        assert (row.status, row.attempts) == ("pending", 1) and row.due_at > time.time()
        assert await n.run_once() == 0                  # backing off: not due yet
        await asyncio.sleep(0.25)
        assert await n.run_once() == 1                  # second failure: the alert
    assert (await gw.store.outbox_stats(2))["alert"] == 1
    assert any("ALERT" in r.message and "keeps failing" in r.message for r in caplog.records)
    [row] = await gw.store.outbox()
    assert row.attempts == 2 and row.due_at - time.time() > 0.2      # doubled
    await sink.start()                                  # back on the same port
    await asyncio.sleep(0.45)
    assert await n.run_once() == 1
    assert await n.run_once() == 0
    await asyncio.sleep(0.1)
    assert len(sink.messages) == 1 and item_id in text_of(parsed(sink.messages[0]))
    [row] = await gw.store.outbox()
    assert row.status == "sent" and (await gw.store.outbox_stats(2))["alert"] == 0


async def cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.cli", *args, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode, out.decode()


async def test_a_refused_notice_is_given_up_and_alerts_until_retried(start_gateway, sink, caplog, tmp_path):
    gw = await start_gateway()
    await hold(gw, malformed())
    sink.refuse.add("alice@example.gov")
    n = await notifier(gw)
    with caplog.at_level(logging.ERROR, logger="gateway.notify"):
        await n.run_once()
    [row] = await gw.store.outbox()
    assert row.status == "failed" and "550" in row.error
    assert (await gw.store.outbox_stats(4)) == {"pending": 0, "failing": 0, "failed": 1, "alert": 1}
    assert any("given up" in r.message for r in caplog.records)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[quarantine]\nurl = "{gw.settings.quarantine.url}"\n')
    code, out = await cli("notices", "status", "--config", str(cfg))
    assert code == 1 and "failed 1" in out and "to alice@example.gov" in out and "550" in out
    sink.refuse.clear()
    code, out = await cli("notices", "retry", "--config", str(cfg))
    assert code == 0 and "1 failed notice(s) queued again" in out
    await n.run_once()
    assert len(sink.messages) == 1 and (await gw.store.outbox_stats(4))["alert"] == 0


async def test_a_broken_template_never_blocks_mail(start_gateway, sink, tmp_path):
    site = tmp_path / "templates"
    site.mkdir()
    (site / "held.txt.j2").write_text("{{ no_such_value }}\n")           # StrictUndefined: fails to render
    gw = await start_gateway(notify={"templates": str(site), "alert_after": 1})
    item_id = await hold(gw, malformed())
    code, _, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"],
                            b"From: alice@example.gov\r\nSubject: fine\r\n\r\nclean\r\n")
    assert code == 250 and len(sink.messages) == 1                     # clean mail still relayed
    await (await notifier(gw)).run_once()
    [row] = await gw.store.outbox()
    assert row.held_id == item_id and row.status == "pending" and "UndefinedError" in row.error
    assert (await gw.store.outbox_stats(1))["alert"] == 1


async def test_supervisor_copy_from_the_csv_and_header_injection_is_inert(start_gateway, sink, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text('[[outbound.rules]]\nname = "malformed"\nmatch = ["malformed.*"]\naction = "quarantine"\n'
                    'notify = ["sender", "supervisor"]\nprovision = "Provisions for Security"\n'
                    'notice = "Held for ITSD (Provisions for Security)."\n')
    csv = tmp_path / "supervisors.csv"
    csv.write_text("address,supervisor\nalice@example.gov,boss@example.gov\n")
    gw = await start_gateway(policy={"site": str(site)}, notify={"supervisors": str(csv)})
    evil = "=?utf-8?q?Hi=0D=0ABcc:_victim@example.org=0D=0A=0D=0A<script>x</script>?="
    item_id = await hold(gw, malformed(subject=evil))
    await (await notifier(gw)).run_once()
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == ["alice@example.gov", "boss@example.gov"]
    for received in sink.messages:
        notice = parsed(received)
        assert notice["Bcc"] is None and "victim" not in str(notice["To"])
        assert "\n" not in notice["Subject"] and "<script>" not in html_of(notice)
        assert item_id in text_of(notice) and "Held for ITSD (Provisions for Security)." in text_of(notice)
    boss = next(parsed(m) for m in sink.messages if m.rcpt_tos == ["boss@example.gov"])
    assert "who reports to you" in text_of(boss) and "/request/" not in text_of(boss)


async def test_notifier_task_of_gateway_run_sends_in_the_background(start_gateway, sink):
    gw = await start_gateway(notify={"poll_seconds": 0.05})
    n = await Notifier(gw.settings, gw.store).start()
    try:
        await hold(gw, malformed())
        await sink.wait_for(1, timeout=5)
        assert [m.rcpt_tos for m in sink.messages] == [["alice@example.gov"]]
    finally:
        await n.stop()


async def test_outbox_rows_are_part_of_the_hold_transaction(tmp_path):
    store = await opened(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        item = held_item()
        notice = OutboxNotice("alice@example.gov", "held", "sender", {"id": item.id}, item.id)
        await store.hold(item, [notice])
        try:
            await store.hold(item, [notice, notice])          # same id: the hold fails ...
        except StoreError:
            pass
        assert len(await store.outbox()) == 1                  # ... and so do its notices
    finally:
        await store.close()


async def test_postgresql_outbox_is_claimed_once_by_concurrent_nodes():
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(PgDatabase())
        nodes = [await opened(url) for _ in range(3)]
        try:
            for _ in range(20):
                item = held_item()
                await nodes[0].hold(item, [OutboxNotice(f"u{i}@example.gov", "held", "sender", {"id": item.id},
                                                        item.id) for i in range(3)])
            claims = await asyncio.gather(*(node.claim_notices(f"node{i}", limit=25, lease_seconds=60)
                                            for i, node in enumerate(nodes) for _ in range(2)))
            ids = [row.id for rows in claims for row in rows]
            assert len(ids) == 60 and len(set(ids)) == 60          # every row once, none twice
            assert await nodes[1].claim_notices("late", limit=100, lease_seconds=60) == []
            await nodes[0].notices_done(ids[:10], "sent")
            stats = await nodes[2].outbox_stats(4)
            assert stats["pending"] == 50 and stats["alert"] == 0
            # a node that died: its claims come back after the lease
            assert len(await nodes[1].claim_notices("rescuer", limit=100, lease_seconds=0)) == 50
        finally:
            for node in nodes:
                await node.close()



async def test_a_bounce_is_relayed_with_the_null_sender(gw, sink):
    code, text, _ = await send(gw.port, "", ["carol@example.gov"],
                               b"From: MAILER-DAEMON@outside.test\r\nSubject: Undeliverable\r\n\r\nreturned\r\n")
    assert code == 250, text
    [received] = await sink.wait_for(1)
    assert received.mail_from in ("", "<>") and received.rcpt_tos == ["carol@example.gov"]


# --- the sender's release-request page and the review queue (TestClient, the sink in a thread) --------

REVIEW_SECRET = "test-secret-key-0123456789"      # make_site's [review] secret_key, which also signs the links


@pytest.fixture
def thread_sink():
    s = ThreadSink().start()
    yield s
    s.stop()


@pytest.fixture
def site(tmp_path, thread_sink):
    return make_site(tmp_path, thread_sink, {
        "asked": held_item(subject="Payroll export"),
        "other": held_item(subject="Budget draft"),
        "withdrawn": held_item(subject="Oops"),
    })


def request_csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_release_request_with_justification_reaches_the_queue_and_the_decision_the_sender(site):
    item, other = site.items["asked"], site.items["other"]
    url = f"/request/{make_token(REVIEW_SECRET, item.id, 'alice@example.gov')}"
    with TestClient(review_app(site.settings), follow_redirects=True) as client:
        assert client.get("/request/not-a-token").status_code == 404
        assert client.get(f"/request/{make_token(REVIEW_SECRET, item.id, 'bob@example.org')}").status_code == 404
        assert client.get(f"/request/{make_token('another-key', item.id, 'alice@example.gov')}").status_code == 404
        page = client.get(url)
        assert page.status_code == 200 and "Payroll export" in page.text
        assert "***-**-6789" in page.text and "123-45-6789" not in page.text        # masked evidence, no body
        assert page.headers["referrer-policy"] == "no-referrer"
        assert client.post(url, data={"action": "request", "justification": "x" * 20}).status_code == 403
        csrf = request_csrf(page.text)
        assert client.post(url, data={"csrf": csrf, "action": "request", "justification": "short"}).status_code == 422
        done = client.post(url, data={"csrf": csrf, "action": "request",
                                      "justification": "The payroll office needs this export for the audit."})
        assert done.status_code == 200 and "Your request was sent to ITSD" in done.text

        login(client, "rita")
        queue = client.get("/?requested=1").text
        assert "Payroll export" in queue and "release requested" in queue and "Budget draft" not in queue
        assert "Budget draft" in client.get("/").text
        message = client.get(f"/held/{item.id}").text
        assert "The payroll office needs this export for the audit." in message and 'id="answer-form"' in message
        released = client.post(f"/held/{item.id}/release", data={"csrf": csrf_of(message),
                                                                  "reason": "Approved for the audit"})
        assert "Released to" in released.text
    assert [m.rcpt_tos for m in site.sink.messages] == [["bob@example.org"]]
    notices = site.run(lambda s: s.outbox(held_id=item.id))
    assert [(n.recipient, n.template, n.context["outcome"], n.context["reason"]) for n in notices] == [
        ("alice@example.gov", "decided", "released", "Approved for the audit")]
    request = site.run(lambda s: s.release_request(item.id))
    assert request.answered_by == "rita" and request.answered_at
    audit = site.run(lambda s: s.audit_log(held_id=item.id))
    assert any(e.actor == "alice@example.gov" and e.action == "release-requested" for e in audit)
    assert site.run(lambda s: s.outbox(held_id=other.id)) == []


def test_the_sender_can_withdraw_and_a_reviewer_can_answer(site):
    item = site.items["withdrawn"]
    url = f"/request/{make_token(REVIEW_SECRET, item.id, 'alice@example.gov')}"
    asked = site.items["other"]
    asked_url = f"/request/{make_token(REVIEW_SECRET, asked.id, 'alice@example.gov')}"
    with TestClient(review_app(site.settings), follow_redirects=True) as client:
        csrf = request_csrf(client.get(url).text)
        done = client.post(url, data={"csrf": csrf, "action": "withdraw"})
        assert "withdrawn" in done.text and 'id="request-form"' not in done.text
        client.post(asked_url, data={"csrf": csrf, "action": "request",
                                     "justification": "Needed by the finance team today."})
        login(client, "rolf")
        page = client.get(f"/held/{asked.id}").text
        client.post(f"/held/{asked.id}/answer", data={"csrf": csrf_of(page), "text": "Which finance team?"})
    assert site.run(lambda s: s.get(item.id, with_raw=False)).status == "deleted"
    assert site.sink.messages == []
    [notice] = site.run(lambda s: s.outbox(held_id=asked.id))
    assert (notice.recipient, notice.context["outcome"], notice.context["reason"]) == (
        "alice@example.gov", "answered", "Which finance team?")
    assert site.run(lambda s: s.get(asked.id, with_raw=False)).status == "held"


def test_failing_notices_raise_the_alert_on_the_dashboard_and_the_api(site):
    async def failing(store):
        await store.enqueue([OutboxNotice("alice@example.gov", "held", "sender", {"id": "x"}, None)])
        [row] = await store.claim_notices("test", limit=10, lease_seconds=60)
        await store.notices_retry([row.id], "550 5.1.1 No such user here", None)
    site.run(failing)
    with TestClient(review_app(site.settings), follow_redirects=True) as client:
        assert client.get("/api/notices").status_code == 401
        stats = client.get("/api/notices", headers={"Authorization": f"Bearer {site.tokens['rita']}"}).json()
        assert stats == {"pending": 0, "failing": 0, "failed": 1, "alert": 1}
        login(client, "ada")
        dashboard = client.get("/dashboard").text
        assert 'id="notify-alert"' in dashboard and "550 5.1.1 No such user here" in dashboard
        retried = client.post("/notices/retry", data={"csrf": csrf_of(dashboard)})
        assert "1 failed notice(s) queued again" in retried.text and 'id="notify-alert"' not in retried.text


def write_mo(path, messages: dict[str, str]) -> None:
    """A gettext catalog (.mo), written as msgfmt would, so the test needs no extra tool."""
    catalog = {"": "Content-Type: text/plain; charset=UTF-8\n", **messages}
    keys = sorted(k.encode() for k in catalog)
    values = [catalog[k.decode()].encode() for k in keys]
    ids, strs, offsets = b"", b"", []
    for k, v in zip(keys, values, strict=True):
        offsets.append((len(ids), len(k), len(strs), len(v)))
        ids += k + b"\0"
        strs += v + b"\0"
    key_start = 7 * 4 + 16 * len(keys)
    table = [x for o1, l1, _, _ in offsets for x in (l1, o1 + key_start)]
    table += [x for _, _, o2, l2 in offsets for x in (l2, o2 + key_start + len(ids))]
    path.parent.mkdir(parents=True)
    path.write_bytes(struct.pack("Iiiiiii", 0x950412DE, 0, len(keys), 28, 28 + 8 * len(keys), 0, 0)
                     + struct.pack(f"{len(table)}i", *table) + ids + strs)


async def test_notices_are_translated_from_a_site_catalog(start_gateway, sink, tmp_path):
    write_mo(tmp_path / "locale" / "fr" / "LC_MESSAGES" / "notices.mo", {
        "Your message was held for review: %(subject)s": "Votre message est retenu : %(subject)s",
        "Quarantine id": "Identifiant de quarantaine"})
    gw = await start_gateway(notify={"language": "fr", "translations": str(tmp_path / "locale")})
    item_id = await hold(gw, malformed(subject="Rapport"))
    await (await notifier(gw)).run_once()
    notice = parsed(sink.messages[0])
    assert notice["Subject"] == "Votre message est retenu : Rapport"
    assert f"Identifiant de quarantaine: {item_id}" in text_of(notice)


async def test_a_missing_catalog_or_a_bad_setting_stops_start_up(start_gateway, tmp_path):
    gw = await start_gateway(notify={"language": "de", "translations": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"notices\.mo"):
        Notifier(gw.settings, gw.store)
    for bad in ({"digest": "weekly"}, {"digest_people": {"a@example.gov": "often"}}, {"from": "not an address"},
                {"nonsense": 1}):
        with pytest.raises(ConfigError, match=r"\[notify\]"):
            config.from_dict({"notify": bad})


async def test_a_held_notice_not_yet_sent_is_dropped_once_the_message_is_decided(start_gateway, sink):
    gw = await start_gateway()
    item_id = await hold(gw, malformed(subject="Quick"))
    await gw.gateway.release_service().delete(item_id, ADMIN, "duplicate")
    await (await notifier(gw)).run_once()
    assert [parsed(m)["Subject"] for m in sink.messages] == ["Your held message was deleted: Quick"]
    assert sorted(r.status for r in await gw.store.outbox()) == ["sent", "skipped"]


async def test_gateway_run_starts_the_notifier(tmp_path, sink):
    """`gateway run` as a real process: a held message's notice reaches the next hop by itself."""
    port = free_port()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[smtp]\nlisten = "127.0.0.1:{port}"\n[relay]\nnext_hop = "127.0.0.1:{sink.port}"\n'
                   f'[quarantine]\nurl = "sqlite:///{tmp_path / "q.db"}"\n'
                   f'[review]\nlisten = "127.0.0.1:{free_port()}"\n[notify]\npoll_seconds = 0.1\n')
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.cli", "run", "--config", str(cfg),
                                                cwd=ROOT, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(400):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        code, text, _ = await send(port, "alice@example.gov", ["bob@example.org"], malformed())
        assert code == 250, text
        [received] = await sink.wait_for(1, timeout=10)
        assert received.rcpt_tos == ["alice@example.gov"] and text.split()[-1] in text_of(parsed(received))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_a_finding_with_a_sensitive_value_shows_only_its_masked_evidence(start_gateway, sink):
    """The store's record of a PII hold (as the pii detector reports it: evidence masked, the SSN in the
    body) makes a notice with the masked excerpt and nothing of the body."""
    gw = await start_gateway()
    item = held_item(subject="Payroll")
    await gw.store.hold(item, [OutboxNotice("alice@example.gov", "held", "sender", held_context(item), item.id)])
    await (await notifier(gw)).run_once()
    notice = parsed(sink.messages[0])
    assert "SSN ***-**-6789" in text_of(notice) and "SSN ***-**-6789" in html_of(notice)
    for part in (text_of(notice), html_of(notice), sink.messages[0].data.decode("latin-1")):
        assert "123-45-6789" not in part and "social security" not in part


async def test_a_failure_to_plan_notices_still_holds_the_message(start_gateway, sink, caplog):
    """Fault injection: the planner raises (a bug); the message is held and answered 250 all the same."""
    gw = await start_gateway()

    def broken(*args):
        raise RuntimeError("planner bug")
    gw.gateway.actions.planner.held = broken
    with caplog.at_level(logging.ERROR, logger="gateway.actions"):
        item_id = await hold(gw, malformed())
    assert (await gw.store.get(item_id)).status == "held" and await gw.store.outbox() == []
    assert any("held without notices" in r.message for r in caplog.records)
