"""pii: validity rules, proximity keywords, confidence, minimum counts, masking; contact details alone are not pii."""

from __future__ import annotations

import pytest

from gateway.config import Settings
from gateway.detectors import OptionError
from gateway.detectors.pii import Pii, aba_valid, card_issuer, iban_valid, luhn, mask, ssn_valid
from gateway.model import Finding
from tests.support import contentmail as cm


async def findings(body: str, **options) -> list[Finding]:
    return await cm.run(Pii, cm.message(body, subject="Form"), options)


async def kinds(body: str, **options) -> list[str]:
    return [f.kind for f in await findings(body, **options)]


async def test_ssn_with_keyword_is_high_confidence_and_masked():
    [f] = await findings("Employee: Jane Roe, social security number 536-22-8726, start date Monday.")
    assert f.kind == "pii.ssn"
    assert f.detail == "SSN near 'social security number' in body (1 match, high confidence)"
    assert f.evidence == ("SSN ***-**-8726",)
    assert "536-22" not in repr(f)


@pytest.mark.parametrize("ssn", ["000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456", "536-00-8726",
                                 "536-22-0000", "078-05-1120", "219-09-9999", "123-45-6789", "111-11-1111"])
async def test_ssa_invalid_and_advertising_numbers_are_not_ssns(ssn):
    assert await kinds(f"Her SSN: {ssn}") == []


def test_ssa_rules_directly():
    assert ssn_valid("536228726") and ssn_valid("772123456") and ssn_valid("001010001")
    assert not ssn_valid("666123456") and not ssn_valid("987654321") and not ssn_valid("536008726")


async def test_ssn_without_keyword_and_unformatted_numbers():
    assert await kinds("Ref 536-22-8726 for the file.") == ["pii.ssn"]              # formatted: medium
    assert await kinds("Ref 536-22-8726 for the file.", min_confidence="high") == []
    assert await kinds("Order number 536228726 shipped.") == []                     # 9 digits, no keyword
    assert await kinds("SSN 536228726") == ["pii.ssn"]
    assert await kinds("Call 555-123-4567 or 536 22 87") == []


async def test_payment_cards_need_luhn_and_an_issuer_prefix():
    [f] = await findings("Please charge my Visa card 4539 1488 0343 6467 for the registration.")
    assert f.kind == "pii.payment_card" and "high confidence" in f.detail
    assert f.evidence == ("Payment card number **** **** **** 6467",)
    assert await kinds("Card 4539 1488 0343 6468") == []             # Luhn fails
    assert await kinds("Tracking 9539148803436467") == []            # no issuer starts with 9
    assert await kinds("Amex 3782-822463-10005 on file") == ["pii.payment_card"]
    assert await kinds("Invoice 0000000000000000") == []


def test_card_helpers():
    assert luhn("4539148803436467") and not luhn("4539148803436468")
    assert card_issuer("5555555555554444") == "Mastercard" and card_issuer("2223003122003222") == "Mastercard"
    assert card_issuer("378282246310005") == "American Express" and card_issuer("6011111111111117") == "Discover"
    assert card_issuer("9999999999999995") is None


async def test_bank_routing_number_next_to_an_account_number():
    [f] = await findings("Direct deposit: routing number 021000021, account number 123456789012.")
    assert f.kind == "pii.bank_account"
    assert f.evidence == ("Bank routing and account number routing *****0021, account ********9012",)
    assert await kinds("Routing number 021000021 for the bank.") == []          # no account number
    assert await kinds("Routing 021000022, account 123456789012") == []         # checksum fails
    assert aba_valid("011000015") and not aba_valid("911000015")


async def test_iban_check_digits():
    [f] = await findings("Please wire the refund to IBAN GB82 WEST 1234 5698 7654 32.")
    assert f.kind == "pii.iban"
    assert f.evidence == ("IBAN **** **** **** **** **54 32",)
    assert await kinds("IBAN GB82 WEST 1234 5698 7654 33") == []
    assert iban_valid("DE89370400440532013000") and not iban_valid("DE89370400440532013001")


async def test_drivers_licence_and_passport_need_keywords():
    [f] = await findings("My driver's license number is D1234567 (Missouri).")
    assert f.kind == "pii.drivers_license" and f.evidence == ("Driver's licence number *****567",)
    [f] = await findings("Passport no. 912803456, issued 2019.")
    assert f.kind == "pii.passport" and f.evidence == ("Passport number ******456",)
    assert await kinds("Permit D1234567 was renewed.") == []


async def test_date_of_birth_counts_next_to_a_name():
    [f] = await findings("Applicant: Maria Lopez\nDate of birth: 04/12/1987")
    assert f.kind == "pii.date_of_birth" and f.evidence == ("Date of birth **/**/1987",)
    assert await kinds("date of birth: 04/12/1987") == []           # no name: low confidence
    assert await kinds("The office was born on 04/12/1987 as a pilot project") == []


async def test_contact_details_alone_are_not_pii():
    signature = ("--\nJane Doe | Permits Office\n301 W High St, Jefferson City, MO 65101\nPhone (573) 555-0142 | "
                 "Fax 573-555-0199\njane.doe@example.gov | https://example.gov/permits\nCase 2026-000123")
    assert await kinds("See you Tuesday.\n\n" + signature) == []


