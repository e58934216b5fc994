"""Writes tests/data/department: realistic department mail, one .eml per case, and its manifest.tsv
(path, expected label, source). Run from the repository root; the files are committed. The output is
byte-for-byte reproducible: Message-IDs, MIME boundaries and archive timestamps are fixed."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import sys
import tarfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import contentmail as cm

OUT = Path("tests/data/department")
DEPT = "dnr.mo.gov"

CASES: dict[str, tuple[str, bytes]] = {}


def case(path: str, label: str, raw: bytes) -> None:
    CASES[path] = (label, raw)


def fixed(path: str, raw: bytes) -> bytes:
    """The message with a Message-ID and MIME boundaries that depend only on the case's path."""
    tag = hashlib.sha256(path.encode()).hexdigest()[:16]
    raw = re.sub(rb"Message-ID: <[^>]*>", b"Message-ID: <dept-" + tag.encode() + b"@dnr.mo.gov>", raw, count=1)
    boundaries = list(dict.fromkeys(re.findall(rb"=+\d+==", raw)))
    for n, b in enumerate(boundaries):
        raw = raw.replace(b, f"==dept-{tag}-{n}==".encode())
    return raw


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2026, 12, 4, 9, 0, 0)), data)
    return buf.getvalue()


def tar_gz_of(members: dict[str, bytes]) -> bytes:
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1796374800, 0o644
            tf.addfile(info, io.BytesIO(data))
    return gzip.compress(tar.getvalue(), mtime=0)


def seven_zip_of(members: dict[str, bytes]) -> bytes:
    """py7zr stamps members with the current time; a fixed one keeps the file reproducible."""
    from unittest import mock

    import py7zr
    from py7zr.helpers import ArchiveTimestamp

    buf = io.BytesIO()
    stamp = classmethod(lambda cls: cls(134097720000000000))         # 2026-12-04 09:00 UTC as a FILETIME
    with mock.patch.object(ArchiveTimestamp, "from_now", stamp), py7zr.SevenZipFile(buf, "w") as archive:
        for name, data in members.items():
            archive.writestr(data, name)
    return buf.getvalue()


def msg(body: str, subject: str, sender: str = f"jsmith@{DEPT}", to: str = "partner@example.org", **kw) -> bytes:
    return cm.message(body, subject=subject, sender=sender, to=to, **kw)


# --- everyday mail that must be delivered ------------------------------------------------------------
case("ham/news_clipping_campaign.eml", "ham", msg("""\
Morning clips for the director's office.

St. Louis Post-Dispatch, Dec. 6: Governor's re-election campaign reports record haul
The governor's re-election campaign reported raising $2.1 million in the last quarter, with donors
from the energy and agriculture sectors. The challenger's campaign urged supporters to donate
before the filing deadline and to vote for change in November. Analysts said the fundraising
totals make the race the most expensive in state history.

Kansas City Star, Dec. 6: Legislators pre-file water quality bills
Two senators pre-filed bills that would change the state's nutrient criteria.

Compiled by the Communications Office. For internal awareness; do not reply to this list.
""", "Daily news clips - December 7"))

case("ham/legislative_update.eml", "ham", msg("""\
Legislative update, week of December 7

HB 1145 (soil and water sales tax renewal) was heard in committee on Tuesday. The sponsor asked
members to vote yes on the bill; the committee voted 9-2 to pass it. SB 88 would require the
department to publish permit backlog reports quarterly. Senator Hill's office asked for a fiscal note
by Friday.

The next hearing is Tuesday at 8:00 a.m. in House Hearing Room 5. Please send comments on the fiscal
note to me by Thursday noon.

Maria Jones, Legislative Liaison
""", "Legislative update: HB 1145, SB 88"))

