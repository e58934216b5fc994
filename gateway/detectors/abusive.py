"""abusive: profanity, obscenity, harassment, threats, hate and discriminatory remarks.

Policy, Provisions for Retrieving and Transmitting Information: "Internet users will keep their
language within proper decorum. Profanity, obscenities, hate mail, harassment, discriminatory remarks,
and other inappropriate language are prohibited."

The lexicon (policies/lexicons/abusive.txt) is compiled into one regular expression that tolerates
obfuscation: repeated letters, masked letters (f*ck), l33t (b1tch, a$$) and spaced or dotted letters
(f u c k, s.h.i.t). Words only match whole, so "Scunthorpe", "Essex" and "assassin" stay clean.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from gateway.config import Settings
from gateway.detectors import options_with_defaults
from gateway.detectors.lexicon import Entry, Hit, Lexicon, distinct, excerpt, parse_entries
from gateway.model import Finding, Mail
from gateway.text import message_text

DEFAULTS = {"threshold": 1.0, "lexicon": "lexicons/abusive.txt", "max_chars": 200_000, "short_words": 40}
WORD_LABELS = frozenset({"profanity", "obscenity", "slur", "insult"})
KIND_OF = {"profanity": "abusive.profanity", "obscenity": "abusive.obscenity", "slur": "abusive.hate",
           "hate": "abusive.hate", "insult": "abusive.harassment", "harassment": "abusive.harassment",
           "threat": "abusive.threat", "innocent": ""}
# The kind reported is the gravest family present.
GRAVITY = ("abusive.threat", "abusive.hate", "abusive.harassment", "abusive.obscenity", "abusive.profanity")

_WORD = re.compile(r"^(?:\[([a-z,]+)\])?([a-z]+)(?:\{([a-z,]+)\})?$")
_LEET = str.maketrans({"4": "a", "@": "a", "3": "e", "1": "i", "!": "i", "|": "i", "0": "o",
                       "5": "s", "$": "s", "7": "t", "+": "t"})
_WORDS = re.compile(r"\w+")
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789@$!|+*#")
_PAIR = re.compile(r"[a-z][0-9@$!|+*#]|[0-9@$!|+*#][a-z]")
_TOKEN_END = re.compile(r"[a-z0-9@$!|+*#]*")
_SPACED_HINT = re.compile(r"[a-z@$0-9][ .\-_]{1,2}[a-z@$0-9*][ .\-_]{1,2}[a-z@$0-9*]\b")
_SPACED = re.compile(r"(?<![\w@$*])[a-z@$0-9](?P<sep>[ .\-_]{1,2})[a-z@$0-9*](?:(?P=sep)[a-z@$0-9*]){1,30}(?![\w*])")


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


def normalise(text: str) -> str:
    """Lower case, spaced letters joined, l33t read as letters (only inside words that mix letters and
    digits or symbols). Each step first looks for its trigger with a cheap expression."""
    text = text.lower()
    if _SPACED_HINT.search(text):
        text = _SPACED.sub(_join, text)
    out, last = [], 0
    for match in _PAIR.finditer(text):
        if match.start() < last:
            continue
        start = match.start()
        while start > 0 and text[start - 1] in _TOKEN_CHARS:
            start -= 1
        end = _TOKEN_END.match(text, match.end()).end()
        out += [text[last:start], _leet(text[start:end])]
        last = end
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def _leet(token: str) -> str:
    if len(token) > 24 or not any(c.isalpha() for c in token):
        return token
    core = token.rstrip("!|")
    return core.translate(_LEET) + token[len(core):]


def _join(match: re.Match[str]) -> str:
    """'f u c k' -> 'fuck'; a leading 'a' or 'i' stays a word of its own ('a f u c k' -> 'a fuck')."""
    run = match.group(0)
    letters = re.sub(r"[ .\-_]", "", run)
    if len(letters) > 3 and letters[0] in "ai" and match.group("sep").strip() == "":
        return letters[0] + " " + letters[1:]
    return letters


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

    def classify(self, text: str) -> tuple[float, list[Hit], str]:
        """(score, distinct hits, normalised text) for one text: phrases count fully, words by density."""
        norm = normalise(text[: self.max_chars])
        hits = [h for h in distinct(self.lexicon.scan(norm)) if h.entry.label != "innocent"]
        if not hits:
            return 0.0, hits, norm
        words = sum(h.entry.weight for h in hits if h.entry.label in WORD_LABELS)
        phrases = sum(h.entry.weight for h in hits if h.entry.label not in WORD_LABELS)
        length = sum(1 for _ in _WORDS.finditer(norm))
        if length > self.short_words:
            words *= (self.short_words / length) ** 0.5
        return words + phrases, hits, norm

    async def check(self, mail: Mail) -> list[Finding]:
        text = (await message_text(mail)).joined()
        score, hits, norm = await asyncio.to_thread(self.classify, text)
        if score < self.threshold:
            return []
        kinds = {KIND_OF[h.entry.label] for h in hits}
        kind = next(k for k in GRAVITY if k in kinds)
        families = sorted({h.entry.label for h in hits})
        words = ", ".join(f'"{h.text}"' for h in hits[:5])
        evidence = tuple(f"{h.entry.label}: {excerpt(norm, h.start, len(h.text))}" for h in hits[:5])
        return [Finding(kind=kind, detector=self.name, score=round(score, 2), evidence=evidence,
                        detail=f"Abusive language ({', '.join(families)}): {words}; "
                               f"score {score:.1f} >= {self.threshold:g}")]
