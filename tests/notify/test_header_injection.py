"""Header and body injection through attacker text in the fields we write: notices (held, digest,
ITSD, decisions) and the fields we add to or rewrite on relayed mail. An encoded word in an unknown
charset used to pass our checks undecoded and be decoded by the email package when the notice's
Subject was set, writing its CR LF out (the CVE-2024-6923 class on Python 3.11.7)."""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import itertools
import re
import tempfile
import time
import urllib.parse
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import headers
from gateway.message import mime
from gateway.model import Action, Direction, Envelope, Finding, Mail, Verdict
from gateway.notify.compose import compose
from gateway.notify.notifier import Notifier
from gateway.notify.plan import Planner
from gateway.quarantine import HeldItem, OutboxRow
from tests.notify.test_notices_end_to_end import hold, html_of, malformed, notifier, parsed, text_of
from tests.support.peers import send
from tests.support.settings import make_settings

EVIL = "Invoice 4471 =?x-unknown?Q?=0D=0AReply-To:_helpdesk@evil.example=0D=0AX-Injected:_yes?="
BODY_SWAP = ("Invoice 4471 =?x-unknown?Q?=0D=0A=0D=0AYour_mailbox_is_suspended,_log_in_at_"
             "https://evil.example/login?=")
NOTICE_FIELDS = {"from", "to", "subject", "date", "message-id", "auto-submitted", "x-gateway-notice",
                 "mime-version", "content-type"}
ENCODED_WORD = re.compile(r"=\?[^?]*\?[qQbB]\?", re.I)


def assert_clean_notice(raw: bytes, marker: str, lines: bool = True) -> email.message.EmailMessage:
    """Exactly our fields, each one line with no encoded word left in its value, and our own body
    (`lines`: message text only inside lines of ours; a reviewer's reason may have lines of its own)."""
    notice = email.message_from_bytes(raw, policy=email.policy.default)
    names = [n.lower() for n in notice]
    assert sorted(names) == sorted(NOTICE_FIELDS), names
    assert notice["Reply-To"] is None and notice["X-Injected"] is None
    for name, value in notice.items():
        assert "\r" not in value and "\n" not in value, (name, value)
        assert not ENCODED_WORD.search(value), (name, value)
    head = raw.split(b"\r\n\r\n", 1)[0]
    for charset in re.findall(rb"=\?([^?]*)\?[qQbB]\?", head):
        assert charset.lower() in (b"utf-8", b"us-ascii"), head        # only the email package's own
    assert notice.get_content_type() == "multipart/alternative"
    assert marker in text_of(notice) and marker in html_of(notice)
    for line in text_of(notice).splitlines() if lines else ():     # attacker text only inside lines of ours
        assert not re.match(r"[\s-]*(Your mailbox|Reply-To|X-Injected|Bcc)", line), line
    return notice


# --- end to end: SMTP in, the staff and ITSD notices at the sink ------------------------------------

async def test_an_encoded_word_in_an_unknown_charset_cannot_add_reply_to_to_the_staff_notice(start_gateway, sink):
    gw = await start_gateway(notify={"from": "postmaster@example.gov", "itsd": "itsd@example.gov",
                                     "itsd_immediate": ["malformed"]})
    item_id = await hold(gw, malformed(subject=EVIL, sender="partner@outside.test", to="carol@example.gov"),
                         mail_from="partner@outside.test", rcpts=("carol@example.gov",))
    await (await notifier(gw)).run_once()
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == ["carol@example.gov", "itsd@example.gov"]
    for received in sink.messages:
        notice = assert_clean_notice(received.data, item_id)
        assert notice["From"] == "postmaster@example.gov"
        assert not re.search(rb"(?im)^(reply-to|x-injected)\s*:", received.data.split(b"\r\n\r\n")[0])
        assert "helpdesk@evil.example" in notice["Subject"]        # shown as the text it is, on one line
    staff = parsed(next(m for m in sink.messages if m.rcpt_tos == ["carol@example.gov"]))
    assert staff["Subject"].startswith("A message to you was held for review: Invoice 4471")
    assert "ITSD will review the message" in text_of(staff) or item_id in text_of(staff)


