"""Evidence never shows the values it masks: a confidential message with an SSN and a card number goes
through a real SMTP session, and the store, the staff and ITSD notices at the sink, the review page, the
API and `gateway quarantine show` all quote only masked, short excerpts; each detector's evidence is
checked the same way on its own."""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import json
import logging
import re
import uuid
import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from gateway import accounts, cli, logs
from gateway.config import LogSettings
from gateway.detectors import REGISTRY
from gateway.model import Direction, Finding
from gateway.notify.notifier import Notifier
from tests.detectors import test_chain_letter, test_commercial, test_political
from tests.support import contentkit
from tests.support.peers import send
from tests.support.review_fixtures import login, review_app

BODY = "CONFIDENTIAL: Jane Roe SSN 536-22-8471 card 4556 7375 8689 9855"
RAW_DIGITS = re.compile(r"536\D{0,3}22\D{0,3}8471|4556\D{0,3}7375\D{0,3}8689\D{0,3}9855|7375\D{0,3}8689")
MASKED_SSN = "***-**-8471"
MASKED_CARD = "**** **** **** 9855"


def message(body: str = BODY, subject: str = "Employee record") -> bytes:
    return (f"From: alice@example.gov\r\nTo: bob@example.org\r\nSubject: {subject}\r\n"
            f"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{uuid.uuid4().hex}@example.gov>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


def no_raw(text: str, where: str) -> None:
    found = RAW_DIGITS.search(text)
    assert found is None, f"{where} shows {found.group(0)!r}"


def excerpts(findings) -> list[str]:
    """The text quoted from the message in each piece of evidence ("body: …excerpt…", "threat: …excerpt…")."""
    return [e.split(": ", 1)[-1] for f in findings for e in f.evidence]


async def test_confidential_ssn_and_card_are_masked_in_store_notices_page_api_and_cli(
        start_gateway, sink, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    gw = await start_gateway(notify={"itsd": "itsd@example.gov", "itsd_immediate": ["confidential", "pii"],
                                     "from": "mail-policy@example.gov"})
    code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], message())
    assert code == 250, text
    item_id = text.split()[-1]

    item = await gw.store.get(item_id, with_raw=False)
    kinds = {f.kind for f in item.findings}
    assert any(k.startswith("confidential.") for k in kinds) and {"pii.ssn", "pii.payment_card"} <= kinds
    confidential = next(f for f in item.findings if f.detector == "confidential")
    stored = json.dumps([f.as_dict() for f in item.findings])
    no_raw(stored, "the store")
    assert MASKED_SSN in " ".join(confidential.evidence) and MASKED_CARD in " ".join(confidential.evidence)
    assert "CONFIDENTIAL" in " ".join(confidential.evidence)      # still says what matched
    assert all(len(e) <= 80 for e in excerpts(item.findings))

    notifier = Notifier(gw.settings, gw.store)
    notifier.secret = await gw.store.secret("notify-link-key")
    assert await notifier.run_once() >= 2
    assert {m.rcpt_tos[0] for m in sink.messages} >= {"alice@example.gov", "itsd@example.gov"}
    for received in sink.messages:
        notice = email.message_from_bytes(received.data, policy=email.policy.default)
        for part in notice.walk():
            if part.get_content_maintype() == "text":
                no_raw(part.get_content(), f"the notice to {received.rcpt_tos[0]}")
        no_raw(received.data.decode("latin-1"), f"the notice to {received.rcpt_tos[0]} (raw)")
    staff = next(m for m in sink.messages if m.rcpt_tos == ["alice@example.gov"])
    staff_text = email.message_from_bytes(staff.data, policy=email.policy.default).get_body(("plain",)).get_content()
    assert MASKED_SSN in staff_text and "CONFIDENTIAL" in staff_text      # the quoted, masked excerpt

    await accounts.add_user(gw.store, "rita", "reviewer", "rita-review-password-1")
    token = await accounts.new_token(gw.store, "rita")
    with TestClient(review_app(gw.settings), follow_redirects=True) as client:
        api = client.get(f"/api/held/{item_id}", headers={"Authorization": f"Bearer {token}"})
        assert api.status_code == 200
        no_raw(json.dumps(api.json()["findings"]), "the API")
        assert MASKED_SSN in json.dumps(api.json()["findings"])
        login(client, "rita", "rita-review-password-1")
        page = client.get(f"/held/{item_id}").text
        evidence_table = page.split("<h2>Text", 1)[0]          # the body itself is shown to reviewers below
        no_raw(evidence_table, "the review page's evidence")
        assert MASKED_SSN in evidence_table

    config = tmp_path / "cli.toml"
    config.write_text(f'[quarantine]\nurl = "{gw.settings.quarantine.url}"\n[domains]\nlocal = ["example.gov"]\n')
    capsys.readouterr()
    for args in ((), ("--json",)):
        argv = ["quarantine", "show", item_id, *args, "--config", str(config)]
        assert await asyncio.to_thread(cli.main, argv) == 0       # the CLI runs its own event loop
        out = capsys.readouterr().out
        no_raw(out, f"quarantine show {' '.join(args)}")
        assert MASKED_SSN in out
    no_raw("\n".join(r.getMessage() for r in caplog.records if r.name.startswith("gateway")), "the log")


