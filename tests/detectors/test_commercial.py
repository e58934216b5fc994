"""commercial: advertising, solicitation, bulk-mail signals, staff promoting a private business."""

from __future__ import annotations

import json

import pytest

from gateway.config import SHIPPED_POLICY_DIR
from tests.support.contentkit import detector, header, run
from tests.support.peers import make_message, send

COMMERCIAL = detector("commercial")

AD = """Dear Friend,

Limited time offer! Get 50% off our premium vitamin supplements. Order now and receive free shipping
on every order. Only $19.95 per bottle, satisfaction guaranteed or your money back.

Click here to order: http://shop.example.com/order

To be removed from our mailing list, reply with REMOVE in the subject.
"""

BUSINESS = """Hi all,

Just a quick note: I'm now an independent consultant with Scentsy! My new business is up and running and
I'm taking orders this week. Check out my website for the fall catalogue, and there are special offers
for co-workers. Free shipping on orders over $50.
"""


async def test_advertisement_fires_with_phrases_and_model_features_as_evidence():
    [finding] = await run(COMMERCIAL, subject="Save 50% today only!", body=AD)
    assert finding.kind == "commercial.advertising"
    assert finding.detector == "commercial"
    assert finding.detail.startswith("Advertising or solicitation (")
    assert "call to buy" in finding.detail and "discount" in finding.detail
    assert finding.score >= 0.6
    assert any(e.startswith("call to buy: ") and "Order now" in e for e in finding.evidence)
    assert any(e.startswith("discount: ") and "50% off" in e for e in finding.evidence)
    assert any(e.startswith("model features: ") for e in finding.evidence)


async def test_staff_promoting_a_private_business_is_commercial_business():
    [finding] = await run(COMMERCIAL, subject="My new business", body=BUSINESS, sender="carol@example.gov")
    assert finding.kind == "commercial.business"
    assert any(e.startswith("business: ") and "Scentsy" in e for e in finding.evidence)


async def test_a_short_note_promoting_a_side_business_fires_on_the_lexicon_alone():
    body = "Hey all, I started a side business making custom cakes - check out my page and place your order!"
    strict_model = detector("commercial", threshold=0.999)    # so that the lexicon rule has to decide
    [finding] = await run(strict_model, subject="cakes", body=body, sender="dave@example.gov")
    assert finding.kind == "commercial.business"
    assert "short message with lexicon score" in finding.detail


async def test_a_short_note_with_one_sales_word_does_not_fire():
    body = "The vendor's quote includes free shipping; can you check it against the contract before Friday?"
    assert await run(COMMERCIAL, subject="quote", body=body) == []


async def test_bulk_mail_signals_are_evidence():
    html = ("<html><body><p>Exclusive offer for our valued customers: 30% off all laptops this weekend.</p>"
            "<p><a href='http://x.example/buy'>Buy now</a> while supplies last.</p>"
            "<img src='http://track.example/open.gif?uid=123' width='1' height='1'></body></html>")
    raw = (f"From: deals@shop.example\r\nTo: staff@example.gov\r\nSubject: Weekend sale\r\n"
           f"List-Unsubscribe: <mailto:unsubscribe@shop.example>\r\nMIME-Version: 1.0\r\n"
           f"Content-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n").encode()
    [finding] = await run(COMMERCIAL, raw=raw)
    assert "tracking pixel in the HTML" in finding.evidence
    assert "List-Unsubscribe header (bulk mail)" in finding.evidence


@pytest.mark.parametrize(("subject", "body"), [
    ("Commercial vehicle inspections", "The commercial vehicle inspection schedule for the district is attached. "
     "Carriers must present the commercial driver's licence and the registration at the weigh station."),
    ("Contract award", "The purchasing office awarded the contract for road salt at a unit price of $64.50 per "
     "ton, total $1,250,000. The offer from the second bidder was not responsive. Please update the ledger."),
    ("Public notice", "Public notice of a closed meeting: the board will meet in closed session on Tuesday to "
     "discuss pending litigation. The agenda is posted on the bulletin board."),
    ("Re: budget", "Thanks for the figures. Can we meet Thursday to go over the sales tax revenue forecast and "
     "the fee schedule for permits? I'll bring the draft."),
    ("Staff newsletter", "This month: the new badge readers, the blood drive, and a reminder to complete the "
     "security training. To unsubscribe from this internal newsletter, contact the communications office."),
])
async def test_government_mail_does_not_fire(subject, body):
    assert await run(COMMERCIAL, subject=subject, body=body) == []


def test_shipped_model_is_small_and_documents_its_provenance():
    path = SHIPPED_POLICY_DIR / "models" / "commercial.json"
    data = json.loads(path.read_text())
    assert "SpamAssassin" in data["provenance"] and "Enron" in data["provenance"]
    assert 100 < len(data["weights"]) <= 2000
    assert path.stat().st_size < 100_000


async def test_inbound_advertisement_is_tagged_through_the_gateway(gw, sink):
    message = make_message(subject="Save 50% today only!", body=AD, sender="deals@shop.example",
                           to="staff@example.gov")
    code, _, _ = await send(gw.port, "deals@shop.example", ["staff@example.gov"], message, source="127.0.0.2")
    assert code == 250
    [got] = await sink.wait_for(1)
    assert b"Subject: [Advertisement] Save 50% today only!" in got.data
    assert b"X-Gateway-Verdict: tag; rule=inbound/commercial" in got.data
    assert header(got.data, "X-Gateway-Findings").startswith("commercial.advertising (Advertising or solicitation (")


async def test_outbound_solicitation_is_quarantined(gw, sink):
    message = make_message(subject="My new business", body=BUSINESS, sender="carol@example.gov")
    code, _, _ = await send(gw.port, "carol@example.gov", ["friend@example.org"], message)
    assert code == 250
    [held] = await gw.store.list()
    assert held.rule == "outbound/commercial" and held.kinds == ("commercial.business",)
    assert sink.messages == []


def test_the_models_features_are_those_of_every_unigram_and_bigram():
    """LinearModel.contributions intersects word pairs with the model's bigrams instead of making a
    string of every pair: the weighted features found must be exactly those of `features(tokens)`."""
    import random

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from gateway.matching.linear import LinearModel, features, tokens
    from tests.message.test_corpus_robustness import CORPUS_DIR

    model = LinearModel.load(SHIPPED_POLICY_DIR / "models" / "commercial.json")
    vocabulary = [*sorted({w for k in model.weights for w in k.split(" ")}), "and", "the", "x", "1st", "don't"]

    def expected(text: str) -> set[tuple[str, float]]:
        return {(f, model.weights[f]) for f in features(tokens(text)) & set(model.weights)}

    files = sorted(CORPUS_DIR.rglob("*.eml"))
    texts = [p.read_bytes()[:20000].decode("utf-8", "replace") for p in files[::max(1, len(files) // 300)]]
    assert len(texts) >= 100 and sum(bool(expected(t)) for t in texts) >= 50
    for text in texts:
        assert set(model.contributions(text)) == expected(text)

    @settings(max_examples=500, deadline=None)
    @given(st.lists(st.sampled_from(vocabulary), max_size=60), st.randoms())
    def check(words: list[str], rnd: random.Random) -> None:
        text = "".join(w + rnd.choice([" ", ", ", "\n", ". ", "-", "'"]) for w in words)
        found = model.contributions(text)
        assert set(found) == expected(text) and len(found) == len(set(found))
        assert [w for _, w in found] == sorted((w for _, w in found), reverse=True)

    check()
