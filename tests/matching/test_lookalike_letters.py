"""Look-alike letters do not walk department mail out: a CONFIDENTIAL stamp with a Cyrillic letter, in
full-width letters, letter-spaced, dotted or in l33t, and chain-letter or political wording in look-alike
or full-width letters, are held outbound; real Russian and Greek text, spaced headings, "U.S.A." and
product codes stay clean. One message per case, through the pipeline with the shipped policy."""

from __future__ import annotations

import pytest

from gateway import config
from gateway import policy as policy_module
from gateway.model import Envelope
from gateway.pipeline import Pipeline
from tests.support import contentkit
from tests.support.peers import make_message

CONTENT = '[detectors]\nenabled = ["confidential", "political", "chain_letter", "commercial", "abusive", "pii", ' \
          '"credentials"]\n'


@pytest.fixture
def pipeline(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(CONTENT)
    settings = config.from_dict({"policy": {"site": str(site)}})
    return Pipeline(settings, policy_module.load(settings))


async def outbound(pipeline: Pipeline, subject: str, body: str):
    inspection = await pipeline.inspect(Envelope("alice@example.gov", ("bob@example.org",), "127.0.0.1"),
                                        make_message(subject=subject, body=body, sender="alice@example.gov",
                                                     to="bob@example.org"))
    return inspection.verdict


PANEL = "\n\nMinutes of the selection panel, 3 December.\nScores for the three applicants are attached.\n"


@pytest.mark.parametrize("stamp", [
    "\u0421ONFIDENTIAL",                                            # Cyrillic С
    "CONF\u0406DENTIAL",                                            # Cyrillic І
    "CONF\u0399D\u0395\u039d\u03a4\u0399\u0391L",                        # Greek Ι Ε Ν Τ Ι Α
    "\uff23\uff2f\uff2e\uff26\uff29\uff24\uff25\uff2e\uff34\uff29\uff21\uff2c",    # full-width
    "C O N F I D E N T I A L",
    "C.O.N.F.I.D.E.N.T.I.A.L",
    "C0NF1D3NT1AL",
    "CONFI\u200bDENTIAL",                                           # zero-width space, as before
])
async def test_a_disguised_confidential_stamp_is_held(pipeline, stamp):
    verdict = await outbound(pipeline, "Panel minutes", stamp + PANEL)
    assert verdict.action.value == "quarantine", verdict
    [f] = [f for f in verdict.findings if f.detector == "confidential"]
    assert f.kind == "confidential.marker"
    written = " ".join(stamp.replace("\u200b", "").split())     # extraction drops zero-width characters
    assert f.evidence[0].startswith("body: " + written[:12])     # quoted as written


async def test_a_disguised_stamp_is_quoted_as_written_with_values_masked():
    body = "C.O.N.F.I.D.E.N.T.I.A.L - SSN 536-22-8471 for the applicant\n\nScores attached."
    [f] = await contentkit.run("confidential", subject="Panel", body=body)
    assert "C.O.N.F.I.D.E.N.T.I.A.L" in f.evidence[0]
    assert "536-22-8471" not in f.evidence[0] and "8471" in f.evidence[0]


LOOKALIKE = str.maketrans("aeopcxy", "\u0430\u0435\u043e\u0440\u0441\u0445\u0443")      # Cyrillic а е о р с х у


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


async def test_chain_letter_in_lookalike_letters_is_held(pipeline):
    body = ("Hi all,\n\n" + "This is not a joke. Forward this message to 10 people within 24 hours or you will have "
            "bad luck for seven years. Do not break the chain.".translate(LOOKALIKE) + "\n\nMaria\n")
    verdict = await outbound(pipeline, "read this", body)
    assert verdict.action.value != "deliver", verdict
    assert any(f.kind.startswith("chain_letter.") for f in verdict.findings)


async def test_political_wording_in_full_width_letters_is_held(pipeline):
    vote = fullwidth("Vote for Jane Miller on November 3rd! Please donate today to re-elect Jane Miller.")
    body = ("Team,\n\n" + vote
            + "\n" + "Paid for by Miller for Senate.".translate(LOOKALIKE) + "\n")
    verdict = await outbound(pipeline, "Election", body)
    assert verdict.action.value != "deliver", verdict
    assert any(f.kind.startswith("political.") for f in verdict.findings)


@pytest.mark.parametrize(("subject", "body"), [
    ("Встреча", "Добрый день! Отчёт по проекту готов, сроки согласованы. Сор и рос в отчёте не упоминаются. "
                "Пожалуйста, посмотрите приложение до пятницы.\nС уважением, Сергей"),
    ("Συνάντηση", "Καλημέρα σας, η έκθεση για το έργο είναι έτοιμη. Παρακαλώ δείτε το συνημμένο έως την Παρασκευή."),
    ("Quarterly report", "S U M M A R Y\n\nThe permit office closed 212 files this quarter.\n\nA G E N D A\n"
                         "1. Budget\n2. Staffing\n"),
    ("Visit", "The delegation from the U.S.A. arrives Monday; the U.K. team joins on Tuesday at 10 a.m."),
    ("Order", "Please reorder toner X5-A7B-100 and C0-3L1 cables for room 101; the quote was $100 for both."),
])
async def test_ordinary_mail_stays_clean(pipeline, subject, body):
    verdict = await outbound(pipeline, subject, body)
    assert verdict.action.value == "deliver", verdict.findings