case("ham/newsletter_own.eml", "ham", msg("""\
Missouri Department of Natural Resources - Environmental Assistance News, December 2026

Register today for the Small Business Compliance Workshop
Join our compliance assistance staff on January 14 in Jefferson City for a free workshop on air
permits for small businesses. Space is limited - register today at dnr.mo.gov/events. Sign up now
to reserve your seat.

Free technical assistance
Our Environmental Assistance Office offers free, confidential on-site visits. Call 800-361-4827.

New in the permit portal
You can now renew general permits online. Learn more at dnr.mo.gov/permits.

You are receiving this newsletter because you subscribed at dnr.mo.gov.
Unsubscribe or manage your preferences at dnr.mo.gov/newsletter.
""", "Environmental Assistance News - December 2026", sender=f"newsletter@{DEPT}",
    headers={"List-Unsubscribe": f"<mailto:unsubscribe@{DEPT}>, <https://{DEPT}/unsubscribe>",
             "Precedence": "bulk"}))

case("ham/sunshine_meeting_notice.eml", "ham", msg("""\
NOTICE OF OPEN MEETING
Clean Water Commission

The Clean Water Commission will meet on Wednesday, January 6, 2027, at 10:00 a.m. in the Lewis and
Clark State Office Building, 1101 Riverside Drive, Jefferson City.

Notice is hereby given that the Commission may vote to go into a closed session under Section
610.021(1), (3) and (13), RSMo, to discuss legal actions, personnel and records that are closed
records under the Sunshine Law. Closed records are records that are exempt from disclosure to the
public under Chapter 610. All other records of the meeting are open to the public.

Representatives of the news media may obtain copies of this notice by contacting the Commission
Secretary at 573-751-1300.
""", "Clean Water Commission meeting notice, January 6"))

case("ham/sunshine_response.eml", "ham", msg("""\
Dear Mr. Carter,

This letter responds to your Sunshine Law request received November 30, 2026, for records of the
Rolla field office inspections in 2025.

The department is providing 214 pages of responsive records. Four pages have been withheld because
they are closed records under Section 610.021(1), RSMo (legal actions) and are exempt from disclosure.
Personal telephone numbers of complainants were redacted under Section 610.021(14).

You may contact me if you have questions about this response.

Sincerely,
Pat Green, Custodian of Records
""", "Response to Sunshine Law request 2026-1187", to="rcarter@example.org"))

case("ham/draft_permit_public_notice.eml", "ham", msg("""\
Please publish the following public notice in Thursday's edition.

PUBLIC NOTICE
DRAFT MISSOURI STATE OPERATING PERMIT

The Missouri Department of Natural Resources proposes to issue a Missouri State Operating Permit to
the City of Salem wastewater treatment facility, permit number MO-0040096. The draft permit, fact
sheet and application are available for public review at dnr.mo.gov/public-notices.

Comments on the draft permit may be submitted until January 8, 2027, to the Water Protection Program,
P.O. Box 176, Jefferson City, MO 65102.

Thank you,
Water Protection Program
""", "Public notice for publication: MO-0040096", to="legals@salemnews.example.com"))

case("ham/embargoed_press_release.eml", "ham", msg("""\
EMBARGOED UNTIL 10 A.M. CST, TUESDAY, DECEMBER 8, 2026

FOR IMMEDIATE RELEASE AT EMBARGO TIME
Contact: Communications Office, 573-751-1010

Department awards $4.2 million in grants for rural drinking water systems

JEFFERSON CITY, MO - The Missouri Department of Natural Resources today announced $4.2 million in
grants to 17 rural communities to improve drinking water systems. The grants are funded through the
state revolving fund.

"These grants help small towns deliver safe water," the director said.

###
""", "Embargoed release: rural drinking water grants", to="newsdesk@example.com"))

case("ham/teams_invitation_passcode.eml", "ham", msg("""\
Hello all,

Please join the permit stakeholder meeting on Thursday, December 10, 2:00-3:30 p.m.

________________________________________________________________________________
Microsoft Teams meeting
Join on your computer, mobile app or room device
Click here to join the meeting
Meeting ID: 291 845 330 617
Passcode: Wq7Hn3
Download Teams | Join on the web
Or call in (audio only)
+1 573-555-0199,,482913377#   United States, Jefferson City
Phone Conference ID: 482 913 377#
________________________________________________________________________________

Agenda attached.
Lena
""", "Stakeholder meeting - Teams invitation", to="stakeholders@example.org"))

