"""confidential: markers and sensitivity labels; quotes, disclaimer footers and government phrasing do not fire."""

from __future__ import annotations

import pytest

from gateway import policy
from gateway.config import Settings, from_dict
from gateway.detectors import OptionError
from gateway.detectors.confidential import Confidential
from tests.support import contentmail as cm

DISCLAIMER = ("\n\nThis e-mail and any attachments may contain confidential and privileged information. If you are "
              "not the intended recipient, please notify the sender immediately and delete this message; any "
              "dissemination of this message is strictly prohibited.\n")


async def findings(raw: bytes, **options):
    return await cm.run(Confidential, raw, options)


async def test_privileged_subject_is_reported_as_legal():
    [f] = await findings(cm.message("Please review before Friday.",
                                    subject="Case strategy - Attorney-Client Privileged"))
    assert f.kind == "confidential.legal"
    assert f.detail.startswith("Confidentiality marker 'attorney client privilege*' in subject")
    assert f.part is None and f.score >= 1
    assert f.evidence == ("subject: Case strategy - Attorney-Client Privileged",)      # as written


@pytest.mark.parametrize(("body", "kind"), [
    ("PRE-DECISIONAL / DELIBERATIVE\n\nThe options for the fee schedule are below.", "confidential.deliberative"),
    ("Attached is the DRAFT of the audit response for your comments.", "confidential.draft"),
    ("Draft - Do Not Distribute\n\nSection 1. Purpose.", "confidential.draft"),
    ("Internal Use Only\n\nProcedure 14-2: handling of walk-in complainants.", "confidential.internal"),
    ("This memo is attorney work product prepared for the hearing.", "confidential.legal"),
    ("The enclosed closed records relate to the 2019 investigation.", "confidential.closed_record"),
    ("Confidential personnel matter: the disciplinary findings are attached.", "confidential.personnel"),
    ("Embargoed until 10 a.m. Tuesday: the Director's statement on the audit.", "confidential.draft"),
    ("The attached inspection plan contains Sensitive Security Information.", "confidential.closed_record"),
    ("The minutes are a closed record pursuant to section 610.021.", "confidential.closed_record"),
    ("CONFIDENTIAL\n\nMinutes of the selection panel.", "confidential.marker"),
    ("STRICTLY CONFIDENTIAL\n\nMinutes of the selection panel.", "confidential.marker"),
    ("Strictly Confidential\n\nMinutes of the selection panel.", "confidential.marker"),
])
async def test_markers_in_new_text(body, kind):
    [f] = await findings(cm.message(body, subject="Update"))
    assert f.kind == kind, f.detail
    assert f.evidence and f.evidence[0].startswith("body: ")
    assert f.part is None and " in body" in f.detail


async def test_marker_in_a_forwarded_message_counts():
    body = ("FYI, see below.\n\n---------- Forwarded message ---------\nFrom: Counsel <c@example.gov>\n\n"
            "Privileged and confidential: our assessment of the claim.\n")
    [f] = await findings(cm.message(body, subject="Fwd: claim"))
    assert f.kind == "confidential.legal"
    assert "privileged and confidential" in f.detail


async def test_marker_only_in_a_quoted_reply_does_not_fire():
    body = ("Thanks, I will call you tomorrow.\n\nOn Mon, 2 Mar 2026 at 10:00, Counsel <c@example.gov> wrote:\n"
            "> PRIVILEGED AND CONFIDENTIAL - ATTORNEY WORK PRODUCT\n> Our assessment of the claim follows.\n")
    assert await findings(cm.message(body, subject="Re: lunch")) == []
    outlook = ("Agreed.\n\n-----Original Message-----\nFrom: Counsel\nSent: Monday\nTo: Alice\nSubject: claim\n\n"
               "Attorney-client privileged. Our assessment follows.\n")
    assert await findings(cm.message(outlook, subject="RE: claim")) == []
    [f] = await findings(cm.message(body, subject="Re: lunch"), count_quoted=True)
    assert f.kind == "confidential.legal"


async def test_standard_disclaimer_footer_alone_does_not_fire():
    assert await findings(cm.message("Meeting moved to 3 pm.\n\n--\nJane Doe, Permits Office" + DISCLAIMER)) == []
    [f] = await findings(cm.message("INTERNAL USE ONLY\n\nRevised intake procedure." + DISCLAIMER))
    assert f.kind == "confidential.internal"
    assert not any("intended recipient" in e for e in f.evidence)


