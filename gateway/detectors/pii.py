"""pii: identifiers whose exposure harms the person (policy: Provisions for Security; Confidentiality).

Built like the sensitive-information types of commercial DLP: for each type a pattern, a validator
(SSA rules, Luhn and issuer prefixes, the ABA and IBAN check digits), proximity keywords, and a
confidence level from how much corroborates the match:

| type             | high                                   | medium                              |
| ssn              | formatted + keyword                    | formatted, or 9 digits + keyword    |
| payment_card     | Luhn + issuer prefix + keyword         | Luhn + issuer prefix                |
| bank_account     | ABA checksum + routing and account     | -                                   |
| iban             | check digits + country length + kw     | check digits + country length       |
| drivers_license  | keyword right before the number        | keyword near                        |
| passport         | keyword right before the number        | keyword near                        |
| date_of_birth    | keyword + date + a name near           | (keyword + date alone: low)         |

A type is reported when at least `min_count` of its matches reach `min_confidence` (options, per type
overridable). A phone number, e-mail address or street address alone is not pii for this policy.
All candidates come from one regular-expression pass and all keywords from one automaton pass; the
evidence masks every value ("SSN ***-**-6789").
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import ahocorasick

from gateway.config import Settings
from gateway.detectors.base import OptionError, options_with_defaults
from gateway.matching.keywords import WholeWords
from gateway.message.plaintext import limits_finding, off_loop_if_large
from gateway.message.text import message_text
from gateway.model import Finding, Mail

LEVELS = {"low": 0, "medium": 1, "high": 2}
DEFAULTS: dict[str, Any] = {
    "min_confidence": "medium",
    "min_count": 1,
    "window": 300,              # characters around a match in which a keyword counts
    "count_quoted": False,
    "types": {},                # per type: {min_confidence = "...", min_count = N, enabled = false}
}
LABELS = {"ssn": "SSN", "payment_card": "Payment card number", "bank_account": "Bank routing and account number",
          "iban": "IBAN", "drivers_license": "Driver's licence number", "passport": "Passport number",
          "date_of_birth": "Date of birth"}
KEYWORDS = {
    "ssn": ["social security", "social security number", "social security no", "soc sec", "ssn", "ssns", "ss#", "ssn#",
            "ss #", "ssn:", "ss no", "ssa number", "social security#", "tin", "taxpayer id", "itin"],
    "payment_card": ["credit card", "card number", "card no", "card #", "card#", "cc#", "cc number", "visa",
                     "mastercard", "master card", "amex", "american express", "discover", "debit card", "card",
                     "expiration", "exp date", "expiry", "cvv", "cvc", "security code", "charge my", "diners", "jcb"],
    "bank_routing": ["routing", "routing number", "routing no", "aba", "aba#", "rtn", "transit number", "bank routing"],
    "bank_account": ["account", "acct", "account number", "account no", "acct#", "acct no", "checking", "savings"],
    "iban": ["iban", "international bank account", "bank account", "wire transfer", "swift", "bic"],
    "drivers_license": ["driver's license", "drivers license", "driver license", "driver's licence", "drivers licence",
                        "driver licence", "driving licence", "driving license", "dl", "dl#", "dl #", "dl no", "dln",
                        "dl number", "license number", "licence number", "license no", "lic#", "lic no",
                        "operator's license", "driver's lic", "driver id", "driving permit", "driver's permit"],
    "passport": ["passport", "passport number", "passport no", "passport#", "passport #"],
    "date_of_birth": ["date of birth", "dob", "d.o.b", "birth date", "birthdate", "born on", "birthday", "born"],
    "name": ["name", "employee", "patient", "applicant", "mr", "mrs", "ms", "dr"],
}
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]{0,6}\.?"
# Every candidate starts with a digit, so the regular-expression engine skips to digits at C speed;
# word boundaries and letter prefixes ("A5631933" for a licence) are checked in Python per match.
# Between the groups of a card number or an SSN: a space, dot, hyphen or dash (en-dash, minus sign, ...),
# perhaps followed by a line break, a line break alone, or a dash between spaces ("512 - 44 - 3321"); one
# kind per number (`_separator`).
_DASHES = "\u2010-\u2015\u2212"
_GAP = rf"(?:[ .\-{_DASHES}]\n?|\n| [\-{_DASHES}] )"
_NO_MORE = rf"(?![.{_DASHES}]\d)"          # not the start of a longer dotted or dashed number
_DIGITS = re.compile(
    rf"\d(?:(?P<card>(?:\d{{3}}{_GAP}\d{{4}}{_GAP}\d{{4}}{_GAP}\d{{1,7}}|\d{{3}}{_GAP}\d{{6}}{_GAP}\d{{4,5}}"
    rf"|\d{{12,18}}){_NO_MORE})"
    rf"|(?P<ssn>\d{{2}}{_GAP}\d{{2}}{_GAP}\d{{4}}{_NO_MORE})"
    r"|(?P<date>\d?[/.-]\d{1,2}[/.-](?:19|20)?\d{2}|\d{3}-\d{1,2}-\d{1,2})"
    r"|(?P<number>\d{4,16}[A-Za-z]?))(?![\w-])")
_NOT_DIGITS = re.compile(r"\D+")
_FIRST_GROUP = re.compile(r"\d+")
_LONGER = frozenset("." + "".join(chr(c) for c in range(0x2010, 0x2016)) + "\u2212")
_IBAN = re.compile(r"[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?(?![\w-])")
_IBAN_ANY_CASE = re.compile(r"(?i)[a-z]{2}\d{2}(?:[ ]?[a-z0-9]{4}){2,7}(?:[ ]?[a-z0-9]{1,3})?(?![\w-])")
_MONTH_DATE = re.compile(rf"(?i)\b(?:{_MONTH} \d{{1,2}}(?:st|nd|rd|th)?,? (?:19|20)\d{{2}}"
                         rf"|\d{{1,2}} {_MONTH},? (?:19|20)\d{{2}})")
_ID_TOKEN = re.compile(r"(?<![\w-])[A-Za-z0-9]{1,20}(?:-[A-Za-z0-9]{1,10}){0,4}(?![\w-])")
_NAME = re.compile(r"\b[A-Z][a-z]+(?: [A-Z]\.?)? [A-Z][a-z]+\b")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ADVERTISING_SSN = frozenset({"078051120", "219099999", "123456789", "111111111", "457555462", "987654320"})
_IBAN_LENGTH = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


@dataclass(frozen=True, slots=True)
class Match:
    type: str
    level: int
    masked: str
    keyword: str
    source: str
    # where the value stands in the scanned text and what replaces it there (gateway/evidence.py)
    spans: tuple[tuple[int, int, str], ...] = field(default=(), compare=False)


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_issuer(d: str) -> str | None:
    n = len(d)
    two, four, six = int(d[:2]), int(d[:4]), int(d[:6])
    if d[0] == "4" and n in (13, 16, 19):
        return "Visa"
    if (51 <= two <= 55 or 2221 <= four <= 2720) and n == 16:
        return "Mastercard"
    if two in (34, 37) and n == 15:
        return "American Express"
    if (d.startswith("6011") or 644 <= int(d[:3]) <= 649 or two == 65 or 622126 <= six <= 622925) and 16 <= n <= 19:
        return "Discover"
    if (300 <= int(d[:3]) <= 305 or two in (36, 38, 39)) and 14 <= n <= 19:
        return "Diners Club"
    if 3528 <= four <= 3589 and 16 <= n <= 19:
        return "JCB"
    if two == 62 and 16 <= n <= 19:
        return "UnionPay"
    if (two == 50 or 56 <= two <= 69) and 12 <= n <= 19:
        return "Maestro"
    return None


def ssn_valid(d: str) -> bool:
    """SSA rules: area not 000, 666 or 900-999; group not 00; serial not 0000; no advertising numbers."""
    area, group, serial = d[:3], d[3:5], d[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return d not in _ADVERTISING_SSN and len(set(d)) > 1


def aba_valid(d: str) -> bool:
    if len(d) != 9 or not (0 <= int(d[:2]) <= 12 or 21 <= int(d[:2]) <= 32 or 61 <= int(d[:2]) <= 72
                           or d[:2] == "80"):
        return False
    w = (3, 7, 1) * 3
    return sum(int(c) * k for c, k in zip(d, w, strict=True)) % 10 == 0 and len(set(d)) > 1


def iban_valid(s: str) -> bool:
    s = s.replace(" ", "").upper()
    if _IBAN_LENGTH.get(s[:2]) != len(s) or not s[2:4].isdigit():
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def mask(value: str, keep: int = 4) -> str:
    """Every digit or letter masked but the last `keep`; separators kept ("***-**-6789")."""
    count = sum(c.isalnum() for c in value)
    out, seen = [], 0
    for c in value:
        if c.isalnum():
            seen += 1
            out.append(c if seen > count - keep else "*")
        else:
            out.append(c)
    return "".join(out)


_KEYWORD_KINDS: dict[str, tuple[str, ...]] = {}
for _kind, _words in KEYWORDS.items():
    for _word in _words:
        _KEYWORD_KINDS[_word] = (*_KEYWORD_KINDS.get(_word, ()), _kind)


@functools.cache
def _keyword_finder() -> WholeWords:
    return WholeWords(list(_KEYWORD_KINDS))


class Pii:
    name: ClassVar[str] = "pii"
    kinds: ClassVar[frozenset[str]] = frozenset({"pii.*", "unscanned.text_limits"})

    def __init__(self, settings: Settings, options: Mapping[str, Any]) -> None:
        opts = options_with_defaults(self.name, options, DEFAULTS)
        self.settings = settings
        self.window = opts["window"]
        # hidden HTML text and footers are still sent: a value hidden there is still disclosed
        self.zones = ("new", "forwarded", "metadata", "hidden", "disclaimer") + (("quoted",) if opts["count_quoted"]
                                                                                 else ())
        self.rules: dict[str, tuple[int, int, bool]] = {}
        for t in LABELS:
            override = dict(opts["types"].get(t, {}))
            unknown = set(override) - {"min_confidence", "min_count", "enabled"}
            if unknown or set(opts["types"]) - set(LABELS):
                raise OptionError(f"detector 'pii': unknown type or key in types "
                                  f"({', '.join(sorted(unknown | (set(opts['types']) - set(LABELS))))})")
            level = override.get("min_confidence", opts["min_confidence"])
            if level not in LEVELS:
                raise OptionError(f"detector 'pii': min_confidence must be one of {', '.join(LEVELS)}")
            self.rules[t] = (LEVELS[level], int(override.get("min_count", opts["min_count"])),
                             bool(override.get("enabled", True)))
        self.automaton = ahocorasick.Automaton()       # for text that is not ASCII (_keywords_unicode)
        for word, kinds in _KEYWORD_KINDS.items():
            self.automaton.add_word(word, (len(word), kinds))
        self.automaton.make_automaton()

    def prepare(self) -> None:
        _keyword_finder()

    async def check(self, mail: Mail) -> list[Finding]:
        text = await message_text(mail, self.settings)

        def scan_all() -> list[Finding]:
            matches: list[Match] = []
            for segment in text.segments:
                if segment.zone in self.zones and segment.text:
                    matches += self.scan(segment.text, segment.source)
            return self.findings(matches)

        return await off_loop_if_large(text, scan_all) + limits_finding(text, self.name)

    def findings(self, matches: list[Match]) -> list[Finding]:
        out = []
        for t, (level, count, enabled) in self.rules.items():
            hits = [m for m in matches if m.type == t and m.level >= level]
            distinct = list(dict.fromkeys(hits))
            if not enabled or len({m.masked for m in distinct}) < count or not distinct:
                continue
            best = max(m.level for m in distinct)
            keywords = [m.keyword for m in distinct if m.keyword]
            near = f" near {keywords[0]!r}" if keywords else ""
            sources = list(dict.fromkeys(m.source for m in distinct))
            n = len({m.masked for m in distinct})
            out.append(Finding(
                kind=f"pii.{t}", detector=self.name, part=None if sources[0] in ("body", "subject") else sources[0],
                score=float(n),
                detail=f"{LABELS[t]}{near} in {', '.join(sources[:3])} ({n} match{'es' if n > 1 else ''}, "
                       f"{next(k for k, v in LEVELS.items() if v == best)} confidence)",
                evidence=tuple(dict.fromkeys(f"{LABELS[t]} {m.masked}" for m in distinct))[:5]))
        return out

    # --- one segment ------------------------------------------------------------------------------

    def scan(self, text: str, source: str) -> list[Match]:
        """Every match of every type in one piece of text, with its confidence."""
        keywords = self._keywords(text)
        found: list[Match] = []
        accounts: list[tuple[int, str]] = []
        routings: list[tuple[int, str]] = []

        def near(kind: str, pos: int, window: int = self.window) -> str:
            return _near(keywords.get(kind), pos, window)

        for kind in ("drivers_license", "passport"):      # ids of any shape ("S530-4612-8877") after their keyword
            for pos, word in keywords.get(kind, ()):
                for m in _ID_TOKEN.finditer(text, pos + len(word), pos + len(word) + 60):
                    value = m.group(0)
                    if sum(c.isdigit() for c in value) >= 5 and (kind != "passport" or 6 <= len(value) <= 12):
                        level = 2 if m.start() - pos <= 40 else 1
                        found.append(Match(kind, level, mask(value, 3), word, source,
                                           ((m.start(), m.end(), mask(value, 3)),)))
                        break
        candidates = _candidates(text, keywords)
        for pos, group, value in candidates:
            if group == "card":
                digits = re.sub(r"\D", "", value)
                if luhn(digits) and card_issuer(digits) and len(set(digits)) > 2:
                    kw = near("payment_card", pos)
                    found.append(Match("payment_card", 2 if kw else 1, mask(value), kw, source,
                                       _at(pos, value, mask(value))))
                    continue
                group = "number" if len(digits) <= 17 and value.isdigit() else ""
            if group == "ssn":
                digits = re.sub(r"\D", "", value)
                if ssn_valid(digits):
                    kw = near("ssn", pos)
                    # dotted 3-2-4 is also how part, permit and file numbers are written: an SSN with its keyword
                    level = (2 if kw else 0) if _separator(value) == "." else (2 if kw else 1)
                    found.append(Match("ssn", level, "***-**-" + digits[5:], kw, source,
                                       _at(pos, value, "***-**-" + digits[5:])))
            elif group == "iban":
                if iban_valid(value):
                    kw = near("iban", pos)
                    found.append(Match("iban", 2 if kw else 1, mask(value.upper()), kw, source,
                                       _at(pos, value, mask(value.upper()))))
            elif group == "date":
                kw = near("date_of_birth", pos, 40)
                if kw:
                    window = text[max(0, pos - 150):pos + 150]
                    named = near("name", pos, 150) or (_NAME.search(window) and "a name")
                    found.append(Match("date_of_birth", 1 if named else 0, _mask_date(value), kw, source,
                                       _at(pos, value, _mask_date(value))))
            elif group == "number":
                found += self._number(value, pos, source, near, accounts, routings)
        for pos, value in routings:
            account = next(((p, v) for p, v in accounts if abs(p - pos) <= 150 and v != value), None)
            if account:
                found.append(Match("bank_account", 2, f"routing {mask(value)}, account {mask(account[1])}",
                                   "routing", source,
                                   _at(pos, value, mask(value)) + _at(account[0], account[1], mask(account[1]))))
        return found

    def _keywords(self, text: str) -> dict[str, list[tuple[int, str]]]:
        """Keyword kind -> [(position, keyword)], whole words only, from one pass."""
        lowered = text.lower()
        if not lowered.isascii():
            if len(lowered) != len(text):      # a few non-ASCII letters change length when lowered
                lowered = text.translate(_ASCII_LOWER)
            return self._keywords_unicode(lowered)
        keywords: dict[str, list[tuple[int, str]]] = {}
        for start, _, word in _keyword_finder().find(lowered):      # Hyperscan: whole words come back
            for kind in _KEYWORD_KINDS[word]:
                keywords.setdefault(kind, []).append((start, word))
        return keywords

    def _keywords_unicode(self, lowered: str) -> dict[str, list[tuple[int, str]]]:
        """The same for any text: every occurrence from the automaton, whole words kept (str.isalnum)."""
        keywords: dict[str, list[tuple[int, str]]] = {}
        n = len(lowered)
        for end, (length, kinds) in self.automaton.iter(lowered):
            start = end - length + 1
            if (start and lowered[start - 1].isalnum()) or (end + 1 < n and lowered[end + 1].isalnum()):
                continue
            for kind in kinds:
                keywords.setdefault(kind, []).append((start, lowered[start:end + 1]))
        return keywords

    def _number(self, value: str, pos: int, source: str, near, accounts: list, routings: list) -> list[Match]:
        out: list[Match] = []
        digits = value.isdigit()
        if digits and len(value) == 9 and ssn_valid(value) and (kw := near("ssn", pos, 80)):
            out.append(Match("ssn", 1, "***-**-" + value[5:], kw, source, _at(pos, value, "***-**-" + value[5:])))
        if digits and len(value) == 9 and aba_valid(value) and near("bank_routing", pos, 80):
            routings.append((pos, value))
        if digits and 6 <= len(value) <= 17 and near("bank_account", pos, 60):
            accounts.append((pos, value))
        if sum(c.isdigit() for c in value) >= 5:
            for kind in ("drivers_license", "passport"):
                if kind == "passport" and not 6 <= len(value) <= 10:
                    continue
                if kw := near(kind, pos, 80):
                    level = 2 if near(kind, pos, 40) else 1
                    out.append(Match(kind, level, mask(value, 3), kw, source, _at(pos, value, mask(value, 3))))
        return out


def _candidates(text: str, keywords: dict[str, list[tuple[int, str]]]) -> list[tuple[int, str, str]]:
    """[(position, shape, value)]: digit runs from one pass, IBANs, month-name dates after a birth keyword."""
    if text.isascii() and not any(d in text for d in "0123456789"):
        return []        # every shape holds a digit; substring tests take microseconds, each regex pass 0.1 ms
    out: list[tuple[int, str, str]] = []
    at = 0
    while m := _DIGITS.search(text, at):
        pos, at = m.start(), m.end()
        prefix = 0
        while prefix < 2 and pos - prefix > 0 and text[pos - prefix - 1].isalpha():
            prefix += 1
        if pos - prefix > 0 and (text[pos - prefix - 1].isalnum() or text[pos - prefix - 1] in "_-"):
            continue
        group = next(g for g in ("card", "ssn", "date", "number") if m.group(g) is not None)
        if prefix and group != "number":
            continue
        if group in ("card", "ssn"):
            if pos > 1 and text[pos - 1] in _LONGER and text[pos - 2].isdigit():
                continue        # the end of a longer dotted or dashed number ("1.512.44.3321", a version)
            if _separator(m.group(0)) is None:
                # groups separated in mixed ways, or lines of their own (a column of figures): not one
                # number; what follows its first group is read again as usual
                at = pos + len(_FIRST_GROUP.match(m.group(0)).group(0))
                continue
        out.append((pos - prefix, group, text[pos - prefix:m.end()]))
    iban = _IBAN_ANY_CASE if "iban" in keywords else _IBAN
    for m in iban.finditer(text):
        if m.start() == 0 or not (text[m.start() - 1].isalnum() or text[m.start() - 1] in "_-"):
            out.append((m.start(), "iban", m.group(0)))
    for pos, _ in keywords.get("date_of_birth", ()):
        m = _MONTH_DATE.search(text, pos, pos + 60)
        if m:
            out.append((m.start(), "date", m.group(0)))
    return out


def _separator(value: str) -> str | None:
    """The separator between a number's groups ("" for none; a line break alone counts as a space); None
    when the groups are separated in mixed ways ("512.44-3321") or stand on lines of their own."""
    gaps = _NOT_DIGITS.findall(value)
    if not gaps:
        return ""
    kinds = {g.rstrip("\n") for g in gaps}
    alone = sum(g == "\n" for g in gaps)
    kinds.discard("")
    if len(kinds) > 1 or (alone and (alone > 1 or kinds - {" "})):
        return None
    return kinds.pop() if kinds else " "


def _near(positions: list[tuple[int, str]] | None, pos: int, window: int) -> str:
    """The keyword nearest before `pos` within `window` characters (or just after it), else ""."""
    if not positions:
        return ""
    i = bisect.bisect_left(positions, (pos, ""))
    before = positions[i - 1] if i else None
    after = positions[i] if i < len(positions) else None
    if before and pos - before[0] <= window:
        return before[1]
    if after and after[0] - pos <= window // 2:
        return after[1]
    return ""


def _at(pos: int, value: str, masked: str) -> tuple[tuple[int, int, str]]:
    return ((pos, pos + len(value), masked),)


@functools.cache
def _masker() -> Pii:
    return Pii(Settings(), {})


def redactions(text: str) -> list[tuple[int, int, str]]:
    """(start, end, mask) of every value this detector recognises in `text`, at any confidence: what
    evidence must not show (gateway/evidence.py)."""
    if text.isascii() and not any(d in text for d in "0123456789"):
        return []        # every value holds a digit (most details and excerpts: no keyword pass either)
    return [span for match in _masker().scan(text, "") for span in match.spans]


def _mask_date(value: str) -> str:
    year = re.search(r"(?:19|20)\d{2}|\d{2}$", value)
    return "**/**/" + (year.group(0) if year else "**")
