"""Realistic department mail through the pipeline with the shipped policy: everyday work mail that talks
about campaigns, closed records, drafts, embargoes and passcodes is delivered outbound; plain-language
violations (harassment, discrimination, personal selling, fundraisers, stamps, passwords) are held."""

from __future__ import annotations

import asyncio

import pytest

from gateway import evaluate, policy
from gateway.config import AntivirusSettings, PolicySettings, Settings
from gateway.model import Action, Direction
from gateway.pipeline import Pipeline
from tests.support.paths import DATA
from tests.support.settings import SESSION_CLAMD

FOLDER = DATA / "department"
SITE = FOLDER / "site.toml"     # the department's site file: its own newsletter sender, its public wording
ITEMS = evaluate.read_manifest(FOLDER)
CONTENT = frozenset({"abusive", "commercial", "political", "confidential", "credentials", "pii", "chain_letter"})


@pytest.fixture(scope="module")
def verdicts():
    async def run():
        # archives are scanned by the session's real clamd, as the gateway does before reading members
        settings = Settings(policy=PolicySettings(site=str(SITE)),
                            antivirus=AntivirusSettings(clamd=SESSION_CLAMD["address"]))
        pipeline = Pipeline(settings, policy.load(settings))
        envelope = evaluate.envelope_for(pipeline, Direction.OUTBOUND)
        out = {}
        try:
            for item in ITEMS:
                inspection = await pipeline.inspect(envelope, (FOLDER / item.path).read_bytes(),
                                                    direction=Direction.OUTBOUND)
                v = inspection.verdict
                out[item.path] = (v, evaluate.predicted_categories(pipeline.policy, v))
        finally:
            await pipeline.close()
        return out
    return asyncio.run(run())


@pytest.mark.parametrize("item", [i for i in ITEMS if i.label == "ham"], ids=lambda i: i.path)
def test_everyday_department_mail_is_delivered(verdicts, item):
    verdict, _ = verdicts[item.path]
    # every content finding counts, whichever rule decided (a scanner that is not running is not content)
    assert [(f.kind, f.detail) for f in verdict.findings if f.category in CONTENT] == []


@pytest.mark.parametrize("item", [i for i in ITEMS if i.label != "ham"], ids=lambda i: i.path)
def test_plain_language_violation_is_held_with_its_category(verdicts, item):
    verdict, categories = verdicts[item.path]
    assert verdict.action is not Action.DELIVER
    assert evaluate.LABEL_CATEGORY.get(item.label, item.label) in categories
    finding = next(f for f in verdict.findings if f.category == item.label)
    assert finding.detail and finding.evidence


def test_every_everyday_class_and_violation_class_has_a_case():
    names = {i.path for i in ITEMS}
    for needed in ("ham/news_clipping_campaign.eml", "ham/newsletter_own.eml", "ham/sunshine_meeting_notice.eml",
                   "ham/disclaimer_in_pdf.eml", "ham/draft_permit_public_notice.eml",
                   "ham/embargoed_press_release.eml", "ham/teams_invitation_passcode.eml",
                   "ham/testimony_long_number.eml", "ham/confidential_treatment_regulatory.eml",
                   "abusive/harassment_skirts.eml", "abusive/discriminatory_hiring.eml",
                   "commercial/girl_scout_cookies.eml", "commercial/car_for_sale.eml",
                   "political/reelection_fundraiser.eml"):
        assert needed in names
