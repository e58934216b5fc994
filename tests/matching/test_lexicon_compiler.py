"""The shared lexicon compiler: the trie expression finds exactly what a plain alternation of the
entries finds, and the shared scan gives each detector its own hits."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.matching.contentscan import ScanGroup
from gateway.matching.normaliser import for_lexicons as normalise
from gateway.matching.prefilter import Prefilter, widen
from gateway.matching.weighted import Entry, Lexicon, LexiconError, gate, parse_entries, split_first
from gateway.message.text import extract
from gateway.model import Envelope
from tests.detectors.test_chain_letter import HOAX, LUCK, PYRAMID
from tests.detectors.test_commercial import AD, BUSINESS
from tests.detectors.test_political import FUNDRAISING
from tests.support.contentkit import SETTINGS, detector, mail, run
from tests.support.paths import CORPUS

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
    group = ScanGroup("content-lexicons")
    for name in NAMES:
        group.add(name, detector(name).lexicon)
    raw = (b"From: a@example.org\r\nTo: b@example.gov\r\nSubject: offer\r\n\r\n"
           b"Order now and save 50%! Sign the petition. Forward this to 10 people. You idiot, fuck off.\r\n")
    m = mail(raw)
    m.context.lexicons = group          # as the pipeline's context does
    results = {name: await group.hits(m, name, SETTINGS) for name in NAMES}
    assert [h.entry.label for h in results["commercial"][0]][:1] == ["call_to_buy"]
    assert {h.entry.label for h in results["political"][0]} == {"petition"}
    assert "forward_request" in {h.entry.label for h in results["chain_letter"][0]}
    assert {"insult", "harassment"} <= {h.entry.label for h in results["abusive"][0]}
    assert m.context.lexicon_hits is not None and m.context.lexicon_hits.done()     # one scan, shared


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


# --- the Hyperscan prefilter (gateway/matching/prefilter.py): a superset, never a miss -------------------------

UNICODE_TEXTS = [normalise(t) for t in (
    "Je vends mes délicieux cookies maison, commandez maintenant : order now!",
    "Selling homemade crème brûlée cakes – 50 % off, click here to order",
    "Ты idiot, f\u00fcck off… donate today to the campaign",
    "Präsident: vote for Müller, paid for by the Committee to Elect Müller",
    "٣٠% off ― buy now ‐ limited time offer\u00a0only",
)]


@pytest.mark.parametrize("name", NAMES)
def test_prefilter_reports_every_entry_that_matches(name):
    """For every text, every entry that `re` finds is among the prefilter's candidates."""
    lexicon = detector(name).lexicon
    prefilter = Prefilter([gate(b) for b in lexicon.bodies])
    matched = 0
    for text in texts() + UNICODE_TEXTS:
        found = {i for i, single in enumerate(lexicon.singles) if single.search(text)}
        assert found <= prefilter.candidates(text), [lexicon.entries[i].pattern for i in found]
        matched += len(found)
    assert matched >= 10


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_prefilter_finds_generated_matches_of_any_entry(data):
    """Text generated from an entry's own expression (with any Unicode around it) is always a candidate."""
    name = data.draw(st.sampled_from(NAMES))
    lexicon = detector(name).lexicon
    i = data.draw(st.integers(0, len(lexicon.entries) - 1))
    try:
        middle = data.draw(st.from_regex(re.compile(lexicon.bodies[i]), fullmatch=True))
    except Exception:           # an expression hypothesis cannot generate from (look-arounds)
        return
    before = data.draw(st.sampled_from([" ", "\n", "(", "«", ""]))
    after = data.draw(st.sampled_from([" ", ".", "»", ""]))
    text = before + middle + after
    if lexicon.singles[i].search(text):
        assert i in _prefilter(name).candidates(text)


def _prefilter(name: str, cache: dict = {}) -> Prefilter:  # noqa: B006 - a cache on purpose
    if name not in cache:
        cache[name] = Prefilter([gate(b) for b in detector(name).lexicon.bodies])
    return cache[name]