async def test_a_blank_line_in_an_encoded_subject_cannot_replace_the_notice_body(start_gateway, sink):
    gw = await start_gateway()
    item_id = await hold(gw, malformed(subject=BODY_SWAP, sender="partner@outside.test", to="carol@example.gov"),
                         mail_from="partner@outside.test", rcpts=("carol@example.gov",))
    await (await notifier(gw)).run_once()
    [received] = sink.messages
    notice = assert_clean_notice(received.data, item_id)
    text = text_of(notice)
    assert "closing boundary" in text and item_id in text                    # the template's own body
    [line] = [line for line in text.splitlines() if "suspended" in line]
    assert "Invoice 4471" in line                                            # inside the subject's line


async def test_the_decision_notice_after_a_release_carries_no_injected_field(start_gateway, sink):
    gw = await start_gateway()
    item_id = await hold(gw, malformed(subject=EVIL))            # outbound: alice is told
    n = await notifier(gw)
    await n.run_once()
    sink.messages.clear()
    service = gw.gateway.release_service()
    from tests.notify.test_notices_end_to_end import ADMIN
    assert (await service.release(item_id, ADMIN, "ok =?x-unknown?Q?=0D=0ABcc:_x@evil.example?=")).status \
        == "released"
    await n.run_once()
    decided = [m for m in sink.messages if m.rcpt_tos == ["alice@example.gov"]]
    assert len(decided) == 1
    assert_clean_notice(decided[0].data, item_id)


# --- relayed mail: only the fields we add or rewrite change, and they carry no attacker line break ---

def field_bytes(raw: bytes) -> dict[str, list[bytes]]:
    fields, _, _ = headers.split(raw)
    out: dict[str, list[bytes]] = {}
    for f in fields:
        out.setdefault(headers.field_name(f), []).append(f)
    return out


async def test_a_tagged_subject_and_the_findings_header_carry_no_attacker_encoded_word(start_gateway, sink,
                                                                                        tmp_path):
    site = tmp_path / "site.toml"
    site.write_text('[detectors.size]\nmax_attachment_bytes = 10\n\n[[inbound.rules]]\nname = "big"\n'
                    'match = ["oversize.attachment"]\naction = "tag"\ntag = "[Big]"\n')
    gw = await start_gateway(policy={"site": str(site)})
    name = "=?x-unknown?Q?Reply-To:_x@evil.example_?=.txt"     # with a line break in it, the name is held
    raw = (f"From: =?x-unknown?Q?Boss=0D=0ABcc:_all@example.gov?= <partner@outside.test>\r\n"
           f"To: carol@example.gov\r\nSubject: {EVIL}\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
           "Message-ID: <m1@outside.test>\r\nMIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n"
           f"hello\r\n--b1\r\nContent-Type: text/plain; name=\"{name}\"\r\n"
           f"Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n{'x' * 100}\r\n--b1--\r\n").encode()
    code, text, _ = await send(gw.port, "partner@outside.test", ["carol@example.gov"], raw)
    assert code == 250, text
    [got] = await sink.wait_for(1)
    out = email.message_from_bytes(got.data, policy=email.policy.default)
    assert out["Reply-To"] is None and out["X-Injected"] is None and out["Bcc"] is None
    ours = field_bytes(got.data)
    assert "Reply-To: x@evil.example .txt" in out["X-Gateway-Findings"]         # decoded, on one line
    for field in ("subject", "x-gateway-findings", "x-gateway-verdict", "x-gateway-id"):
        [value] = ours[field]
        headers.check_field(value)
        assert b"x-unknown" not in value.lower(), value
        assert "\n" not in out[field] and not ENCODED_WORD.search(out[field]), out[field]
    assert out["Subject"].startswith("[Big] Invoice 4471") and "helpdesk@evil.example" in out["Subject"]
    theirs = field_bytes(raw)
    for field in ("from", "to", "date", "message-id", "mime-version", "content-type"):
        assert ours[field] == theirs[field]                   # the sender's own fields, byte for byte
    assert got.data.endswith(raw.split(b"\r\n\r\n", 1)[1])


