"""Archive members are content: department mail sent out through a real SMTP session with the sensitive
text inside a zip, a tar.gz, a zip in a zip or a 7z is held with the right category and the member
named; a confidentiality marker only in a file name is held; a member whose text is over the [text]
limits is unscanned.text_limits; an archive of public notices is delivered."""

from __future__ import annotations

import asyncio
import logging

from gateway.message import archives
from tests.support import contentmail as cm
from tests.support import files
from tests.support.peers import send

HR = "hr.payroll@example.gov"
VENDOR = "benefits@vendor.example.com"


async def outbound(gw, raw: bytes, sender: str = HR, to: str = VENDOR):
    code, text, _ = await send(gw.port, sender, [to], raw)
    assert code == 250, text
    await asyncio.sleep(0.05)


async def held_one(gw, sink):
    assert sink.messages == []
    [item] = await gw.store.list()
    return item


def finding(item, kind: str):
    hits = [f for f in item.findings if f.kind == kind]
    assert hits, f"no {kind} in {[(f.kind, f.part, f.detail) for f in item.findings]}"
    return hits[0]


PAYROLL = [
    "Open enrollment 2027: employee census for Midwest Benefits Group",
    "Please load the following employees into the dental plan before December 15.",
    "Jane Roe, Permits Office, SSN 536-22-8726, date of hire 03/14/2019",
    "Marcus Webb, Highway Safety, SSN 412-55-1290, date of hire 07/01/2021",
    "Dolores Park, Fleet Services, SSN 229-31-4476, date of hire 11/20/2015",
]


async def test_ssns_in_a_docx_inside_a_zip_are_held_as_pii_naming_the_member(gw, sink):
    archive = files.zip_of({"census/enrollment-2027.docx": cm.docx(PAYROLL)}, deflate=True)
    raw = cm.message("Hi Tom,\n\nThe enrollment census is attached as discussed.\n\nThanks,\nRita\nHR Payroll\n",
                     subject="Dental enrollment census", sender=HR, to=VENDOR,
                     attachments=(("enrollment.zip", "application/zip", archive),))
    await outbound(gw, raw)
    item = await held_one(gw, sink)
    assert item.rule == "outbound/pii"
    ssn = finding(item, "pii.ssn")
    assert ssn.part == "part 2: enrollment.zip > census/enrollment-2027.docx"
    assert "enrollment-2027.docx" in ssn.detail and ssn.evidence[0].startswith("SSN ***-**-")
    assert "536-22" not in repr(item.findings)


async def test_card_numbers_in_a_text_file_inside_a_tar_gz_are_held(gw, sink):
    ledger = (b"Procurement card reconciliation, November\n"
              b"Cardholder: R. Alvarez, Visa card 4556 7375 8689 9855, exp 04/28\n"
              b"Cardholder: K. Osei, Mastercard 5425 2334 3010 9903, exp 09/27\n")
    archive = files.tar_gz_of({"exports/pcard-november.txt": ledger})
    raw = cm.message("Attached is the p-card export for your audit.\n", subject="P-card export",
                     sender="fiscal@example.gov", to="auditor@cpa-firm.example.com",
                     attachments=(("pcard-export.tar.gz", "application/gzip", archive),))
    await outbound(gw, raw, sender="fiscal@example.gov", to="auditor@cpa-firm.example.com")
    item = await held_one(gw, sink)
    assert item.rule == "outbound/pii"
    card = finding(item, "pii.payment_card")
    assert card.part.startswith("part 2: pcard-export.tar.gz > ")
    assert card.part.endswith(" > exports/pcard-november.txt")
    assert "**** **** **** 9855" in " ".join(card.evidence)