def test_widen_accepts_what_unicode_classes_accept():
    assert widen(r"\w+ \d") == r"[\w\x{80}-\x{10ffff}]+ [\d\x{80}-\x{10ffff}]"
    assert widen(r"[\w.]x[^\w]") == r"[\w\x{80}-\x{10ffff}.]x[^\w]"    # a negated class stays as it is
    assert widen(r"\bfree\b") == r"\bfree"                              # only the leading boundary stays
    assert widen(r"a\\w") == r"a\\w"                                    # an escaped backslash, then a "w"
    entry = Prefilter([r"(?:\w+ ){0,3}cookies"])
    assert entry.candidates("délicieux cookies") == {0}
    assert entry.candidates("nothing to see") == set()


def test_an_entry_hyperscan_cannot_take_is_always_a_candidate():
    prefilter = Prefilter([r"free", r"(a)(?P=x)", r"x{,3}y"])       # bad back-reference; Python-only {,n}
    assert prefilter.always == {1, 2}
    assert prefilter.candidates("nothing") == {1, 2}
    assert prefilter.candidates("free") == {0, 1, 2}


def test_prefilter_scans_from_several_threads_at_once():
    from concurrent.futures import ThreadPoolExecutor

    prefilter = _prefilter("commercial")
    text = normalise(AD) * 20
    expected = prefilter.candidates(text)
    assert expected
    with ThreadPoolExecutor(4) as pool:
        assert all(r == expected for r in pool.map(lambda _: prefilter.candidates(text), range(200)))


def test_building_a_pipeline_compiles_the_lexicons_so_the_first_message_does_not_wait():
    from gateway import config, policy
    from gateway.pipeline import Pipeline

    settings = config.from_dict({})
    group = ScanGroup("content-lexicons")
    group.add("commercial", detector("commercial").lexicon)
    assert group._compiled is None                 # a new member drops the compiled form; compiled on use
    pipeline = Pipeline(settings, policy.load(settings))
    assert pipeline.lexicons._compiled is not None
    assert set(pipeline.lexicons.members) == {"commercial", "political", "abusive", "chain_letter"}
    assert pipeline.mail(Envelope("a@example.gov", ("b@example.org",)), b"Subject: x\r\n\r\nhi\r\n"
                         ).context.lexicons is pipeline.lexicons       # each pipeline its own lexicons


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from([*"ab1@$*_-. \n\té", "f u c k", "s.h.i.t", "a ", " i ", "x_y"]), max_size=30))
def test_the_spaced_letters_hint_never_misses(pieces):
    """normalise() joins s p a c e d letters only when Hyperscan says the hint may match: it must say so
    wherever the hint's regular expression matches (a superset), else spaced words would go unread."""
    from gateway.matching.normaliser import _SPACED_HINT, _spaced_hint

    lowered = "".join(pieces).lower()
    if re.search(_SPACED_HINT, lowered):
        assert _spaced_hint().candidates(lowered)
    assert normalise("y o u are s t u p i d") == "you are stupid"


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from([*"ab1@$*_-. \n\téAZ", "f u c k", "s.h.i.t", "C O N F I D E N T I A L", "word ",
                                 "U.S.A.", "e.g. ", "a-b-c-d-e-f-g-h-i-j-k-l-m-n-o-p-q-r-s-t-u-v-w-x-y-z-"]),
                max_size=120))
def test_spaced_letters_found_near_the_hints_are_those_of_a_full_scan(pieces):
    """The spaced-letter expression runs only in windows around its hint's matches: it must find exactly
    what it finds over the whole text, runs longer than a window included."""
    from gateway.matching.normaliser import _SPACED, _spaced

    text = "".join(pieces)
    assert [m.span() for m in _spaced(text)] == [m.span() for m in _SPACED.finditer(text)]
