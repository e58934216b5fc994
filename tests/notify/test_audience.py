"""Who is told about a held message: the internal party, never an external sender, never about automatic mail."""

from __future__ import annotations

import email

import pytest

from gateway import config
from gateway.config import SHIPPED_POLICY_DIR
from gateway.notify.audience import audience, is_automatic, load_supervisors
from gateway.notify.compose import Notice, compose, environment

SETTINGS = config.from_dict({"domains": {"local": ["example.gov"]}})
ALL = frozenset({"sender", "recipients", "itsd", "supervisor"})


def msg(headers: str = "") -> email.message.Message:
    return email.message_from_string(f"From: x\r\nSubject: s\r\n{headers}\r\nbody")


def who(direction, mail_from, rcpts, headers="", targets=ALL, supervisors=None):
    return [(a.address, a.role) for a in audience(
        SETTINGS, direction=direction, mail_from=mail_from, rcpt_tos=tuple(rcpts), message=msg(headers),
        targets=targets, supervisors=supervisors or {}, itsd="itsd@example.gov")]


def test_outbound_tells_the_internal_sender_and_supervisor_not_external_recipients():
    assert who("outbound", "alice@example.gov", ["bob@example.org"],
               supervisors={"alice@example.gov": "boss@example.gov"}) == [
        ("itsd@example.gov", "itsd"), ("alice@example.gov", "sender"), ("boss@example.gov", "supervisor")]


def test_inbound_tells_local_recipients_never_the_external_sender():
    people = who("inbound", "spoofer@outside.test", ["staff@example.gov", "other@outside.test"])
    assert ("staff@example.gov", "recipient") in people
    assert all(address != "spoofer@outside.test" for address, _ in people)
    assert ("other@outside.test", "recipient") not in people


def test_inbound_claiming_a_local_sender_does_not_tell_that_sender():
    people = who("inbound", "ceo@example.gov", ["staff@example.gov"], targets=frozenset({"sender"}))
    assert people == []


@pytest.mark.parametrize(("mail_from", "headers"), [
    ("", ""),
    ("MAILER-DAEMON@example.gov", ""),
    ("alice@example.gov", "Auto-Submitted: auto-replied\r\n"),
    ("alice@example.gov", "Precedence: bulk\r\n"),
    ("alice@example.gov", "List-Id: <staff.example.gov>\r\n"),
    ("alice@example.gov", "Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n"),
])
def test_bounces_auto_replies_and_lists_notify_nobody_but_itsd(mail_from, headers):
    assert is_automatic(mail_from, msg(headers))
    assert who("outbound", mail_from, ["bob@example.org"], headers) == [("itsd@example.gov", "itsd")]


def test_auto_submitted_no_is_a_person():
    assert not is_automatic("alice@example.gov", msg("Auto-Submitted: no\r\n"))


def test_supervisor_csv(tmp_path):
    path = tmp_path / "sup.csv"
    path.write_text("address,supervisor\nAlice@example.gov, boss@example.gov\nbroken line\n")
    assert load_supervisors(str(path)) == {"alice@example.gov": "boss@example.gov"}


def test_notice_escapes_message_content_and_never_breaks_headers():
    env = environment(SHIPPED_POLICY_DIR / "templates")
    context = dict(id="abc", subject="<script>alert(1)</script>\r\nBcc: victim@example.org", date="today",
                   mail_from="a@example.gov", rcpt_tos=["b@example.org"], notice="Held (policy: Confidentiality).",
                   role="sender", findings=[{"detail": "SSN found", "part": "body", "evidence": ["SSN ***-**-6789"]}],
                   request_url="https://review/r/t", link_days=7, policy_title="Department Internet Policy")
    raw = compose(env, Notice("a@example.gov", "held", context), "postmaster@example.gov")
    parsed = email.message_from_bytes(raw)
    assert parsed["Bcc"] is None and parsed["Auto-Submitted"] == "auto-generated"
    html = parsed.get_payload()[1].get_payload(decode=True).decode()
    assert "<script>" not in html and "&lt;script&gt;" in html
    text = parsed.get_payload()[0].get_payload(decode=True).decode()
    assert "***-**-6789" in text and "abc" in text and "https://review/r/t" in text