async def test_confidential_memo_in_a_zip_inside_a_zip_is_held(gw, sink):
    memo = (b"CONFIDENTIAL\n\nMEMORANDUM\nTo: Director\nFrom: Legal Division\nRe: Pending settlement, "
            b"Route 50 right-of-way\n\nPRIVILEGED AND CONFIDENTIAL - ATTORNEY WORK PRODUCT\n"
            b"Our recommendation is to settle below the appraised value.\n")
    inner = files.zip_of({"settlement-memo.txt": memo})
    outer = files.zip_of({"legal/case-files.zip": inner, "legal/readme.txt": b"Case files for review.\n"})
    raw = cm.message("Files for Friday's meeting.\n", subject="case files", sender="legal@example.gov",
                     to="partner@lawfirm.example.com", attachments=(("cases.zip", "application/zip", outer),))
    await outbound(gw, raw, sender="legal@example.gov", to="partner@lawfirm.example.com")
    item = await held_one(gw, sink)
    assert item.rule == "outbound/confidential"
    [marker] = [f for f in item.findings if f.kind.startswith("confidential.")]
    assert marker.part == "part 2: cases.zip > legal/case-files.zip > settlement-memo.txt"
    assert "'privileged and confidential' in part 2: cases.zip > legal/case-files.zip > settlement-memo.txt" \
        in marker.detail


async def test_passwords_and_a_confidential_stamp_in_a_7z_are_held(gw, sink):
    doc = cm.docx(["CONFIDENTIAL", "Server handover notes for the contractor",
                   "Database login: svc_permits  password: Tr4ffic!Signal#2026",
                   "VPN user jroe, password is Winter$Road77"])
    archive = files.seven_zip_of({"handover/notes.docx": doc})
    raw = cm.message("Handover notes attached.\n", subject="handover", sender="itsd@example.gov",
                     to="tech@contractor.example.com",
                     attachments=(("handover.7z", "application/x-7z-compressed", archive),))
    await outbound(gw, raw, sender="itsd@example.gov", to="tech@contractor.example.com")
    item = await held_one(gw, sink)
    assert item.rule in ("outbound/confidential", "outbound/credentials"), item.rule
    password = finding(item, "credentials.password")
    assert password.part == "part 2: handover.7z > handover/notes.docx"
    assert finding(item, "confidential.marker").part == "part 2: handover.7z > handover/notes.docx"
    assert "Tr4ffic" not in repr(item.findings)


async def test_a_confidential_marker_only_in_an_attachment_name_is_held(gw, sink):
    sheet = cm.xlsx([["Position", "Step", "Annual"], ["Engineer II", 4, 68250], ["Technician I", 2, 41200]])
    raw = cm.message("Here is the spreadsheet you asked for.\n", subject="salary table", sender=HR,
                     to="consultant@comp-study.example.com",
                     attachments=(("CONFIDENTIAL-payroll.xlsx", "application/vnd.openxmlformats-officedocument"
                                   ".spreadsheetml.sheet", sheet),))
    await outbound(gw, raw, to="consultant@comp-study.example.com")
    item = await held_one(gw, sink)
    assert item.rule == "outbound/confidential"
    marker = finding(item, "confidential.marker")
    assert marker.part == "part 2: CONFIDENTIAL-payroll.xlsx (file name)"
    assert "CONFIDENTIAL" in " ".join(marker.evidence)


async def test_a_confidential_marker_only_in_an_archive_member_name_is_held(gw, sink):
    archive = files.zip_of({"reviews/PRIVILEGED_AND_CONFIDENTIAL_grievance_summary.txt":
                            b"Summary of the step 2 meeting held on November 3.\n"})
    raw = cm.message("As requested.\n", subject="summary", sender="labor@example.gov",
                     to="rep@union.example.org", attachments=(("summary.zip", "application/zip", archive),))
    await outbound(gw, raw, sender="labor@example.gov", to="rep@union.example.org")
    item = await held_one(gw, sink)
    assert item.rule == "outbound/confidential"
    marker = finding(item, "confidential.legal")
    assert marker.part == ("part 2: summary.zip > reviews/PRIVILEGED_AND_CONFIDENTIAL_grievance_summary.txt"
                           " (file name)")


