"""abusive: profanity, obscenity, harassment, threats, hate; obfuscation; the Scunthorpe problem."""

from __future__ import annotations

import pytest

from gateway.matching.normaliser import for_lexicons as normalise
from tests.support.contentkit import detector, header, run
from tests.support.peers import make_message, send

ABUSIVE = detector("abusive")


async def check(body: str, subject: str = "note"):
    return await run(ABUSIVE, subject=subject, body=body)


@pytest.mark.parametrize(("body", "kind", "word"), [
    ("You are a fucking idiot and everyone knows it.", "abusive.harassment", "fucking"),
    ("This shit is bullshit, what a bitch.", "abusive.profanity", "bitch"),
    ("I know where you live. Watch your back.", "abusive.threat", "i know where you live"),
    ("I will kill you if you report this.", "abusive.threat", "i will kill you"),
    ("Go back to your country, nobody wants you here.", "abusive.hate", "go back to your country"),
    ("Stop hiring these faggots.", "abusive.hate", "faggots"),
    ("Deport all the muslims, they are vermin.", "abusive.hate", "deport all the muslims"),
    ("typical paki, always late", "abusive.hate", "paki"),
])
async def test_abusive_messages_fire_with_kind_detail_and_evidence(body, kind, word):
    [finding] = await check(body)
    assert finding.kind == kind
    assert finding.detector == "abusive"
    assert finding.detail.startswith("Abusive language (")
    assert word in finding.detail.lower()
    assert any(word in e.lower() for e in finding.evidence)
    assert finding.score >= 1.0


@pytest.mark.parametrize(("body", "word"), [
    ("what the f*ck is this, f**k off", "f*ck"),
    ("fuuuuuck this job", "fuuuuuck"),
    ("you are a f u c k i n g disgrace", "f u c k i n g"),      # quoted as written
    ("f.u.c.k. this", "f.u.c.k"),
    ("total sh1t and you're an a$$hole", "a$$hole"),
    ("shut up you b!tch", "b!tch"),
    ("what a dumb @ss, a real b1tch", "b1tch"),
])
async def test_obfuscated_spellings_are_caught(body, word):
    [finding] = await check(body)
    assert word in finding.detail
    assert finding.kind.startswith("abusive.")


@pytest.mark.parametrize("body", [
    "The Scunthorpe office and the Essex and Middlesex county offices met in Sussex.",
    "The assassin in the novel by Dickens ordered a cocktail in first class.",
    "Please assess the passage of the bill; the grass by the shell station needs cutting.",
    "Penistone council analysed the therapist's report on the cockpit and the shiitake farm.",
    "Dick Cheney spoke; Moby Dick is assigned reading.",
    "The hoe is in the garden shed.",
    "Summa cum laude graduates of Hancock County will attend the Cockburn lecture.",
    "The public notice of a closed meeting is posted; the committee will assess the hazard.",
    "Damn, I missed the bus.",
])
async def test_innocent_words_do_not_fire(body):
    assert await check(body) == []


async def test_one_casual_swear_in_a_long_message_does_not_fire_but_abuse_in_a_short_one_does():
    long_text = ("We reviewed the quarterly figures for the water program and the permits office. " * 12
                 + "The old server was a piece of crap and the vendor's fucking patch broke it again.\n")
    assert await check(long_text) == []
    [finding] = await check("The vendor's fucking patch broke it again.")
    assert finding.kind == "abusive.profanity"


def test_normalise_reads_leet_and_joins_spaced_letters():
    assert normalise("F U C K") == "fuck"
    assert normalise("b1tch $h1t") == "bitch shit"
    assert normalise("Call 555-1234 or room 101, $100") == "call 555-1234 or room 101, $100"


async def test_inbound_abuse_is_tagged_through_the_gateway(gw, sink):
    message = make_message(subject="about yesterday", body="You are a worthless piece of shit. Shut up.\n",
                           sender="troll@outside.test", to="staff@example.gov")
    code, _, _ = await send(gw.port, "troll@outside.test", ["staff@example.gov"], message, source="127.0.0.2")
    assert code == 250
    [got] = await sink.wait_for(1)
    assert b"Subject: [Offensive language] about yesterday" in got.data
    assert b"X-Gateway-Verdict: tag; rule=inbound/abusive" in got.data
    assert header(got.data, "X-Gateway-Findings").startswith("abusive.harassment (Abusive language (")


async def test_outbound_abuse_is_quarantined_and_internal_abuse_is_tagged(gw, sink):
    message = make_message(subject="re: invoice", body="Pay up, you fucking moron, or I will hurt you.\n")
    code, _, _ = await send(gw.port, "alice@example.gov", ["vendor@example.org"], message)
    assert code == 250
    [held] = await gw.store.list()
    assert held.rule == "outbound/abusive" and held.kinds == ("abusive.threat",)
    assert sink.messages == []
    code, _, _ = await send(gw.port, "alice@example.gov", ["bob@example.gov"], message)
    assert code == 250
    [got] = await sink.wait_for(1)
    assert b"X-Gateway-Verdict: tag; rule=internal/abusive" in got.data
    assert b"Subject: [Offensive language] re: invoice" in got.data


async def test_abuse_only_in_quoted_reply_text_does_not_fire():
    reply = ("Dear Mr Jones,\n\nWe have received your complaint and will reply within ten days.\n\n"
             "On Monday, Mr Jones wrote:\n> You are a fucking idiot and your office is full of morons.\n"
             "> Shut up and fix my permit.\n")
    assert await check(reply) == []
    [finding] = await check(reply.replace("> ", ""))
    assert finding.kind == "abusive.harassment"


async def test_shut_up_is_harassment_only_when_addressed_to_someone():
    assert await check("That is all I have to say on the budget. I'll shut up now.") == []
    [finding] = await check("You are a worthless piece of work. Shut up, you useless clown.")
    assert finding.kind == "abusive.harassment" and "shut" in finding.detail.lower()
