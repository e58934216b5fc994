"""Site knowledge a rule of thumb cannot have: the department's own newsletter senders
([detectors.commercial] own_senders) and its public-notice wording ([detectors.confidential]
public_phrases); and the evidence a reviewer sees when a marker was talked about, not applied."""

from __future__ import annotations

import pytest

from gateway.config import PolicySettings, Settings
from gateway.detectors.base import OptionError
from gateway.pipeline import Pipeline
from gateway.policy import PolicyError
from gateway.policy import load as load_policy
from tests.support.contentkit import detector, run
from tests.support.contentmail import mail
from tests.support.paths import DATA

NEWSLETTER = (DATA / "department" / "ham" / "newsletter_own.eml").read_bytes()

LEGAL_AD = """Legal advertisement for the Thursday edition:

DRAFT GENERAL PERMIT MO-G490000

Limestone quarries in Missouri may apply for coverage under the general permit. Comments are due
January 8 to the Water Protection Program, P.O. Box 176, Jefferson City.
"""


async def test_own_newsletter_is_advertising_without_site_knowledge_and_named_in_evidence():
    [finding] = await detector("commercial").check(mail(NEWSLETTER))
    assert finding.kind == "commercial.advertising"
    assert "List-Unsubscribe header (bulk mail)" in finding.evidence


async def test_own_senders_delivers_the_department_newsletter_by_address_or_domain():
    for senders in (["newsletter@dnr.mo.gov"], ["dnr.mo.gov"], ["@mo.gov"]):
        assert await detector("commercial", own_senders=senders).check(mail(NEWSLETTER)) == []


async def test_own_senders_does_not_cover_another_sender():
    other = NEWSLETTER.replace(b"From: newsletter@dnr.mo.gov", b"From: deals@shop.example.com")
    assert b"deals@shop" in other
    assert await detector("commercial", own_senders=["newsletter@dnr.mo.gov"]).check(mail(other))


@pytest.mark.parametrize("value", [["not an address"], [""], [42]])
def test_own_senders_is_validated(value):
    with pytest.raises(OptionError, match=r"own_senders: .* is not an address or domain"):
        detector("commercial", own_senders=value)


async def test_public_phrases_keep_a_permit_title_from_counting_as_a_draft_stamp():
    [finding] = await run("confidential", subject="Legal ad", body=LEGAL_AD)
    assert finding.kind == "confidential.draft"
    assert await run(detector("confidential", public_phrases=["draft general permit"]),
                     subject="Legal ad", body=LEGAL_AD) == []


@pytest.mark.parametrize(("value", "message"), [([""], "public_phrases must be a list of non-empty strings"),
                                                ([3], "public_phrases must be a list of non-empty strings"),
                                                ("draft permit", "option 'public_phrases' must be list")])
def test_public_phrases_is_validated(value, message):
    with pytest.raises(OptionError, match=message):
        detector("confidential", public_phrases=value)


async def test_a_stamp_still_counts_and_the_detail_says_what_was_only_talked_about():
    body = ("ATTORNEY CLIENT PRIVILEGED\n\nThis responds to your Sunshine Law request. Two pages are withheld "
            "because they are exempt from disclosure under Section 610.021(1), RSMo.\n")
    [finding] = await run("confidential", subject="Response", body=body)
    assert finding.kind == "confidential.legal"
    assert "not counted: 'exempt from disclosure' (explained with a citation of" in finding.detail


async def test_a_closed_record_said_of_this_document_still_counts():
    body = ("This responds to your Sunshine Law request.\n\nThis document is a closed record under "
            "Section 610.021(1), RSMo.\n")
    [finding] = await run("confidential", subject="Response", body=body)
    assert finding.kind == "confidential.closed_record"


async def test_abuse_quoted_as_an_example_is_talk_and_the_detail_says_so():
    guide = 'Harassment includes remarks such as "you\'d get promoted faster if you wore shorter skirts".'
    assert await run("abusive", subject="Training", body=guide) == []
    [finding] = await run("abusive", subject="Training",
                          body=guide + "\n\nBetween us: those people are animals, send them back where they came from.")
    assert finding.kind == "abusive.hate"
    assert "not counted (quoted as an example): 'promoted faster if you wore'" in finding.detail


def test_a_bad_site_value_names_the_site_file(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text('[detectors.commercial]\nown_senders = ["news letter"]\n')
    settings = Settings(policy=PolicySettings(site=str(site)))
    with pytest.raises(PolicyError, match=rf"{site}:1: .*own_senders: 'news letter' is not an address or domain"):
        Pipeline(settings, load_policy(settings))


CLIPS = """Today's clips.

Jefferson City News Tribune, Dec. 7: Lawmakers court donors
Legislators held receptions in support of the re-election of committee chairs; the suggested contribution
was $250.
"""


async def test_a_news_clipping_reports_a_fundraiser_but_an_appeal_to_the_reader_still_counts():
    assert await run("political", subject="News clips", body=CLIPS) == []
    appeal = CLIPS + ("\nSpringfield News-Leader, Dec. 7: County approves stormwater fee for MS4 permit compliance "
                      "after two hearings.\n\nPS: please join me Friday. Checks payable to Citizens for Ortiz.\n")
    [finding] = await run("political", subject="News clips", body=appeal)
    assert finding.kind == "political.fundraising"
    assert "not counted (reported in a news clipping, 'clips'" in finding.detail