case("ham/testimony_long_number.eml", "ham", msg("""\
Attached is the written testimony for the public hearing record.

Testimony of the Department of Natural Resources before the House Committee on Conservation
The department's permit tracking system assigned the application the tracking number
4000128830012455, and the record was opened on March 3. Of the 1,214 applications received last year,
92 percent were decided within the statutory time frame.

Respectfully submitted,
Office of the Director
""", "Written testimony - permit backlog hearing", to="committee@house.example.gov"))

case("ham/confidential_treatment_regulatory.eml", "ham", msg("""\
Kim,

The utility's filing in docket EO-2026-0155 requests confidential treatment of the fuel cost exhibits
under 20 CSR 4240-2.135. Staff does not object to confidential treatment for the contract prices but
believes the annual totals should be public. The Commission's rule allows a party to challenge the
designation within ten days.

Can we discuss before Thursday's filing?

Dave
""", "EO-2026-0155 confidential treatment request", to="kim@psc.example.gov"))

case("ham/disclaimer_body.eml", "ham", msg("""\
Hi Tom,

The revised inspection schedule for the Springfield region is attached. Let me know if the dates
in February work for your crew.

Thanks,
Ana

CONFIDENTIALITY NOTICE: This e-mail message, including any attachments, is for the sole use of the
intended recipient(s) and may contain confidential and privileged information. Any unauthorized
review, use, disclosure or distribution is prohibited. If you are not the intended recipient, please
contact the sender by reply e-mail and destroy all copies of the original message.
""", "Inspection schedule", to="tom@example.org"))

case("ham/disclaimer_in_pdf.eml", "ham", msg("""\
Tom, the printed copy of yesterday's correspondence is attached for your file.

Ana
""", "Correspondence for your file", to="tom@example.org", attachments=((
    "correspondence.pdf", "application/pdf", cm.pdf([
    "From: Ana Ruiz",
    "Sent: Friday, December 4, 2026 3:12 PM",
    "Subject: Springfield inspection dates",
    "The inspection dates for February are the 9th and the 16th.",
    "CONFIDENTIALITY NOTICE: This e-mail message is for the sole use of the intended recipient",
    "and may contain confidential and privileged information. If you are not the intended",
    "recipient, please contact the sender and destroy all copies of the original message.",
])),)))

case("ham/purchase_order.eml", "ham", msg("""\
Purchase Order 26-00418

Vendor: Midwest Lab Supply, 210 Industrial Dr., Columbia, MO
Ship to: Environmental Services Program, 2710 W. Main St., Jefferson City

Qty  Item                               Unit price   Total
12   Sample bottles, 1 L amber            $4.50       $54.00
 2   Field pH meter, model 450          $389.00      $778.00
Total: $832.00. Net 30. Please confirm the delivery date.

Procurement, Division of Administrative Support
""", "PO 26-00418 - Midwest Lab Supply", to="orders@midwestlab.example.com"))

case("ham/harassment_training_notice.eml", "ham", msg("""\
All supervisors must complete the annual Respectful Workplace training by January 31.

The course covers what harassment looks like in practice, for example a supervisor suggesting that an
employee would be promoted sooner if she dressed differently, remarks about a co-worker's body, or
refusing to consider applicants because of their national origin or age. It explains how to report it
and how investigations protect the people who come forward.

Register in the Learning Center under course HR-114.
Human Resources
""", "Respectful Workplace training due January 31", to="supervisors@example.org"))

case("ham/surplus_vehicle_auction.eml", "ham", msg("""\
State surplus property will auction six fleet vehicles on December 19, including a 2015 Ford F-150
with 98,000 miles. Sealed bids are due by 2 p.m. on December 18 at the Surplus Property office,
117 N. Riverside Drive. Vehicles can be inspected on December 16 and 17 from 8 a.m. to 4 p.m.

Fleet Management
""", "Surplus vehicle auction December 19", to="bidders@example.org"))