@pytest.mark.parametrize("body", [
    "Public notice of a closed meeting of the Board under section 610.021 will be posted Friday.",
    "The chain of custody form for the water samples is attached.",
    "Each political subdivision must file its commercial vehicle inspection report by June 1.",
    "Please sign the confidentiality agreement before the site visit.",
    "This is a non-confidential summary of the settlement; it may be shared with the press.",
    "I am drafting the newsletter; the draft will go out for review next week.",
    "We discussed the deliberative process with the council.",
    "The hearing record is closed and the decision will be published on our website.",
    "Personnel records requests go to Human Resources, room 204.",
    "Keep your password confidential.",
    "All information you submit will be kept strictly confidential.",
])
async def test_government_phrasing_does_not_fire(body):
    assert await findings(cm.message(body, subject="Weekly update")) == []


async def test_hidden_html_marker_does_not_fire_but_visible_one_does():
    hidden = "<p>Agenda attached.</p><div style='display:none'>ATTORNEY WORK PRODUCT</div>"
    assert await findings(cm.message("Agenda attached.", html=hidden)) == []
    [f] = await findings(cm.message("Agenda attached.", html="<p>Agenda.</p><p><b>ATTORNEY WORK PRODUCT</b></p>"))
    assert f.kind == "confidential.legal"


async def test_markers_in_attachments_and_document_properties():
    docx = cm.docx(["Options for the new fee schedule."], header="PRE-DECISIONAL DRAFT")
    raw = cm.message("Comments welcome.", attachments=(("fees.docx", "application/octet-stream", docx),))
    [f] = await findings(raw)
    assert f.kind in ("confidential.deliberative", "confidential.draft")
    assert f.part == "part 2: fees.docx"
    pdf = cm.pdf(["Quarterly statistics"], {"Title": "Quarterly statistics", "Keywords": "Confidential"})
    [f] = await findings(cm.message("Numbers.", attachments=(("q.pdf", "application/pdf", pdf),)))
    assert f.kind == "confidential.marker"
    assert f.part == "part 2: q.pdf (properties)"
    assert f.evidence == ("part 2: q.pdf (properties): Title: Quarterly statistics Keywords: Confidential",)


async def test_sensitivity_label_headers_and_document_labels():
    msip = ("MSIP_Label_3a1c6b2e-0000-4000-8000-000000000001_Enabled=true; "
            "MSIP_Label_3a1c6b2e-0000-4000-8000-000000000001_Name=Highly Confidential; "
            "MSIP_Label_3a1c6b2e-0000-4000-8000-000000000001_SiteId=0000")
    [f] = await findings(cm.message("Hello.", headers={"msip_labels": msip}))
    assert f.kind == "confidential.label"
    assert f.detail == "Sensitivity label 'Highly Confidential' in the msip_labels header"
    assert await findings(cm.message("Hello.", headers={"msip_labels": msip.replace("Highly Confidential",
                                                                                      "General")})) == []
    assert await findings(cm.message("Hello.", headers={"Sensitivity": "Personal"})) == []
    [f] = await findings(cm.message("Hello.", headers={"Sensitivity": "Company-Confidential"}))
    assert f.kind == "confidential.label"
    docx = cm.docx(["Plain text."], custom={"MSIP_Label_1234_Name": "Confidential"})
    found = await findings(cm.message("See file.", attachments=(("a.docx", "application/octet-stream", docx),)))
    assert found[0].kind == "confidential.label"
    assert found[0].part == "part 2: a.docx (properties)"


async def test_weak_markers_need_company_and_threshold_is_an_option():
    assert await findings(cm.message("I will keep what you said confidential.", subject="Re: chat")) == []
    [f] = await findings(cm.message("I will keep what you said confidential.", subject="Re: chat"), threshold=0.4)
    assert f.kind == "confidential.marker"
    assert f.score == 0.4


async def test_site_lexicon_replaces_the_shipped_one(tmp_path):
    (tmp_path / "lex.toml").write_text('[[markers]]\nclass = "procurement"\nphrases = ["source selection '
                                       'sensitive"]\n')
    raw = cm.message("SOURCE SELECTION SENSITIVE - evaluation scores attached.")
    [f] = await findings(raw, lexicon=str(tmp_path / "lex.toml"))
    assert f.kind == "confidential.procurement"
    (tmp_path / "bad.toml").write_text('[[markers]]\nphrases = "not a list"\n')
    with pytest.raises(OptionError, match="phrases must be a list"):
        Confidential(Settings(), {"lexicon": str(tmp_path / "bad.toml")})
    with pytest.raises(OptionError, match="unknown option 'treshold'"):
        Confidential(Settings(), {"treshold": 2})


def test_shipped_policy_enables_the_content_detectors_with_rules():
    loaded = policy.load(from_dict({}))
    assert {"confidential", "pii", "credentials"} <= set(loaded.detectors)
    out = {r.name: r for r in loaded.rules[policy.Direction.OUTBOUND]}
    assert out["confidential"].action.value == "quarantine" and out["confidential"].notice
    assert out["confidential"].provision == "Confidentiality of Department Information"
