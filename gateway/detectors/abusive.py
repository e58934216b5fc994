"""abusive: profanity, obscenity, harassment, threats, hate and discriminatory remarks.

Policy, Provisions for Publishing and Posting: "Internet users will keep their
language within proper decorum. Profanity, obscenities, hate mail, harassment, discriminatory remarks,
and other inappropriate language are prohibited."

The lexicon (policies/lexicons/abusive.txt) is compiled into a regular expression that tolerates
obfuscation: repeated letters, masked letters (f*ck); the shared normalisation (gateway.matching.normaliser)
reads l33t (b1tch, a$$) and joins spaced or dotted letters (f u c k, s.h.i.t). Words only match whole,
so "Scunthorpe", "Essex" and "assassin" stay clean. It is scanned together with the other content
lexicons in one pass (the pipeline's contentscan.ScanGroup).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from gateway.config import Settings
from gateway.detectors.base import options_with_defaults
from gateway.matching.contentscan import group_for, own_group
from gateway.matching.weighted import Entry, Hit, Lexicon, distinct, excerpt, parse_entries
from gateway.model import Finding, Mail

DEFAULTS = {"threshold": 1.0, "lexicon": "lexicons/abusive.txt", "max_chars": 200_000, "short_words": 40}
WORD_LABELS = frozenset({"profanity", "obscenity", "slur", "insult"})
KIND_OF = {"profanity": "abusive.profanity", "obscenity": "abusive.obscenity", "slur": "abusive.hate",
           "hate": "abusive.hate", "insult": "abusive.harassment", "harassment": "abusive.harassment",
           "threat": "abusive.threat", "innocent": ""}
# The kind reported is the gravest family present.
GRAVITY = ("abusive.threat", "abusive.hate", "abusive.harassment", "abusive.obscenity", "abusive.profanity")

# A phrase quoted as an example ("remarks such as \"...\"") is talked about, not said to anyone.
_EXAMPLE_CUE = re.compile(r"(?:for example|for instance|such as|e\.g\.|examples? (?:include|are|of)|remarks? like"
                          r"|comments? like|statements? like|saying|phrases? like)\b")
_QUOTES = "\"“”"
_WORD = re.compile(r"^(?:\[([a-z,]+)\])?([a-z]+)(?:\{([a-z,]+)\})?$")


def word_pattern(spec: str) -> str:
    """'[mother]fuck{s,ing}' -> a regex tolerant of repeated and masked letters."""
    match = _WORD.match(spec)
    if not match:
        raise ValueError(f"bad word {spec!r} (expected [prefix,...]stem{{suffix,...}})")
    prefixes, stem, suffixes = match.groups()

    def letters(word: str, first_plain: bool) -> str:
        out = []
        for i, c in enumerate(word):
            out.append(c if (i == 0 and first_plain) else f"(?:{c}+|[*#])")
        return "".join(out)

    pattern = letters(stem, True)
    if prefixes:
        pattern = f"(?:{'|'.join(prefixes.split(','))})?" + pattern
    if suffixes:
        pattern += f"(?:{'|'.join(sorted(suffixes.split(','), key=len, reverse=True))})?"
    return pattern


def compile_lexicon(path: Path) -> Lexicon:
    entries = []
    for entry in parse_entries(path.read_text(encoding="utf-8"), str(path)):
        if entry.label not in KIND_OF:
            raise ValueError(f"{path}: unknown label {entry.label!r} (known: {', '.join(KIND_OF)})")
        if entry.label in WORD_LABELS:
            entry = Entry(entry.weight, entry.label, word_pattern(entry.pattern))
        entries.append(entry)
    # Innocent contexts first: at the same position, the first branch of the alternation wins.
    entries.sort(key=lambda e: e.label != "innocent")
    return Lexicon(entries, source=str(path))


class Abusive:
    name: ClassVar[str] = "abusive"
    kinds: ClassVar[frozenset[str]] = frozenset(GRAVITY)

    def __init__(self, settings: Settings, options: Mapping[str, Any]) -> None:
        opts = options_with_defaults(self.name, options, DEFAULTS)
        self.threshold = opts["threshold"]
        self.max_chars = opts["max_chars"]
        self.short_words = max(1, opts["short_words"])
        self.lexicon = compile_lexicon(Path(settings.policy.dir) / opts["lexicon"])
        self.settings = settings
        self.shared_lexicon = self.lexicon       # the pipeline scans it with the other content lexicons
        self.own_lexicons = own_group(self.name, self.lexicon)

    def score(self, hits: list[Hit], norm: str) -> tuple[float, list[Hit]]:
        """Phrases count fully, words by density (see the lexicon's header)."""
        hits = [h for h in distinct(hits) if h.entry.label != "innocent"]
        if not hits:
            return 0.0, hits
        words = sum(h.entry.weight for h in hits if h.entry.label in WORD_LABELS)
        phrases = sum(h.entry.weight for h in hits if h.entry.label not in WORD_LABELS)
        length = len(norm.split())
        if length > self.short_words:
            words *= (self.short_words / length) ** 0.5
        return words + phrases, hits

    async def check(self, mail: Mail) -> list[Finding]:
        found, norm = await group_for(mail, self.name, self.own_lexicons).hits(mail, self.name, self.settings)
        found = [h for h in found if h.start < self.max_chars and not h.quoted]
        examples = [h for h in found if h.entry.label not in WORD_LABELS and _quoted_example(norm, h.start)]
        score, hits = self.score([h for h in found if h not in examples], norm)
        if score < self.threshold:
            return []
        kinds = {KIND_OF[h.entry.label] for h in hits}
        kind = next(k for k in GRAVITY if k in kinds)
        families = sorted({h.entry.label for h in hits})
        words = ", ".join(f'"{h.text}"' for h in hits[:5])
        evidence = tuple(f"{h.entry.label}: {excerpt(norm, h.start, h.size)}" for h in hits[:5])
        return [Finding(kind=kind, detector=self.name, score=round(score, 2), evidence=evidence,
                        detail=f"Abusive language ({', '.join(families)}): {words}; "
                               f"score {score:.1f} >= {self.threshold:g}"
                               + (f"; not counted (quoted as an example): {examples[0].text!r}" if examples else ""))]


def _quoted_example(text, start: int) -> bool:
    """The phrase is inside a quotation introduced, shortly before, as an example: 'remarks such as "..."'."""
    before = text[max(0, start - 300):start]
    if sum(before.count(q) for q in _QUOTES) % 2 == 0:     # no quotation open here
        return False
    opening = max(before.rfind(q) for q in _QUOTES)
    return _EXAMPLE_CUE.search(before[max(0, opening - 120):opening]) is not None