case("ham/feral_hog_update.eml", "ham", msg("""\
Feral hogs are not wildlife in the usual sense; they are an invasive species that destroys crops and
habitat. Landowners who trap them should report the numbers to the partnership. The hogs don't belong
in this state's ecosystem, and the goal is elimination, not management.

Feral Hog Elimination Partnership
""", "Feral hog trapping report", to="landowners@example.org"))

case("ham/charity_drive.eml", "ham", msg("""\
The State Employees Charitable Campaign runs through November 30. Pledge forms are on the intranet;
you can give through payroll deduction to any of the 900 listed charities. Thank you to everyone who
has already given.

SECC coordinator, Division of Environmental Quality
""", "State Employees Charitable Campaign", to="staff@example.org"))

case("ham/harassment_training_examples.eml", "ham", msg("""\
Supervisors' guide, section 3: recognising harassment

Harassment is often said in plain words. Examples include remarks such as "you'd get promoted faster if
you wore shorter skirts" or "we don't hire people from that country, they're lazy". Report any such
remark to Human Resources; retaliation against the person who reports it is prohibited.
""", "Supervisors' guide: recognising harassment", to="supervisors@example.org"))

case("ham/news_clipping_fundraiser.eml", "ham", msg("""\
Today's clips for the director.

Jefferson City News Tribune, Dec. 7: Lawmakers court donors before session
Several legislators held receptions this week in support of the re-election of committee chairs. At one,
the suggested contribution was $250 and the host committee included two utility lobbyists. Campaign
finance reports are due January 15.

Springfield News-Leader, Dec. 7: County approves stormwater fee
The county commission approved a stormwater utility fee to fund MS4 permit compliance.
""", "News clips - December 7", to="director@example.org"))

# --- violations that must be held -------------------------------------------------------------------
case("abusive/harassment_skirts.eml", "abusive", msg("""\
Jenna,

Honestly you'd get promoted faster if you wore shorter skirts to the staff meetings. The director
likes looking at you, so use it.
""", "your review", to="jenna@example.org"))

case("abusive/sexual_remark.eml", "abusive", msg("""\
Saw you at the conference yesterday. You looked so hot in that dress, I couldn't stop
thinking about your body all night. Come up to my hotel room after the session and I'll show you
what I want to do to you.
""", "last night", to="kate@example.org"))

case("abusive/discriminatory_hiring.eml", "abusive", msg("""\
About the technician opening: we don't hire people from that country, they're lazy and they
don't show up. Put her application at the bottom of the pile. And no one over 55, they can't learn
the new system.
""", "technician candidates", to="hr.partner@example.org"))

case("abusive/threat.eml", "abusive", msg("""\
You filed that complaint against me again. If you do it one more time I will find you after work
and you will regret it. Watch your back.
""", "complaint", to="neighbor@example.org"))

case("abusive/hate_plain.eml", "abusive", msg("""\
Those people are animals and don't belong in this country. They should all be sent back where
they came from.
""", "re: new residents", to="friend@example.org"))

case("commercial/girl_scout_cookies.eml", "commercial", msg("""\
Hi everyone!

My daughter's Girl Scout troop is selling cookies again. Thin Mints, Samoas and Tagalongs are $6 a
box. The order form is attached - just fill in how many boxes you want and I'll deliver them to your
desk in February. Cash or Venmo.

Thanks for supporting the troop!
Karen
""", "Girl Scout cookie orders", to="friends@example.org"))

case("commercial/car_for_sale.eml", "commercial", msg("""\
Selling my 2015 Honda Accord, 98,000 miles, one owner, new tires. $6,000 OBO. Can show it in
the parking garage after 4. Call or text 573-555-0142 if interested.
""", "Car for sale", to="buddies@example.org"))

case("commercial/side_business.eml", "commercial", msg("""\
Hi all, I've started a small catering business on the side! I do office lunches, graduation
parties and weddings. 10% off your first order if you mention this e-mail. Check out my menu and
prices at karenscatering.example.com and place your order by Friday.
""", "My new catering business", to="friends@example.org"))

