"""chain_letter: forward-to-N requests, luck threats, money pyramids, hoaxes, and near-duplicates of a
letter already seen (caught from its second copy)."""

from __future__ import annotations

import random

import pytest

from gateway.detectors.chain_letter import similarity, sketch
from tests.support.contentkit import detector, header, run
from tests.support.peers import make_message, send

LUCK = """This is not a joke. This prayer has been sent around the world nine times. Forward this to 10 people
within 96 hours and good luck will come to you. Do not break the chain: a man in Ohio deleted it and
lost his job three days later."""

PYRAMID = """Here is how it works: send $5 to each person on the list below, then remove the name at the top
and put your name at the bottom of the list. Mail the letter to 200 people. It is 100% legal!"""

HOAX = """WARNING: do not open any e-mail titled "Good Times". The virus will erase your hard drive. This was
verified by IBM today. Please forward this to everyone in your address book."""

# A hoax letter with only a mild chain signal: not caught on its own, remembered for what follows.
SOFT = """Subject matter experts at the water authority say that bottled water left in a hot car releases
a chemical that causes cancer. My cousin's neighbour is a nurse and she saw three cases this year alone.
The companies know it and keep it quiet because the money is too good. Keep your bottles out of the sun,
and tell everyone you know about this before summer, because the news will never report it."""


@pytest.mark.parametrize(("body", "family"), [
    (LUCK, "luck threat"), (PYRAMID, "money chain"), (HOAX, "hoax"),
])
async def test_chain_letters_fire_with_kind_detail_and_evidence(body, family):
    [finding] = await run(detector("chain_letter"), subject="Fwd: FW: read this", body=body)
    assert finding.kind == "chain_letter.content"
    assert finding.detector == "chain_letter"
    assert finding.detail.startswith("Chain letter (") and family in finding.detail
    assert any(e.startswith(family + ": ") for e in finding.evidence)
    assert finding.score >= 1.0


@pytest.mark.parametrize("body", [
    "Step 1: mail a $1 bill to each of the 5 names. Step 2: delete the name in the #1 position and move the "
    "other names up one position. Step 3: place your name in the #5 position.",
    "This is not a chain letter. Order all five reports, then send this letter to at least 200 people.",
])
async def test_money_pyramid_mechanics_fire(body):
    [finding] = await run(detector("chain_letter"), subject="Make money fast", body=body)
    assert finding.kind == "chain_letter.content" and "money chain" in finding.detail


@pytest.mark.parametrize(("subject", "body"), [
    ("Chain of custody", "Keep the chain of custody form with each evidence bag and forward it to the lab."),
    ("Fwd: Fwd: Fwd: FW: budget numbers", "Please forward this to your team and send me comments by Friday."),
    ("All staff", "Please forward this to all staff in your unit and to everyone on the night shift."),
    ("Reminder", "The report is due within 48 hours. Please pass this on to anyone on your staff who travels."),
    ("Re: spam", "Someone sent me a chain letter again; I deleted it. The pyramid scheme people never stop."),
    ("Fraud alert", "The FTC warns about pyramid schemes; send complaints to the consumer protection office."),
])
async def test_office_mail_that_mentions_forwarding_does_not_fire(subject, body):
    assert await run(detector("chain_letter"), subject=subject, body=body) == []


async def test_a_circulating_letter_is_caught_from_its_second_copy():
    chain = detector("chain_letter")
    assert await run(chain, subject="FW: please read", body=SOFT, sender="a@outside.test") == []
    edited = SOFT.replace("three cases", "four cases").replace("My cousin's", "A friend's")
    [finding] = await run(chain, subject="Fwd: FW: please read!!", body=edited, sender="b@elsewhere.test")
    assert finding.kind == "chain_letter.duplicate"
    assert "copy 2 of a letter already seen" in finding.detail
    assert any(e.startswith("near-duplicate (") and "'FW: please read'" in e for e in finding.evidence)


async def test_ordinary_mail_sent_twice_is_not_remembered():
    chain = detector("chain_letter")
    memo = ("The quarterly safety inspection of the east wing will take place on Monday morning. Please clear the "
            "corridors, close the fire doors and make sure the first-aid kits are stocked. ") * 3
    assert await run(chain, subject="Inspection", body=memo) == []
    assert await run(chain, subject="Inspection", body=memo) == []
    assert len(chain.memory.letters) == 0


def test_sketch_similarity_tracks_edits():
    a = sketch(SOFT)
    assert len(a) == 64
    assert similarity(a, sketch(SOFT.replace("three", "four"))) > 0.8
    assert similarity(a, sketch(LUCK * 3)) < 0.1
    assert sketch("too short to fingerprint") == ()


async def test_memory_is_bounded():
    chain = detector("chain_letter", memory_size=3)
    rng = random.Random(7)
    words = ["alpha", "river", "stone", "cloud", "paper", "green", "eleven", "market", "window", "silver",
             "garden", "pencil", "orange", "bridge", "candle", "forest", "yellow", "rocket", "summer", "planet"]
    for i in range(6):
        body = " ".join(rng.choice(words) for _ in range(80)) + ". Tell everyone you know about this."
        await run(chain, subject=f"FW {i}", body=body)
    assert len(chain.memory.letters) == 3
    assert all(len(ids) <= 3 for ids in chain.memory.index.values())


async def test_second_copy_is_tagged_through_the_gateway(gw, sink):
    for i, sender in enumerate(["a@outside.test", "b@outside.test"]):
        message = make_message(subject="FW: please read", body=SOFT + ("\n" if i else ""), sender=sender,
                               to="staff@example.gov")
        code, _, _ = await send(gw.port, sender, ["staff@example.gov"], message, source="127.0.0.2")
        assert code == 250
    first, second = await sink.wait_for(2)
    assert b"Subject: FW: please read" in first.data and b"X-Gateway-Verdict: deliver" in first.data
    assert b"Subject: [Chain letter] FW: please read" in second.data
    assert header(second.data, "X-Gateway-Findings").startswith("chain_letter.duplicate (Chain letter (")


async def test_a_chain_letter_quoted_in_a_reply_still_counts():
    quoted = "Thanks, see below.\n\n" + "\n".join("> " + line for line in LUCK.splitlines())
    [finding] = await run(detector("chain_letter"), subject="Re: FW: read this", body=quoted)
    assert finding.kind == "chain_letter.content"