def test_decode_header_value_decodes_unknown_charsets_to_one_line():
    for value in (EVIL, BODY_SWAP, "=?utf-8?b?DQpSZXBseS1UbzogeEBldmlsLmV4YW1wbGU=?=",
                  "=?utf-8?q?=FF=0D=0AX:_y?=", "=?rot13?q?=0D=0AX:_y?=", "=?base64?b?DQpYOiB5?="):
        text = mime.decode_header_value(value)
        assert "\r" not in text and "\n" not in text and "=?" not in text, (value, text)
    assert mime.decode_header_value(EVIL) == "Invoice 4471   Reply-To: helpdesk@evil.example  X-Injected: yes"
    assert mime.decode_header_value("=?utf-8?q?caf=C3=A9?= =?utf-8?q?_au_lait?=") == "café au lait"


# --- the property: every notice kind, hostile subjects, display names and file names ----------------

PIECES = ["Invoice", " ", "é", "€", "x" * 90, "=0D=0A", "\r\n", "\n", "\r", "\x00", "\t", "\u2028", "\x85",
          "Reply-To: helpdesk@evil.example", "=?", "?=", "\"", "<", ">", ",", ";",
          "=?x-unknown?Q?=0D=0AReply-To:_helpdesk@evil.example=0D=0AX-Injected:_yes?=",
          "=?x-unknown?Q?=0D=0A=0D=0AYour_mailbox_is_suspended?=",
          "=?utf-8?Q?=0D=0ABcc:_victim@example.org?=", "=?utf-8?B?DQpSZXBseS1UbzogZXZpbEBleC5leGFtcGxl?=",
          "=?utf-8?q?=3D=3Fx-unknown=3FQ=3F=3D0D=3D0AX-Injected:_yes=3F=3D?=",
          "=?iso-8859-1?q?=E9=0A?=", "=?\x00?q?=0A?=", "=?utf-8*en?q?=0D=0AX-Injected:_1?="]
hostile = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)
long_hostile = st.one_of(hostile, hostile.map(lambda s: (s + "=?x-unknown?Q?=0D=0AX-Injected:_1?= ") * 20))

SETTINGS = make_settings(Path(tempfile.gettempdir()), 9, notify={"itsd": "itsd@example.gov",
                                                                  "itsd_immediate": ["dangerous_file"]})
NOTIFIER = Notifier(SETTINGS, store=None)
NOTIFIER.secret = "k" * 32
PLANNER = Planner(SETTINGS)
EXE = base64.b64encode(b"MZ" + b"\x90" * 60).decode()
_ids = itertools.count(1)