case("political/reelection_fundraiser.eml", "political", msg("""\
You're invited!

Please join us for a reception in support of the re-election of State Representative Dana Ortiz
Thursday, December 17, 5:30 - 7:30 p.m., The Capitol Grille, Jefferson City

Suggested contribution: $100 per person. Host committee: $500.
RSVP to Jim at 573-555-0111. Checks payable to Citizens for Ortiz.
""", "Fundraiser for Rep. Ortiz", to="friends@example.org"))

case("political/vote_call.eml", "political", msg("""\
Friends, Tuesday is election day. Please vote for Dana Ortiz for State Representative and
bring your family to the polls. We need every vote to keep her in office!
""", "Vote Tuesday!", to="friends@example.org"))

case("political/campaign_volunteer_invite.eml", "political", msg("""\
Join us Saturday morning to knock doors for Dana Ortiz's campaign. We meet at 9 a.m. at the
campaign office on High Street; yard signs and walk lists will be ready. Bring a friend!
""", "Canvass Saturday for Dana", to="friends@example.org"))

case("confidential/stamp_draft.eml", "confidential", msg("""\
Attached for your eyes only.

CONFIDENTIAL - DRAFT - DO NOT DISTRIBUTE
Proposed enforcement settlement, City of Salem
The department proposes a civil penalty of $45,000 payable in three installments.
""", "settlement terms", to="counsel@example.org"))

case("credentials/password_given.eml", "credentials", msg("""\
Hi Sam,

Here is the login for the permit portal service account so you can upload the files tonight:
Username: svc_permits
Password: Tr33Fr0g!2026

Please don't share it.
""", "portal login", to="sam@contractor.example.com"))

# --- archives of each format with the sensitive text inside, and an archive of public papers ----------
CENSUS = b"""Open enrollment 2027: employee census for Midwest Benefits Group
Please load the following employees into the dental plan before December 15.
Jane Roe, Permits Office, SSN 536-22-8726, date of hire 03/14/2019
Marcus Webb, Highway Safety, SSN 412-55-1290, date of hire 07/01/2021
Dolores Park, Fleet Services, SSN 229-31-4476, date of hire 11/20/2015
"""
MEMO = b"""CONFIDENTIAL

MEMORANDUM
To: Director
From: Legal Division
Re: Pending settlement, Salem wastewater enforcement

PRIVILEGED AND CONFIDENTIAL - ATTORNEY WORK PRODUCT
The department's litigation position and the lowest penalty we would accept are set out below.
"""
CARDS = b"""Procurement card reconciliation, November
Cardholder: R. Alvarez, Visa card 4556 7375 8689 9855, exp 04/28
Cardholder: K. Osei, Mastercard 5425 2334 3010 9903, exp 09/27
"""
case("pii/archive_zip_ssn_census.eml", "pii", msg(
    "Hi Tom,\n\nThe enrollment census is attached as discussed.\n\nThanks,\nRita\nHR Payroll\n",
    "Dental enrollment census", sender=f"hr.payroll@{DEPT}", to="benefits@vendor.example.com",
    attachments=(("enrollment.zip", "application/zip", zip_of({"census/enrollment-2027.txt": CENSUS})),)))
case("confidential/archive_targz_memo.eml", "confidential", msg(
    "Files for the outside counsel review, as you asked.\n", "Salem files",
    to="associate@lawfirm.example.com",
    attachments=(("salem-files.tar.gz", "application/gzip", tar_gz_of({"salem/settlement-memo.txt": MEMO})),)))
case("pii/archive_7z_card_ledger.eml", "pii", msg(
    "Attached is the p-card export for your audit.\n", "P-card export", sender=f"fiscal@{DEPT}",
    to="auditor@cpa-firm.example.com",
    attachments=(("pcard-export.7z", "application/x-7z-compressed",
                  seven_zip_of({"exports/pcard-november.txt": CARDS})),)))
case("confidential/archive_gz_memo.eml", "confidential", msg(
    "The memo, compressed so it fits.\n", "memo", to="associate@lawfirm.example.com",
    attachments=(("settlement-memo.txt.gz", "application/gzip", gzip.compress(MEMO, mtime=0)),)))