@pytest.mark.parametrize("body", [
    "Case No. 2023-CV-01234 was continued to May.",
    "Invoice #4500012345 and PO 7700123456 are approved.",
    "UPS tracking 1Z999AA10123456784, FedEx 7946 1234 5678.",
    "Your utility account 12345678 shows a balance of $45.10.",
    "Mail to Jefferson City, MO 65101-1234 by 06/30/2026.",
    "The grant number is 2026-GR-004512; the CFDA number is 20.205.",
    "Bridge A-1234 on Route 50 (log mile 123.456) is closed; call 1-800-555-0199.",
])
async def test_government_numbers_are_not_pii(body):
    assert await kinds(body) == []


async def test_minimum_count_and_per_type_overrides():
    body = "SSN 536-22-8726"
    assert await kinds(body, min_count=2) == []
    assert await kinds(body + "\nSSN 412-55-1290", min_count=2) == ["pii.ssn"]
    assert await kinds(body, types={"ssn": {"enabled": False}}) == []
    assert await kinds("Ref 536-22-8726", types={"ssn": {"min_confidence": "high"}}) == []
    with pytest.raises(OptionError, match="unknown type"):
        Pii(Settings(), {"types": {"sssn": {}}})


async def test_pii_in_attachments_and_not_in_quotes():
    sheet = cm.xlsx([["Name", "SSN"], ["Jane Roe", "536-22-8726"], ["John Roe", "412-55-1290"]])
    raw = cm.message("Payroll corrections attached.", attachments=(("payroll.xlsx", "application/octet-stream",
                                                                    sheet),))
    [f] = await cm.run(Pii, raw)
    assert f.kind == "pii.ssn" and f.part == "part 2: payroll.xlsx" and f.score == 2.0
    assert set(f.evidence) == {"SSN ***-**-8726", "SSN ***-**-1290"}
    quoted = "Done.\n\nOn Monday HR <hr@example.gov> wrote:\n> Her SSN is 536-22-8726\n"
    assert await kinds(quoted) == []


def test_mask_keeps_separators():
    assert mask("4539-1488-0343-6467") == "****-****-****-6467"
    assert mask("D1234567", 3) == "*****567"


async def test_text_over_the_limits_is_reported_unscanned():
    from gateway.config import from_dict
    settings = from_dict({"text": {"max_attachment_bytes": 100}})
    raw = cm.message("See the list.", attachments=(("list.csv", "text/csv", b"name,ssn\n" + b"Jo,536-22-8726\n" * 20),))
    [f] = await cm.run(Pii, raw, settings=settings)
    assert f.kind == "unscanned.text_limits"
    assert f.detail == ("The pii check could not read all of the message's text: "
                        "part 2: list.csv: over the 100 byte attachment limit")


async def test_formatted_licence_numbers_after_the_keyword():
    [f] = await findings("DL number: S530-4612-8877 (Illinois)")
    assert f.kind == "pii.drivers_license" and f.evidence == ("Driver's licence number ****-****-*877",)
    assert await kinds("Form W-2 and 1099-MISC are attached.") == []


async def test_pii_hidden_in_html_is_still_found():
    raw = cm.message("Agenda attached.", html="<p>Agenda.</p><div style='display:none'>SSN 536-22-8726</div>")
    [f] = await cm.run(Pii, raw)
    assert f.kind == "pii.ssn" and f.evidence == ("SSN ***-**-8726",)


@pytest.mark.parametrize(("body", "evidence"), [
    ("DL: W123-4567-8901", "Driver's licence number ****-****-*901"),
    ("My driving license number is ABCD1234567", "Driver's licence number ********567"),
    ("Passport: X12345678", "Passport number ******678"),
])
async def test_identifier_shapes_after_keywords(body, evidence):
    [f] = await findings(body)
    assert f.evidence == (evidence,)


async def test_a_licence_plate_is_not_a_licence_number():
    assert await kinds("Vehicle license plate ABC-1234 was towed.") == []


def test_keywords_from_hyperscan_are_the_automatons():
    """ASCII text takes Hyperscan's whole-word pass (gateway/matching/keywords.py); it must find exactly what the
    automaton with the Python boundary checks finds: same kinds, positions, keywords and order."""
    import random

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from gateway.detectors.pii import KEYWORDS
    from tests.message.test_corpus_robustness import CORPUS_DIR

    detector = Pii(Settings(), {})
    words = sorted({w for ws in KEYWORDS.values() for w in ws})
    pieces = [*words, "meeting", "address", "items", "accounting", "dlx", "xdl", "a", "1", "_", "-", "'", "#", ":"]

    files = sorted(CORPUS_DIR.rglob("*.eml"))
    texts = [p.read_bytes()[:20000].decode("ascii", "replace").replace("\ufffd", "?").lower()
             for p in files[::max(1, len(files) // 300)]]
    assert sum(bool(detector._keywords(t)) for t in texts) >= 80
    for text in texts:
        assert detector._keywords(text) == detector._keywords_unicode(text)

    @settings(max_examples=1000, deadline=None)
    @given(st.lists(st.sampled_from(pieces), max_size=40), st.randoms())
    def check(chosen: list[str], rnd: random.Random) -> None:
        lead = rnd.choice(["", " ", "-", "\n"])
        text = lead + "".join(p + rnd.choice(["", " ", "  ", "\n", ".", ",", "#", "_", "9", "x"]) for p in chosen)
        assert detector._keywords(text) == detector._keywords_unicode(text)

    check()