async def test_a_member_over_the_text_limits_is_unscanned_text_limits(start_gateway, sink):
    gw = await start_gateway(text={"max_attachment_bytes": 4096})
    big = ("Line item, amount\n" + "Culvert repair, 1200.00\n" * 400).encode()
    archive = files.zip_of({"ledger.csv": big, "cover.txt": b"Cover note.\n"}, deflate=True)
    assert len(archive) < 4096 < len(big)
    raw = cm.message("Ledger attached.\n", subject="ledger", sender="fiscal@example.gov",
                     to="auditor@cpa-firm.example.com", attachments=(("ledger.zip", "application/zip", archive),))
    await outbound(gw, raw, sender="fiscal@example.gov", to="auditor@cpa-firm.example.com")
    item = await held_one(gw, sink)
    assert item.rule == "outbound/text-unscanned"
    limits = finding(item, "unscanned.text_limits")
    assert "part 2: ledger.zip > ledger.csv: over the 4096 byte attachment limit" in limits.detail


async def test_an_encrypted_member_keeps_its_antivirus_finding_only(gw, sink, tmp_path):
    archive = files.encrypted_zip(tmp_path, "CONFIDENTIAL-salaries.txt", b"SSN 536-22-8726\n")
    raw = cm.message("Password by phone.\n", subject="salaries", sender=HR, to=VENDOR,
                     attachments=(("salaries.zip", "application/zip", archive),))
    await outbound(gw, raw)
    item = await held_one(gw, sink)
    kinds = {f.kind for f in item.findings}
    assert "unscanned.encrypted" in kinds and "unscanned.text_limits" not in kinds and "pii.ssn" not in kinds
    # the member's name is still read: the marker in it counts
    assert finding(item, "confidential.marker").part.endswith("> CONFIDENTIAL-salaries.txt (file name)")


async def test_an_archive_of_public_notices_is_delivered(gw, sink, caplog):
    caplog.set_level(logging.INFO)
    hearing = cm.docx([
        "NOTICE OF PUBLIC HEARING",
        "The Department of Transportation will hold a public hearing on the Route 50 widening on "
        "January 12, 2027 at 6:30 p.m. at the Cole County Courthouse, 311 E High St.",
        "Written comments may be sent to the project office, phone 573.555.0142, fax 573.555.0199, "
        "before 01.05.2027. Reference project J5P3120, contract 2026.11.0042.",
        "This notice is public information and may be posted and distributed freely.",
    ])
    closures = (b"Lane closure schedule (public)\n"
                b"I-70 eastbound, mile 128.4 to 131.2: 12.14.2026 - 12.18.2026, 9 a.m. to 3 p.m.\n"
                b"Signal timing software v10.4.2.1057 installed at 14 intersections; build 6.1.7601.24545.\n"
                b"Invoice 2026.1207.0031 from Capital Paving, permit 912.04.5521, questions 573.751.2551.\n")
    archive = files.zip_of({"notices/hearing-route50.docx": hearing, "notices/closures.txt": closures},
                           deflate=True)
    nested = files.tar_gz_of({"press/closures.txt": closures})
    raw = cm.message("Hello,\n\nPlease post the attached notices on your community calendar.\n\n"
                     "Public Information Office\n", subject="Public notices for posting",
                     sender="pio@example.gov", to="editor@newspaper.example.com",
                     attachments=(("public-notices.zip", "application/zip", archive),
                                  ("press-kit.tar.gz", "application/gzip", nested)))
    code, text, _ = await send(gw.port, "pio@example.gov", ["editor@newspaper.example.com"], raw)
    assert code == 250, text
    [got] = await sink.wait_for(1)
    assert b"X-Gateway-Verdict: deliver" in got.data
    assert await gw.store.list() == []
    [logged] = [r.fields for r in caplog.records if r.name == "gateway.message"]
    assert logged["rule"] == "outbound/default", logged


