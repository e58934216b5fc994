"""Evidence in context on the message page: the matched text highlighted in the body and in the
attachment's text after the detectors' folding (punctuation, look-alike letters, l33t), with every
sensitive value a highlight touches shown masked, and everything escaped."""

from __future__ import annotations

import dataclasses
import re
import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from gateway.model import Finding
from tests.support.quarantine_fixtures import held_item
from tests.support.review_fixtures import ThreadSink, login, make_site, review_app

RAW = ("From: alice@example.gov\r\nTo: bob@example.org\r\nSubject: Board pack\r\nMIME-Version: 1.0\r\n"
       "Content-Type: multipart/mixed; boundary=BB\r\n\r\n"
       "--BB\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
       "Hi <b>Bob</b>, this pack is C0NF1D.ENT1AL and my SSN is 536-22-6789, thanks.\r\n"
       "--BB\r\nContent-Type: text/plain; charset=utf-8; name=notes.txt\r\n"
       "Content-Disposition: attachment; filename=notes.txt\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
       "Notes: \u0441onfidential (Cyrillic c), payroll SSN 536-22-6789.\r\n--BB--\r\n").encode()


@pytest.fixture
def site(tmp_path):
    sink = ThreadSink().start()
    base = held_item(subject="Board pack", raw=RAW, kinds=())
    item = dataclasses.replace(base, findings=(
        Finding("confidential.marking", "confidential", "marking 'confidential' in the body", part="body",
                evidence=("marking 'confidential'",)),
        Finding("pii.ssn", "pii", "SSN in the body", part="body", evidence=("SSN ***-**-6789",)),
        Finding("confidential.marking", "confidential", "marking 'confidential' in part 2: notes.txt",
                part="part 2: notes.txt", evidence=("marking 'confidential'",)),
    ))
    yield make_site(tmp_path, sink, {"pack": item})
    sink.stop()


def marks(html: str) -> list[str]:
    return re.findall(r'<mark class="evidence">(.*?)</mark>', html)


def test_evidence_is_highlighted_across_obfuscation_with_values_masked(site):
    item = site.items["pack"]
    with TestClient(review_app(site.settings), follow_redirects=True) as client:
        login(client, "rita")
        page = client.get(f"/held/{item.id}").text
    body = page[page.index('id="body-text"'):]
    body = body[:body.index("</pre>")]
    assert marks(body) == ["C0NF1D.ENT1AL", "***-**-6789"]
    assert "536-22-6789" not in body and "&lt;b&gt;Bob&lt;/b&gt;" in body
    notes = page[page.index('class="text attachment-text"'):]
    notes = notes[:notes.index("</pre>")]
    assert marks(notes) == ["\u0441onfidential", "***-**-6789"]
    assert "536-22-6789" not in notes


def test_highlight_reads_look_alikes_from_the_detectors_confusables_data():
    """Letters the detectors read through Unicode's confusables data (gateway/matching/normaliser.py), not
    only a short list of Cyrillic and Greek ones: an Armenian "օ" and a small-capital "ᴄ" in a marking."""
    from gateway.matching.normaliser import fold
    from gateway.review.render import highlight

    text = "Board pack, \u1d04\u0585nfidential until the vote. Agenda attached."
    assert "confidential" in fold(text)                 # what the detector reads
    shown, count = highlight(text, ["confidential"])
    assert count == 1 and marks(str(shown)) == ["\u1d04\u0585nfidential"]