def hostile_message(subject: str, display: str, filename: str, rfc2231: bool) -> bytes:
    if rfc2231:
        name_params = f"name*=utf-8''{urllib.parse.quote(filename.encode('utf-8', 'surrogatepass'))}"
        disposition = f"filename*=utf-8''{urllib.parse.quote(filename.encode('utf-8', 'surrogatepass'))}"
    else:
        name_params, disposition = f'name="{filename}"', f'filename="{filename}"'
    return (f"From: {display} <partner@outside.test>\r\nTo: {display} <carol@example.gov>\r\n"
            f"Subject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
            "--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1\r\n"
            f"Content-Type: application/octet-stream; {name_params}\r\n"
            f"Content-Disposition: attachment; {disposition}\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            f"{EXE}\r\n--b1--\r\n").encode("utf-8", "surrogatepass")


def rows_of(notices, held: bool) -> list[OutboxRow]:
    return [OutboxRow(next(_ids), n.held_id, n.recipient, n.role, n.template, n.digest, n.context, time.time(),
                      time.time(), "sending", 0, "") for n in notices if (n.template in ("held", "itsd")) == held]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(long_hostile, hostile, hostile, st.booleans(), st.sampled_from([Direction.INBOUND, Direction.OUTBOUND]),
       hostile)
def test_hostile_subjects_names_and_file_names_never_add_a_field_to_any_notice(subject, display, filename, rfc2231,
                                                                               direction, reason):
    raw = hostile_message(subject, display, filename, rfc2231)
    parsed_message = mime.parse(raw)
    outbound = direction is Direction.OUTBOUND
    envelope = Envelope("alice@example.gov" if outbound else "partner@outside.test",
                        ("bob@example.org",) if outbound else ("carol@example.gov", "dave@example.gov"))
    mail = Mail(f"id{next(_ids):08d}", envelope, raw, parsed_message, direction, time.time())
    findings = tuple(Finding("dangerous_file.executable", "filetype", f"Dangerous file: {p.filename or 'a file'}",
                             part=p.label) for p in parsed_message.attachments) \
        or (Finding("malformed.x", "mime", f"unreadable: {parsed_message.subject}"),)
    verdict = Verdict(Action.QUARANTINE, f"{direction}/dangerous-file", findings,
                      notify=frozenset({"sender", "recipients", "supervisor", "itsd"}),
                      notice=f"Held: {parsed_message.subject}")
    item = HeldItem.from_mail(mail, verdict)
    planner_supervisors = {"alice@example.gov": "boss@example.gov"}
    PLANNER._supervisors, PLANNER._mtime = planner_supervisors, None
    held = rows_of(PLANNER.held(mail, item, verdict), held=True)
    decided = rows_of(PLANNER.decided(item, "released", reason) + PLANNER.decided(item, "answered", reason,
                                                                                  to="alice@example.gov"), held=False)
    assert {r.template for r in held} >= {"held", "itsd"} and decided
    groups = [[r] for r in held + decided]
    first = [dataclasses.replace(r, digest="hourly") for r in held if r.template == "held"][:1]
    groups.append(first * 2)                                                    # a digest of two
    groups.append([r for r in held if r.template == "itsd"] * 2)                # an ITSD digest
    kinds = set()
    for group in groups:
        notice = NOTIFIER._notice(group)
        kinds.add(notice.template)
        out = compose(NOTIFIER.env, notice, "Mail Policy <postmaster@example.gov>", "gateway.test")
        assert_clean_notice(out, item.id, lines=notice.template != "decided")
    assert kinds == {"held", "itsd", "decided", "digest"}


def test_an_item_held_before_the_fix_with_a_raw_subject_still_gives_clean_notices():
    """Items already in the quarantine keep the subject as it was stored: undecoded, with line breaks."""
    from tests.support.quarantine_fixtures import held_item

    item = held_item(subject=EVIL + "\r\nBcc: x@evil.example")
    context = {**PLANNER.decided(item, "deleted")[0].context}
    for notice in (PLANNER.decided(item, "released")[0], PLANNER.decided(item, "answered", to="alice@example.gov")[0]):
        row = rows_of([notice], held=False)[0]
        assert_clean_notice(compose(NOTIFIER.env, NOTIFIER._notice([row]), "postmaster@example.gov"), item.id)
    assert "\n" not in context["subject"] and "=?" not in context["subject"]


def test_a_recipient_address_with_an_encoded_word_is_not_written_into_to():
    """An inbound recipient may be any local part of ours, quoted ones too: the email package would decode
    an encoded word inside the quotes. The header then names no one; the envelope still delivers."""
    from tests.support.quarantine_fixtures import held_item

    item = held_item(subject="Report")
    evil = '"=?x-unknown?Q?=0D=0AReply-To:_x@evil.example=0D=0A?="@example.gov'
    [notice] = PLANNER.decided(item, "released", to=evil)
    out = compose(NOTIFIER.env, NOTIFIER._notice(rows_of([notice], held=False)), "Mail Policy <pm@example.gov>")
    parsed_notice = assert_clean_notice(out, item.id)
    assert parsed_notice["To"] == "undisclosed-recipients:;" and parsed_notice["From"] == "Mail Policy <pm@example.gov>"
