"""external_email (outbound): department mail forwarded to personal web-mail services."""

from __future__ import annotations

import pytest

from gateway.detectors.external_email import looks_like_own
from gateway.model import Direction
from tests.support.contentkit import detector, run
from tests.support.peers import make_message, send

EXTERNAL = detector("external_email")


async def outbound(**kw):
    kw.setdefault("direction", Direction.OUTBOUND)
    return await run(EXTERNAL, **kw)


@pytest.mark.parametrize("headers", [
    "Auto-Submitted: auto-forwarded\r\n",
    "X-Forwarded-To: alice.home@gmail.com\r\nX-Forwarded-For: alice@example.gov alice.home@gmail.com\r\n",
    "Resent-From: alice@example.gov\r\nResent-To: alice.home@gmail.com\r\n"
    "Resent-Date: Sun, 29 Nov 2026 10:00:00 +0000\r\n",
    "X-MS-Exchange-Inbox-Rules-Loop: alice@example.gov\r\n",
])
async def test_rule_forwarding_to_webmail_is_reported(headers):
    [finding] = await outbound(subject="Case 42 update", body="Details of the case.", sender="citizen@example.org",
                               mail_from="alice@example.gov", to="alice.home@gmail.com", extra_headers=headers)
    assert finding.kind == "external_email.autoforward"
    assert finding.detector == "external_email"
    assert finding.detail == "Department mail automatically forwarded to a personal web-mail account (gmail.com)"
    assert finding.evidence[0] == "recipient alice.home@gmail.com (gmail.com)"
    assert any(e.startswith("forwarding headers: ") for e in finding.evidence)


async def test_manual_forward_to_the_senders_own_webmail_is_reported():
    [finding] = await outbound(subject="Fwd: staffing plan", body="---------- Forwarded message ---------\nplan",
                               sender="alice.smith@example.gov", to="alicesmith1987@yahoo.com")
    assert finding.kind == "external_email.self_forward"
    assert "forwarded by the sender to their own web-mail account (yahoo.com)" in finding.detail
    assert any("looks like the sender's own address" in e for e in finding.evidence)


@pytest.mark.parametrize(("sender", "to", "subject", "headers"), [
    # writing to a citizen who uses gmail is ordinary work
    ("alice.smith@example.gov", "citizen@gmail.com", "Your permit", ""),
    # forwarding a document to a citizen's gmail by hand is not forwarding to oneself
    ("alice.smith@example.gov", "jdoe@gmail.com", "Fwd: your permit", ""),
    # automatic forwarding to a partner agency (not web-mail)
    ("alice.smith@example.gov", "alice@agency.example.org", "Case", "Auto-Submitted: auto-forwarded\r\n"),
    # an out-of-office reply is auto-replied, not forwarded
    ("alice.smith@example.gov", "citizen@gmail.com", "Out of office", "Auto-Submitted: auto-replied\r\n"),
])
async def test_other_outbound_mail_does_not_fire(sender, to, subject, headers):
    assert await outbound(subject=subject, body="Hello.", sender=sender, to=to, extra_headers=headers) == []


def test_own_address_heuristic():
    assert looks_like_own("alice.smith@example.gov", "smith.alice@gmail.com")
    assert looks_like_own("asmith@example.gov", "asmith77@outlook.com")
    assert not looks_like_own("alice.smith@example.gov", "bob.jones@gmail.com")
    assert not looks_like_own("al@example.gov", "alan@gmail.com")


async def test_autoforward_is_quarantined_through_the_gateway(gw, sink):
    message = make_message(subject="Case 42 update", body="Details of the case.\n", sender="citizen@example.org",
                           to="alice@example.gov", extra_headers="Auto-Submitted: auto-forwarded\r\n"
                                                               "X-Forwarded-To: alice.home@gmail.com\r\n")
    code, _, _ = await send(gw.port, "alice@example.gov", ["alice.home@gmail.com"], message)
    assert code == 250
    [held] = await gw.store.list()
    assert held.rule == "outbound/external-email" and held.kinds == ("external_email.autoforward",)
    assert sink.messages == []