async def test_archives_are_opened_once_for_the_virus_file_type_and_content_checks(gw, sink, monkeypatch):
    opened: list[str] = []
    build = archives.build

    def counting(mail, limits):
        opened.append(mail.id)
        return build(mail, limits)

    monkeypatch.setattr(archives, "build", counting)
    archive = files.zip_of({"census/enrollment-2027.docx": cm.docx(PAYROLL)}, deflate=True)
    raw = cm.message("Census attached.\n", subject="census", sender=HR, to=VENDOR,
                     attachments=(("enrollment.zip", "application/zip", archive),))
    await outbound(gw, raw)
    item = await held_one(gw, sink)
    assert finding(item, "pii.ssn").part == "part 2: enrollment.zip > census/enrollment-2027.docx"
    assert len(opened) == 1


async def test_ssns_in_a_gzipped_export_without_an_extension_are_held(gw, sink):
    import gzip

    export = "EMPLID|NAME|SSN|DEPT\n10442|ROE,JANE|536-22-8726|PERMITS\n10517|WEBB,MARCUS|412-55-1290|SAFETY\n"
    raw = cm.message("Nightly HR export for the new vendor's test load.\n", subject="export", sender="itsd@example.gov",
                     to="loader@vendor.example.com",
                     attachments=(("hr_export.gz", "application/gzip", gzip.compress(export.encode())),))
    await outbound(gw, raw, sender="itsd@example.gov", to="loader@vendor.example.com")
    item = await held_one(gw, sink)
    assert item.rule == "outbound/pii"
    assert finding(item, "pii.ssn").part == "part 2: hr_export.gz > hr_export"


async def test_a_scanned_form_zipped_is_read_and_held_naming_the_member(gw, sink):
    """A picture in an archive is read like an attached one (OCR of the shared archive members)."""
    from tests.support import imagegen as gen

    form = gen.form(("EMPLOYEE RECORD", f"SOCIAL SECURITY NUMBER {gen.SSN}"))
    archive = files.zip_of({"scans/intake-form.png": gen.encode(form)}, deflate=True)
    raw = cm.message("Hi,\n\nThe signed intake form is in the zip.\n\nRita\n", subject="Intake form",
                     sender=HR, to=VENDOR, attachments=(("scans.zip", "application/zip", archive),))
    await outbound(gw, raw)
    item = await held_one(gw, sink)
    assert item.rule == "outbound/pii", [(f.kind, f.part) for f in item.findings]
    ssn = finding(item, "pii.ssn")
    assert ssn.part == "part 2: scans.zip > scans/intake-form.png"
    assert ssn.evidence[0] == "SSN ***-**-" + gen.SSN[-4:]


async def test_a_scanned_pdf_in_a_tar_gz_is_read_page_by_page():
    from gateway import config
    from gateway.message import mime, ocr
    from gateway.model import Direction, Envelope, Mail
    from tests.support import imagegen as gen

    pdf = gen.image_pdf(gen.form(("CONFIDENTIAL", "PAGE ONE")), gen.form(("SOCIAL SECURITY NUMBER " + gen.SSN,)))
    raw = gen.message(("records.tar.gz", "application/gzip", files.tar_gz_of({"box 12/scan.pdf": pdf})),
                      ("logo.png", "image/png", gen.encode(gen.flat(size=(400, 200)))))
    mail = Mail("t", Envelope(HR, (VENDOR,)), raw, mime.parse(raw), Direction.OUTBOUND, 0.0)
    ocr.CACHE.clear()
    result = await ocr.message_ocr(mail, config.Settings())
    found = {s.source: s.text for s in result.segments}
    label = "part 2: records.tar.gz > records.tar > box 12/scan.pdf"
    assert [s for s in found if "scan.pdf" in s] == [f"{label} page 1", f"{label} page 2"], list(found)
    assert "CONFIDENTIAL" in found[f"{label} page 1"] and gen.SSN in found[f"{label} page 2"]
