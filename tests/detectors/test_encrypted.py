"""Encrypted mail is not invisible mail: S/MIME enveloped, PGP/MIME and inline PGP messages get their own
finding (with the recipients the structure shows), are delivered and recorded outbound (a tag without a
subject prefix), held inbound by the unscanned rule unless the sender is trusted, and held outbound to
a recipient outside the listed partner domains. Signed-only mail is inspected as before.

The messages in tests/data/encrypted were made with openssl smime and gpg (see the README there)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.model import Direction
from tests.support.contentkit import detector, header, mail
from tests.support.paths import DATA
from tests.support.peers import send

ENCRYPTED = DATA / "encrypted"
ALICE, DANA = "alice.moreno@example.gov", "dana.ortiz@partner-agency.example"
DANA_CERT = "certificate 3C101A9D78837C171DCD0B038AAE31E423395429 issued by Dana Ortiz"
DANA_KEY, ALICE_KEY = "OpenPGP key 203BF26050D41ED1", "OpenPGP key EF1B6EC7AB67BE20"

OUTBOUND = [
    ("smime_enveloped_outbound.eml", "encrypted.smime", (DANA_CERT,), "part 1: smime.p7m"),
    ("smime_p7m_attachment_outbound.eml", "encrypted.smime", (DANA_CERT,), "part 2: contract.pdf.p7m"),
    ("pgp_mime_outbound.eml", "encrypted.pgp", (DANA_KEY, ALICE_KEY), "part 1, part 2: encrypted.asc"),
    ("pgp_inline_outbound.eml", "encrypted.pgp", (DANA_KEY,), "part 1"),
]
SIGNED_ONLY = ["smime_signed_detached_outbound.eml", "smime_signed_opaque_outbound.eml",
               "pgp_clearsigned_outbound.eml", "pgp_mime_signed_outbound.eml",
               "pgp_signed_only_armored_outbound.eml", "pgp_help_desk_ham_outbound.eml"]


def raw(name: str) -> bytes:
    return (ENCRYPTED / name).read_bytes()


async def check(name: str, direction: Direction = Direction.OUTBOUND, sender: str = ALICE,
                rcpts: tuple[str, ...] = (DANA,), **options):
    return await detector("encrypted", **options).check(mail(raw(name), direction=direction, mail_from=sender,
                                                             rcpts=rcpts))


@pytest.mark.parametrize(("name", "kind", "recipients", "part"), OUTBOUND)
async def test_each_encrypted_form_is_a_finding_naming_its_recipients(name, kind, recipients, part):
    [finding] = await check(name)
    assert finding.kind == kind and finding.detector == "encrypted"
    assert finding.evidence == recipients and finding.part == part
    assert "cannot be checked for viruses or content" in finding.detail


@pytest.mark.parametrize("name", SIGNED_ONLY)
async def test_signed_only_mail_and_mail_about_encryption_are_not_encrypted(name):
    assert await check(name) == []


async def send_file(port: int, name: str, sender: str, rcpt: str) -> int:
    code, _, _ = await send(port, sender, [rcpt], raw(name), source="127.0.0.2" if sender == DANA else None)
    return code


@pytest.mark.parametrize(("name", "kind", "recipients", "part"), OUTBOUND)
async def test_outbound_encrypted_mail_is_delivered_and_recorded_without_changing_the_subject(
        gw, sink, caplog, name, kind, recipients, part):
    caplog.set_level(logging.INFO, logger="gateway.message")
    assert await send_file(gw.port, name, ALICE, DANA) == 250
    [received] = await sink.wait_for(1)
    assert header(received.data, "X-Gateway-Verdict") == "tag"
    assert header(received.data, "Subject") == header(raw(name), "Subject")
    assert b"X-Gateway-Findings" not in received.data         # outbound: findings stay inside
    [record] = [r for r in caplog.records if r.name == "gateway.message"]
    assert record.fields["rule"] == "outbound/encrypted" and kind in record.fields["kinds"]
    assert await gw.store.list() == []


@pytest.mark.parametrize(("name", "kind"), [("smime_enveloped_inbound.eml", "encrypted.smime"),
                                            ("pgp_mime_inbound.eml", "encrypted.pgp")])
async def test_inbound_encrypted_mail_follows_the_unscanned_rule(gw, sink, name, kind):
    assert await send_file(gw.port, name, DANA, ALICE) == 250
    [item] = await gw.store.list()
    assert item.rule == "inbound/unscanned" and kind in item.kinds
    assert sink.messages == []


def site(tmp_path: Path, text: str) -> dict:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return {"site": str(path)}


@pytest.mark.parametrize("name", ["smime_enveloped_inbound.eml", "pgp_mime_inbound.eml"])
async def test_inbound_encrypted_mail_from_a_trusted_sender_is_delivered(start_gateway, sink, tmp_path, name):
    running = await start_gateway(policy=site(tmp_path, '[detectors.encrypted]\ntrusted_senders = '
                                                        '["partner-agency.example"]\n'))
    assert await send_file(running.port, name, DANA, ALICE) == 250
    [received] = await sink.wait_for(1)
    assert header(received.data, "X-Gateway-Verdict") == "tag; rule=inbound/encrypted-trusted-sender"
    assert header(received.data, "X-Gateway-Findings").startswith("encrypted.trusted_sender (")
    assert header(received.data, "Subject") == header(raw(name), "Subject")
    assert await running.store.list() == []


async def test_a_trusted_envelope_sender_with_another_from_is_not_trusted(start_gateway, sink, tmp_path):
    running = await start_gateway(policy=site(tmp_path, '[detectors.encrypted]\ntrusted_senders = '
                                                        '["partner-agency.example"]\n'))
    forged = raw("pgp_mime_inbound.eml").replace(b"From: Dana Ortiz <dana.ortiz@partner-agency.example>",
                                                 b"From: Payroll <payroll@elsewhere.example>")
    code, _, _ = await send(running.port, DANA, [ALICE], forged, source="127.0.0.2")
    assert code == 250
    [item] = await running.store.list()
    assert item.rule == "inbound/unscanned" and "encrypted.pgp" in item.kinds


async def test_outbound_encrypted_mail_outside_the_partner_domains_is_held(start_gateway, sink, tmp_path):
    running = await start_gateway(policy=site(tmp_path, '[detectors.encrypted]\npartner_domains = '
                                                        '["partner-agency.example"]\n'))
    assert await send_file(running.port, "pgp_mime_outbound.eml", ALICE, DANA) == 250
    assert await send_file(running.port, "smime_enveloped_outbound.eml", ALICE, "someone@gmail.example") == 250
    [delivered] = await sink.wait_for(1)
    assert DANA.encode() in delivered.data and header(delivered.data, "X-Gateway-Verdict") == "tag"
    [item] = await running.store.list()
    assert item.rule == "outbound/encrypted-unlisted-partner" and item.rcpt_tos == ("someone@gmail.example",)
    assert {"encrypted.smime", "encrypted.unlisted_recipient"} <= set(item.kinds)
    [unlisted] = [f for f in item.findings if f.kind == "encrypted.unlisted_recipient"]
    assert unlisted.evidence == ("someone@gmail.example",)


@pytest.mark.parametrize("name", ["smime_signed_detached_outbound.eml", "pgp_clearsigned_outbound.eml",
                                  "pgp_mime_signed_outbound.eml"])
async def test_signed_only_mail_is_inspected_as_before(gw, sink, name):
    """The signed bodies carry a claimant's SSN in the clear: held as personal information."""
    assert await send_file(gw.port, name, ALICE, DANA) == 250
    [item] = await gw.store.list()
    assert item.rule == "outbound/pii" and not any(k.startswith("encrypted.") for k in item.kinds)


async def test_mail_about_encryption_is_delivered_untouched(gw, sink):
    assert await send_file(gw.port, "pgp_help_desk_ham_outbound.eml", ALICE, DANA) == 250
    [received] = await sink.wait_for(1)
    assert header(received.data, "X-Gateway-Verdict") == "deliver"


async def test_internal_encrypted_mail_is_delivered_and_recorded(gw, sink):
    colleague = "bob.chen@example.gov"
    message = raw("pgp_inline_outbound.eml").replace(DANA.encode(), colleague.encode())
    code, _, _ = await send(gw.port, ALICE, [colleague], message)
    assert code == 250
    [received] = await sink.wait_for(1)
    assert header(received.data, "X-Gateway-Verdict") == "tag; rule=internal/encrypted"
    assert header(received.data, "Subject") == "Claimant list"
