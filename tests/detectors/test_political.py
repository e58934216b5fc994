"""political: campaign advocacy, fundraising, endorsements, "paid for by", petitions; and the
government-mail traps (political subdivision, legislation, regulation) that must stay clean."""

from __future__ import annotations

import pytest

from tests.support.contentkit import detector, header, run
from tests.support.peers import make_message, send

POLITICAL = detector("political")

FUNDRAISING = """Friends,

The end of quarter fundraising deadline is midnight tonight. Chip in $25 now to help re-elect Maria Lopez
and keep this seat. Every dollar goes to the campaign's final push.

Paid for by Friends of Maria Lopez Committee. Contributions are not tax deductible.
"""


@pytest.mark.parametrize(("body", "kind", "phrase"), [
    (FUNDRAISING, "political.fundraising", "paid for by friends of maria lopez committee"),
    ("On Tuesday, vote yes on Proposition 12 and vote for the Democrats down the ballot. Get out the vote!",
     "political.campaign", "vote yes on proposition"),
    ("Please sign the petition calling on the governor to veto the bill, and call your senator today.",
     "political.petition", "sign the petition"),
    ("We proudly endorse Sam Carter for Mayor. Please remember to vote on Election Day.",
     "political.campaign", "endorse sam"),
])
async def test_political_mail_fires_with_kind_detail_and_evidence(body, kind, phrase):
    [finding] = await run(POLITICAL, subject="Important", body=body)
    assert finding.kind == kind
    assert finding.detector == "political"
    assert finding.detail.startswith("Political content (")
    assert phrase in " ".join(finding.evidence).lower() or phrase in finding.detail.lower()
    assert finding.score >= 1.0


async def test_fundraising_detail_names_every_family():
    [finding] = await run(POLITICAL, subject="Deadline", body=FUNDRAISING)
    assert "donation request" in finding.detail and '"paid for by" disclaimer' in finding.detail


@pytest.mark.parametrize(("subject", "body"), [
    ("Annexation", "The county is a political subdivision of the State; each political subdivision must file "
     "its annual report. The election of officers for the subdivision board is scheduled for March."),
    ("FERC order", "The California legislature will vote on the bill next week. Governor Davis and the PUC "
     "are considering the rate freeze; Republicans and Democrats in the Assembly disagree on the refunds. "
     "Our government affairs team will brief you on campaign finance disclosures filed by the utilities."),
    ("Evidence handling", "Maintain the chain of custody for every sample. The travel was paid for by the "
     "department under the grant agreement."),
    ("Closed meeting", "Public notice of a closed meeting: the board will go into closed session to discuss "
     "the election results certification process with counsel."),
    ("Charitable campaign", "The State Employees' Charitable Campaign starts Monday. Please give to the "
     "campaign through payroll deduction, or donate today at the kiosk in the lobby."),
    ("Polling place", "The building will be a polling place on election day; staff should park in lot B."),
])
async def test_government_mail_about_politics_does_not_fire(subject, body):
    assert await run(POLITICAL, subject=subject, body=body) == []


async def test_inbound_campaign_mail_is_tagged_through_the_gateway(gw, sink):
    message = make_message(subject="Chip in before midnight", body=FUNDRAISING, sender="team@campaign.example",
                           to="staff@example.gov")
    code, _, _ = await send(gw.port, "team@campaign.example", ["staff@example.gov"], message, source="127.0.0.2")
    assert code == 250
    [got] = await sink.wait_for(1)
    assert b"Subject: [Political] Chip in before midnight" in got.data
    assert header(got.data, "X-Gateway-Findings").startswith("political.fundraising (Political content (")


async def test_outbound_campaign_mail_is_quarantined(gw, sink):
    message = make_message(subject="Chip in before midnight", body=FUNDRAISING)
    code, _, _ = await send(gw.port, "alice@example.gov", ["voter@example.org"], message)
    assert code == 250
    [held] = await gw.store.list()
    assert held.rule == "outbound/political" and held.kinds == ("political.fundraising",)