case("ham/archive_zip_meeting_packet.eml", "ham", msg(
    "Attached is the packet for the January Clean Water Commission meeting.\n\nCommission Secretary\n",
    "Commission meeting packet", to="commissioners@example.org",
    attachments=(("packet.zip", "application/zip", zip_of({
        "packet/agenda.txt": b"Agenda, January 6: 1. Minutes 2. Variance requests 3. Rulemaking update\n"
                             b"The Commission may go into a closed session to discuss legal actions.\n",
        "packet/minutes.txt": b"Minutes of the December meeting. The Commission approved the minutes of "
                              b"November and heard a report on the state revolving fund.\n"})),)))

# --- look-alike letters: a confidentiality stamp disguised, and text that only looks like a trick -----
PANEL = "\n\nMinutes of the selection panel, 3 December.\nScores for the three applicants are attached.\n"
for name, stamp in (("cyrillic", "\u0421ONFIDENTIAL"),
                    ("fullwidth", "\uff23\uff2f\uff2e\uff26\uff29\uff24\uff25\uff2e\uff34\uff29\uff21\uff2c"),
                    ("spaced", "C O N F I D E N T I A L"),
                    ("dotted", "C.O.N.F.I.D.E.N.T.I.A.L"),
                    ("leet", "C0NF1D3NT1AL")):
    case(f"confidential/lookalike_{name}.eml", "confidential",
         msg(stamp + PANEL, "Panel minutes", to="consultant@example.org"))
case("ham/russian_letter.eml", "ham", msg(
    "Добрый день! Отчёт по проекту готов, сроки согласованы. Пожалуйста, посмотрите приложение до пятницы.\n"
    "С уважением, Сергей\n", "Встреча", to="partner@example.ru"))
case("ham/spaced_headings.eml", "ham", msg(
    "S U M M A R Y\n\nThe permit office closed 212 files this quarter.\n\nA G E N D A\n1. Budget\n2. Staffing\n"
    "\nThe delegation from the U.S.A. arrives Monday; the U.K. team joins on Tuesday at 10 a.m.\n",
    "Quarterly report", to="partner@example.org"))

# --- personal numbers as people write them, and numbers that only look like them --------------------
for name, text in (("ssn_dots", "employee Luis Ortega, SSN 512.44.3321, injured 11/30 on the Route 63 crew."),
                   ("ssn_en_dash", "social security number 512\u201344\u20133321 for Luis Ortega."),
                   ("ssn_spaces", "the employee's social security number is 512 44 3321 and the start date is Monday."),
                   ("ssn_line_break", "the correct SSN for Dolores Park is 229-31-\n4476. Please update payroll."),
                   ("card_dots", "please charge the registration to my card 4556.7375.8689.9855, expiry 04/28.")):
    case(f"pii/format_{name}.eml", "pii",
         msg(f"Hello,\n\nFor the claim file: {text}\n\nRegards,\nAnn\n", "Claim 44-1187",
             to="claims@insurer.example.com"))
case("ham/dotted_numbers.eml", "ham", msg(
    "Good morning,\n\nThe pre-construction meeting is moved to 12.14.2026 at 9:30. Call the field office at "
    "573.555.0142 or 573.751.2551 if you cannot attend.\nInvoice 2026.11.0042 was approved; the signal controller "
    "runs firmware v10.4.2.1057.\nBuilding permit 912.04.5521 was issued to the contractor.\n\nThanks,\n"
    "Field Office\n", "Pre-construction meeting", to="pm@contractor.example.com"))
case("ham/ssn_policy_reminder.eml", "ham", msg(
    "Reminder from the Privacy Office: never send a social security number or a credit card number by e-mail. "
    "Use the secure file transfer site for payroll and benefits forms, and mark confidential documents as the "
    "records policy describes.\n", "Sending personal information", to="contractors@example.org"))


def main() -> None:
    lines = ["path\tlabel\tsource"]
    for path, (label, raw) in sorted(CASES.items()):
        target = OUT / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(fixed(path, raw))
        lines.append(f"{path}\t{label}\tdepartment")
    (OUT / "manifest.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(CASES)} cases written to {OUT}")


if __name__ == "__main__":
    main()