def test_debug_logging_keeps_held_mail_out_of_the_log():
    """At debug level aiosqlite would log each statement's parameters: the held message and its findings."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.setup(LogSettings(level="DEBUG"), stream=io.StringIO())
        assert not logging.getLogger("aiosqlite").isEnabledFor(logging.DEBUG)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


# --- the masking step on its own and each detector's evidence ------------------------------------


@pytest.mark.parametrize(("raw", "masked", "gone"), [
    ("SSN 536-22-8471", MASKED_SSN, "536-22"),
    ("SSN 536 22 8471", MASKED_SSN, "536 22"),
    ("ssn 536228471", MASKED_SSN, "536228471"),
    ("card 4556 7375 8689 9855", MASKED_CARD, "4556 7375"),
    ("card 4556737586899855", "************9855", "45567375"),
    ("iban DE89 3704 0044 0532 0130 00", "**** **** **** **** **30 00", "3704 0044"),
    ("password: Hunter2!xyz for user jroe", "********", "Hunter2"),
    ("token ghp_" + "a1B2c3D4e5" * 3 + "a1B2c3", "ghp_…", "a1B2c3D4e5"),
    ("AKIAZ7QWERTYUIOPASDF", "AKIA…", "Z7QWERTY"),
    ("https://jroe:S3cretPass@files.example.org/x", "********", "S3cretPass"),
])
def test_mask_hides_each_identifier_the_pii_and_credentials_detectors_recognise(raw, masked, gone):
    from gateway import evidence
    out = evidence.mask(f"...see {raw} today")
    assert masked in out and gone not in out
    assert evidence.mask(out) == out                      # masking masked evidence changes nothing


def test_an_excerpt_is_short_masked_and_around_what_matched():
    from gateway import evidence
    text = "x " * 200 + BODY + " y" * 200
    start = text.index("CONFIDENTIAL")
    out = evidence.excerpt(text, start, start + len("CONFIDENTIAL"))
    assert len(out) <= 80 and "CONFIDENTIAL" in out and MASKED_SSN in out
    no_raw(out, "the excerpt")
    # a cut at the edge never leaves part of an unmasked number behind
    for cut in range(len(BODY)):
        no_raw(evidence.excerpt(BODY + " " + "z" * cut, len(BODY) + 1, len(BODY) + 1 + cut), "an edge excerpt")
    long_match = "CONFIDENTIAL " * 20
    assert len(evidence.excerpt(long_match, 0, len(long_match))) <= 80


def test_every_finding_keeps_only_masked_evidence_whoever_made_it():
    f = Finding(kind="confidential.general", detector="confidential", detail=f"Marker in a label {BODY!r}",
                evidence=(f"body: {BODY}",))
    no_raw(" ".join(f.evidence) + f.detail, "a finding")
    loaded = Finding.from_dict({"kind": "x.y", "detector": "x", "detail": "d", "evidence": [BODY]})
    no_raw(" ".join(loaded.evidence), "a finding read back from the store")


SECRETS = " SSN 536-22-8471, card 4556 7375 8689 9855, password: Hunter2!xyz for user jroe, token ghp_" + \
    "a1B2c3D4e5" * 3 + "a1B2c3. "


def salted(body: str) -> str:
    """The secrets next to every sentence, so that any excerpt of the body has some of them."""
    return SECRETS + SECRETS.join(re.split(r"(?<=[.!?])\s+", body)) + SECRETS


CASES = {
    "confidential": ("Update", "CONFIDENTIAL\n\nMinutes of the selection panel. Privileged and confidential."),
    "pii": ("Payroll", "Employee records."),
    "credentials": ("Access", "Here is the login."),
    "abusive": ("note", "You are a fucking idiot and everyone knows it. I will kill you if you report this."),
    "political": ("Important", test_political.FUNDRAISING),
    "commercial": ("Save 50% today only!", test_commercial.AD),
    "chain_letter": ("Fwd: FW: read this", test_chain_letter.LUCK),
}


@pytest.mark.parametrize("name", [*CASES, "social_login"])
async def test_each_text_detector_quotes_only_masked_short_excerpts(name):
    if name == "social_login":
        findings = await contentkit.run(contentkit.detector(name), subject="Reset your password",
                                        body=salted("We received a request to reset your password. Enter the "
                                                    "code to reset your password now."),
                                        sender="security@facebookmail.com", to="alice@example.gov")
    else:
        subject, body = CASES[name]
        findings = await contentkit.run(contentkit.detector(name), subject=subject, body=salted(body),
                                        sender="alice@example.gov", to="bob@example.org",
                                        direction=Direction.OUTBOUND)
    assert [f for f in findings if f.evidence], name
    for f in findings:
        shown = " | ".join(f.evidence) + " | " + f.detail
        no_raw(shown, f"{name} evidence")
        assert "Hunter2" not in shown and "a1B2c3D4e5" not in shown, shown
    assert all(len(e) <= 80 for e in excerpts(findings)), excerpts(findings)


@pytest.mark.parametrize("name", sorted(set(REGISTRY) - {"antivirus", "ocr", "adult_content"}))
async def test_no_detector_shows_a_recognised_value(name):
    """Every detector (those needing clamd, OCR or a model aside) on the salted message: whatever it
    reports quotes no value in the clear."""
    raw = message(salted("CONFIDENTIAL. Please keep this confidential. Buy now and save 50%. Forward this to "
                         "10 people or bad luck will follow."), subject=f"FW: Records{SECRETS}")
    for f in await contentkit.run(contentkit.detector(name), raw=raw, sender="alice@example.gov",
                                  to="bob@example.org", direction=Direction.OUTBOUND):
        shown = " | ".join(f.evidence) + " | " + f.detail
        no_raw(shown, f"{name}: {f.kind}")
        assert "Hunter2" not in shown and "a1B2c3D4e5" not in shown, shown


async def test_a_hit_in_rewritten_text_is_quoted_from_the_text_as_written():
    """The content detectors read normalised text (letters joined, l33t read: "S3cr3t0x" -> "secretox",
    which no recogniser knows); the excerpt maps the hit back and quotes the message as written, masked."""
    body = "Y o u  a r e  a  f u c k i n g idiot. password: S3cr3t0x for user jroe. I will kill you."
    [f] = await contentkit.run(contentkit.detector("abusive"), subject="x", body=body)
    shown = " | ".join(f.evidence)
    assert "f u c k i n g idiot" in shown and "I will kill you" in shown
    assert "secretox" not in shown.lower() and "S3cr3t0x" not in shown and "jroe" not in shown


async def test_a_sensitivity_label_is_quoted_masked_and_short():
    label = "Confidential - " + "Personnel " * 6 + "SSN 536-22-8471"
    [f] = await contentkit.run(contentkit.detector("confidential"), subject="Hello", body="See attached.",
                               extra_headers=f"Sensitivity: {label}\r\n", direction=Direction.OUTBOUND)
    assert f.kind == "confidential.label"
    no_raw(f.detail + " | ".join(f.evidence), "the label")
    assert all(len(e.split(": ", 1)[1]) <= 80 for e in f.evidence), f.evidence
