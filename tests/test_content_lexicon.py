"""The shared lexicon compiler: the trie expression finds exactly what a plain alternation of the
entries finds, and the shared scan gives each detector its own hits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.detectors.contentscan import CONTENT, normalise
from gateway.detectors.lexicon import Entry, Lexicon, LexiconError, parse_entries, split_first
from gateway.text import extract
from tests.contentkit import detector, mail, run
from tests.test_chain_letter import HOAX, LUCK, PYRAMID
from tests.test_commercial import AD, BUSINESS
from tests.test_political import FUNDRAISING

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
NAMES = ("commercial", "political", "abusive", "chain_letter")


def texts() -> list[str]:
    found = [AD, BUSINESS, FUNDRAISING, LUCK, PYRAMID, HOAX,
             "You are a f*cking idiot, sh1t, b!tch, a$$hole; I will kill you. Go back to your country."]
    for path in sorted(CORPUS.glob("*/*.eml"))[::40]:     # a sample of real mail when the corpus is here
        found.append(extract(mail(path.read_bytes())).joined()[:30000])
    return [normalise(t) for t in found]


@pytest.mark.parametrize("name", NAMES)
def test_trie_finds_what_the_plain_alternation_finds(name):
    lexicon = detector(name).lexicon
    plain = re.compile(r"(?<![\w$])(?:" + "|".join(f"(?P<e{i}>{b})" for i, b in enumerate(lexicon.bodies))
                       + r")(?![\w])", re.IGNORECASE)
    hits = 0
    for text in texts():
        expected = {(m.start(), lexicon.entries[int(m.lastgroup[1:])]) for m in plain.finditer(text)}
        assert {(h.start, h.entry) for h in lexicon.scan(text, limit=100_000)} == expected
        hits += len(expected)
    assert hits >= 3


def test_split_first_distributes_leading_alternatives():
    assert split_first("(?:forward|send) it") == [("f", "orward it"), ("s", "end it")]
    assert split_first("(?:i )?hope") == [("i", " hope"), ("h", "ope")]
    assert split_first("f+uck") == [("f", "f*uck")]
    assert split_first(r"\d\d? ?% off") == [(r"\d", r"\d? ?% off")]


async def test_shared_scan_gives_each_detector_its_hits_once_per_message():
    for name in NAMES:
        detector(name)
    raw = (b"From: a@example.org\r\nTo: b@example.gov\r\nSubject: offer\r\n\r\n"
           b"Order now and save 50%! Sign the petition. Forward this to 10 people. You idiot, fuck off.\r\n")
    m = mail(raw)
    results = {name: await CONTENT.hits(m, name) for name in NAMES}
    assert [h.entry.label for h in results["commercial"][0]][:1] == ["call_to_buy"]
    assert {h.entry.label for h in results["political"][0]} == {"petition"}
    assert "forward_request" in {h.entry.label for h in results["chain_letter"][0]}
    assert {"insult", "harassment"} <= {h.entry.label for h in results["abusive"][0]}
    assert "content-lexicons" in m.parsed.notes       # one scan, shared


def test_lexicon_errors_name_the_file_and_line():
    with pytest.raises(LexiconError, match=r"x.txt:2: expected"):
        parse_entries("1.0\tok\tfine\nnot an entry\n", "x.txt")
    with pytest.raises(LexiconError, match="entry"):
        Lexicon([Entry(1.0, "bad", "(unclosed")], source="y.txt")


GOVERNMENT_MEMO = """Subject matter for the Tuesday staff meeting:

1. The county is a political subdivision of the State; the annexation petition filed by the city is under
   review by counsel, and the election of the subdivision board is set for March.
2. Evidence unit: maintain the chain of custody for every sample; forward the custody forms to the lab.
3. Commercial vehicle enforcement: the weigh station will check commercial driver's licences and the
   price list for permit fees ($45.00 per permit) is attached.
4. Public notice of a closed meeting: the commission meets in closed session on Thursday to discuss
   pending litigation and the campaign finance audit of the 2024 election.
5. The Legislature will vote on the budget bill next week; Democrats and Republicans disagree on the
   gas tax. Please send comments to the government affairs office by Friday.
"""


@pytest.mark.parametrize("direction", ["inbound", "outbound", "internal"])
async def test_government_trap_phrases_trip_no_content_detector(direction):
    from gateway.model import Direction

    for name in (*NAMES, "social_login", "external_email"):
        findings = await run(name, subject="Staff meeting agenda", body=GOVERNMENT_MEMO,
                             sender="clerk@example.gov", to="board@example.gov", direction=Direction(direction))
        assert findings == [], name
