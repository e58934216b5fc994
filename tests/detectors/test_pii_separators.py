"""SSNs and card numbers as people write them: dots, en-dashes, spaces and line breaks between the groups,
sent out through a real SMTP session and held as pii; look-alike numbers in ordinary department mail
(phone numbers, dates, invoice and version numbers, a dotted permit number the SSA rules refuse) stay clean."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.detectors.pii import Pii
from tests.support import contentmail as cm
from tests.support.peers import make_message, send

SENDER, OUTSIDE = "clerk@example.gov", "claims@insurer.example.com"


async def send_out(gw, subject: str, body: str) -> None:
    code, text, _ = await send(gw.port, SENDER, [OUTSIDE], make_message(subject=subject, body=body, sender=SENDER,
                                                                       to=OUTSIDE))
    assert code == 250, text
    await asyncio.sleep(0.05)


async def assert_held(gw, sink, kind: str, masked: str) -> None:
    assert sink.messages == []
    [item] = await gw.store.list()
    assert item.rule == "outbound/pii", (item.rule, item.findings)
    [f] = [f for f in item.findings if f.kind == kind]
    assert masked in " ".join(f.evidence), f.evidence


async def test_ssn_written_with_dots_is_held(gw, sink):
    await send_out(gw, "Claim 44-1187", "Hello,\n\nFor the workers' comp claim: employee Luis Ortega, "
                                        "SSN 512.44.3321, injured 11/30 on the Route 63 crew.\n\nRegards,\nAnn\n")
    await assert_held(gw, sink, "pii.ssn", "***-**-3321")


async def test_ssn_written_with_en_dashes_is_held(gw, sink):
    await send_out(gw, "Beneficiary form", "Per the beneficiary form (typed in Word): social security "
                                           "number 512\u201344\u20133321 for Luis Ortega.\n")
    await assert_held(gw, sink, "pii.ssn", "***-**-3321")


async def test_ssn_with_spaces_broken_across_a_line_is_held(gw, sink):
    await send_out(gw, "Re: enrollment", "Hi, the employee's social security number is 512 44\n3321 and the "
                                         "start date is Monday.\n")
    await assert_held(gw, sink, "pii.ssn", "***-**-3321")


async def test_ssn_with_dashes_broken_across_a_line_is_held(gw, sink):
    await send_out(gw, "Re: W-4 correction", "The W-4 you have on file shows the wrong SSN for Dolores Park; "
                                             "the correct one is 229-31-\n4476. Please update payroll.\n")
    await assert_held(gw, sink, "pii.ssn", "***-**-4476")


async def test_ssn_with_spaced_dashes_is_held(gw, sink):
    await send_out(gw, "Re: direct deposit", "Payroll needs the SSN to match the bank form: 512 - 44 - 3321 "
                                             "(Luis Ortega). Thanks.\n")
    await assert_held(gw, sink, "pii.ssn", "***-**-3321")


async def test_card_number_with_spaced_dashes_is_held(gw, sink):
    await send_out(gw, "Hotel", "Card on file for the block: 4556 \u2013 7375 \u2013 8689 \u2013 9855, exp 04/28.\n")
    await assert_held(gw, sink, "pii.payment_card", "9855")


async def test_card_number_written_with_dots_is_held(gw, sink):
    await send_out(gw, "Registration", "Please charge the conference registration to my card "
                                       "4556.7375.8689.9855, expiry 04/28.\n")
    await assert_held(gw, sink, "pii.payment_card", "9855")


async def test_card_number_written_with_en_dashes_is_held(gw, sink):
    await send_out(gw, "Hotel", "Reservation guaranteed with Visa 4556\u20137375\u20138689\u20139855.\n")
    await assert_held(gw, sink, "pii.payment_card", "9855")


async def test_card_number_broken_across_a_line_is_held(gw, sink):
    await send_out(gw, "Order", "Use the division p-card for the parts order: card number 4556 7375\n"
                                "8689 9855, billing zip 65101.\n")
    await assert_held(gw, sink, "pii.payment_card", "9855")


async def test_dotted_numbers_in_ordinary_mail_are_delivered(gw, sink, caplog):
    caplog.set_level(logging.INFO)
    body = ("Good morning,\n\n"
            "The pre-construction meeting is moved to 12.14.2026 at 9:30. Call the field office at 573.555.0142 "
            "or 573.751.2551 (fax 573.555.0199) if you cannot attend.\n"
            "Invoice 2026.11.0042 and PO 4500.1234.5678 were approved; the signal controller runs firmware "
            "v10.4.2.1057 (build 6.1.7601.24545).\n"
            "Building permit 912.04.5521 was issued to the contractor; the old permit 000.12.3456 is void.\n"
            "Coordinates 38.5767, -92.1735. Budget line 0.26.2026 is unchanged.\n\n"
            "Thanks,\nField Office\n")
    code, text, _ = await send(gw.port, SENDER, ["pm@contractor.example.com"],
                               make_message(subject="Pre-construction meeting", body=body, sender=SENDER,
                                            to="pm@contractor.example.com"))
    assert code == 250, text
    [got] = await sink.wait_for(1)
    assert b"X-Gateway-Verdict: deliver" in got.data
    [logged] = [r.fields for r in caplog.records if r.name == "gateway.message"]
    assert logged["rule"] == "outbound/default", logged


async def findings(body: str):
    return [f.kind for f in await cm.run(Pii, cm.message(body, subject="Form"))]


@pytest.mark.parametrize("body, expected", [
    ("Ref 512.44.3321 for the file.", []),                  # dotted, no SSN keyword: a part or permit number
    ("SSN 512.44.3321", ["pii.ssn"]),
    ("SSN 912.44.3321", []),                                 # SSA: no area 9xx
    ("SSN 512.00.3321", []),                                 # SSA: no group 00
    ("SSN 123.45.6789", []),                                 # advertising number
    ("SSN 512.44-3321", []),                                 # mixed separators
    ("SSN 1.512.44.3321", []),                               # part of a longer dotted number
    ("SSN 512.44.3321.7", []),
    ("Ref 512\u201344\u20133321 for the file.", ["pii.ssn"]),   # a dash is a dash
    ("Card 4556.7375.8689.9856", []),                        # Luhn fails
    ("Card 4556.7375.8689-9855", []),                        # mixed separators
    ("Totals\n4556\n7375\n8689\n9855", []),                  # a column of numbers
])
async def test_separator_rules(body, expected):
    assert await findings(body) == expected
