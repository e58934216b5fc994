"""Writes tests/data/department: realistic department mail, one .eml per case, and its manifest.tsv
(path, expected label, case). Run from the repository root; the files are committed."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import contentmail as cm

OUT = Path("tests/data/department")
DEPT = "dnr.mo.gov"

CASES: dict[str, tuple[str, bytes]] = {}


def case(path: str, label: str, raw: bytes) -> None:
    CASES[path] = (label, raw)


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


def main() -> None:
    lines = ["path\tlabel\tsource"]
    for path, (label, raw) in sorted(CASES.items()):
        target = OUT / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(raw)
        lines.append(f"{path}\t{label}\tdepartment")
    (OUT / "manifest.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(CASES)} cases written to {OUT}")


if __name__ == "__main__":
    main()
