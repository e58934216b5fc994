"""The one normalisation that every lexicon reads, with offsets back to the text as written.

Obfuscation that a reader does not notice is read back before matching:

- `fold`: zero-width characters and soft hyphens removed, Unicode NFKC (full-width, mathematical and
  circled letters become ASCII), and look-alike letters of other scripts (Unicode's confusables data,
  from the confusable-homoglyphs package) read as the ASCII letter or digit they imitate. A word is
  read that way only when it mixes them with ASCII letters ("СONFIDENTIAL" with a Cyrillic С), or when
  every letter of it is a look-alike and an ASCII word stands next to it; Russian or Greek text stays.
- `words`: `fold`, then s p a c e d and d.o.t.t.e.d letters joined and l33t read as letters, only
  inside words that mix letters with digits or symbols, so "$100", "room 101" and the digits that the
  pii and credentials patterns read are never remapped (those patterns do not read this text).
- `phrases`: `words`, then every run of punctuation and blanks one space (line breaks kept), for the
  phrase automaton of gateway/matching/phrases.py.

Each returns a `Normalised` string that knows the text it came from: `span` maps a match back, so
evidence quotes what the message says (and passes the masking of gateway/evidence.py there).
The case of the text is kept; a step that changes nothing returns the same offsets.
"""

from __future__ import annotations

import bisect
import functools
import re
import unicodedata
from collections.abc import Callable

from gateway.matching.prefilter import Prefilter

ZERO_WIDTH = "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\u034f\u180e"
ZERO_WIDTH_RE = re.compile(f"[{ZERO_WIDTH}]")


class Offsets:
    """Where the characters of a rewritten text came from: anchors (new offset, old offset) at every
    place the lengths stop running in step; between anchors offsets move together."""

    __slots__ = ("new", "old")

    def __init__(self) -> None:
        self.new: list[int] = []
        self.old: list[int] = []

    def __call__(self, i: int) -> int:
        k = bisect.bisect_right(self.new, i) - 1
        return i if k < 0 else self.old[k] + (i - self.new[k])


class Normalised(str):
    """Normalised text: `original` is the text it was made from, `span` maps offsets back to it."""

    original: str
    _steps: tuple[Callable[[int], int], ...]       # new offset -> old offset, one per step that moved them

    @classmethod
    def make(cls, text: str, original: str, steps: tuple[Callable[[int], int], ...]) -> Normalised:
        out = cls(text)
        out.original = original
        out._steps = steps
        return out

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The span of the original text that text[start:end] was read from."""
        a, b = start, end
        for step in reversed(self._steps):
            a, b = step(a), (max(step(b), step(b - 1) + 1) if b > a else step(a))
        return a, min(b, len(self.original))


def _rewrite(text: str, edits: list[tuple[int, int, str]]) -> tuple[str, Offsets | None]:
    """Apply (start, end, replacement) edits (sorted, not overlapping) and record the offsets."""
    if not edits:
        return text, None
    out: list[str] = []
    offsets = Offsets()
    last = pos = 0
    for a, b, r in edits:
        out.append(text[last:a])
        pos += a - last
        out.append(r)
        if len(r) != b - a:
            for k in range(len(r)):       # each new character points at one of the old ones
                offsets.new.append(pos + k)
                offsets.old.append(a + min(k, b - a - 1))
            offsets.new.append(pos + len(r))
            offsets.old.append(b)
        pos += len(r)
        last = b
    out.append(text[last:])
    return "".join(out), offsets


def _chain(text: str, source: str | Normalised, edits: list[tuple[int, int, str]]) -> Normalised:
    new, offsets = _rewrite(text, edits)
    original = source.original if isinstance(source, Normalised) else source
    steps = source._steps if isinstance(source, Normalised) else ()
    if offsets is not None:
        steps = (*steps, offsets)
    return Normalised.make(new, original, steps)


# --- fold: zero-width, NFKC, look-alike letters -----------------------------------------------------

@functools.cache
def confusables() -> dict[str, str]:
    """Non-ASCII character -> the ASCII letter or digit it imitates (Unicode's confusables data), case
    kept where the character has one ("С" -> "C", "І" -> "I"). About a third of a second, once per process."""
    from confusable_homoglyphs import utils

    data: dict[str, list[dict[str, str]]] = utils.load("confusables.json")
    targets: dict[str, set[str]] = {}
    for key, entries in data.items():
        for e in entries:
            other = e["c"].strip("\u200e")
            pair = (key, other) if not key.isascii() else (other, key)
            if len(pair[0]) == 1 and len(pair[1]) == 1 and not pair[0].isascii() \
                    and pair[1].isascii() and pair[1].isalnum():
                targets.setdefault(pair[0], set()).add(pair[1])
    table: dict[str, str] = {}
    for char, found in targets.items():
        if unicodedata.normalize("NFKC", char) != char:
            continue        # NFKC reads it first
        letters = sorted(c for c in found if c.isalpha())
        cased = char.lower() != char.upper()
        same_case = [c for c in letters if c.isupper() == char.isupper()] if cased else letters
        lower = char.lower()
        if not same_case and char != lower and len(lower) == 1 and lower in targets:
            # a capital whose data says a small letter ("І" -> "l"): its small form's letter, capitalised
            same_case = sorted(c.upper() for c in targets[lower] if c.isalpha())
        table[char] = (same_case or letters or sorted(found))[0]
    table["\u0130"] = "I"       # "İ": its lower case is two characters
    return table


_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_WORD = re.compile(r"[^\W_]+")


@functools.cache
def _nfkc(char: str) -> str:
    return unicodedata.normalize("NFKC", char)


# Where a look-alike may be: next to or inside a word of the other kind. Mostly non-Latin text is walked
# by its (few) ASCII words, mostly Latin text by its (few) non-ASCII words: `re` skips to them at C speed.
_ASCII_RUN = re.compile(r"[A-Za-z0-9]+")
_OTHER_RUN = re.compile(r"[^\x00-\x7f\W]+")


def _word_at(text: str, start: int, end: int) -> tuple[int, int]:
    while start > 0 and text[start - 1].isalnum():
        start -= 1
    while end < len(text) and text[end].isalnum():
        end += 1
    return start, end


def _words_near(text: str) -> list[tuple[int, int]]:
    """The non-ASCII words that touch ASCII letters or digits or stand next to an ASCII word."""
    mostly_other = 2 * len(text.encode("utf-8", "surrogatepass")) > 3 * len(text)     # over half not ASCII
    spans: dict[tuple[int, int], None] = {}
    for run in (_ASCII_RUN if mostly_other else _OTHER_RUN).finditer(text):
        start, end = _word_at(text, *run.span())
        near = [(start, end)]
        before = list(_WORD.finditer(text, max(0, start - 4), start))
        if before:
            near.append(_word_at(text, *before[-1].span()))
        after = _WORD.search(text, end, end + 4)
        if after:
            near.append(_word_at(text, *after.span()))
        for span in near:
            if not text[span[0]:span[1]].isascii():
                spans[span] = None
    return list(spans)


def fold(text: str | Normalised) -> Normalised:
    """Zero-width characters dropped, NFKC, look-alike letters read as ASCII (see the module's docstring)."""
    base = text
    if text.isascii():
        return _chain(text, base, [])
    edits: list[tuple[int, int, str]] = []
    if ZERO_WIDTH_RE.search(text) or not unicodedata.is_normalized("NFKC", text):
        for run in _NON_ASCII.finditer(text):
            if unicodedata.is_normalized("NFKC", run.group()) and not ZERO_WIDTH_RE.search(run.group()):
                continue
            for i in range(run.start(), run.end()):
                char = text[i]
                new = "" if char in ZERO_WIDTH else _nfkc(char)
                if new != char:
                    edits.append((i, i + 1, new))
    if edits:
        first = _chain(text, base, edits)
        text, base = str(first), first
    table = confusables()
    edits = []
    for start, end in _words_near(text):
        w = text[start:end]
        if not any(c in table for c in w):
            continue
        # no ASCII letter: read only when every letter is a look-alike and an ASCII word stands next to it
        if not any("a" <= c <= "z" or "A" <= c <= "Z" for c in w) and (
                not all(c in table or c.isascii() for c in w) or not _ascii_neighbour(text, start, end)):
            continue
        edits += [(start + k, start + k + 1, table[c]) for k, c in enumerate(w) if c in table]
    return _chain(text, base, edits)


def _ascii_neighbour(text: str, start: int, end: int) -> bool:
    before = _WORD.findall(text, max(0, start - 40), start)
    after = _WORD.search(text, end, end + 40)
    return any(w.isascii() and w.isalpha() for w in (before[-1:] + ([after.group()] if after else [])))


# --- words: spaced and dotted letters joined, l33t read ---------------------------------------------

LEET = str.maketrans({"4": "a", "@": "a", "3": "e", "1": "i", "!": "i", "|": "i", "0": "o",
                      "5": "s", "$": "s", "7": "t", "+": "t"})
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@$!|+*#")
# A digit or symbol next to a letter. Written to start with the (rare) digit or symbol so that `re` skips
# ahead to candidates instead of trying every letter: three times faster on prose.
_PAIR = re.compile(r"[0-9@$!|+*#](?:(?<=[a-zA-Z][0-9@$!|+*#])|(?=[a-zA-Z]))")
_TOKEN_END = re.compile(r"[a-zA-Z0-9@$!|+*#]*")
# Necessary for _SPACED: two single characters in a row, each after a separator ("f u c k" has " u c").
# Asked of Hyperscan (a superset, `_spaced_hint`): `re` tried it at every blank, 0.16 ms per 13 KB.
_SPACED_HINT = r"[ .\-_][a-z@$0-9*][ .\-_]{1,2}[a-z@$0-9*](?![\w*])"
_SPACED = re.compile(r"(?<![\w@$*])[a-zA-Z@$0-9](?P<sep>[ .\-_]{1,2})[a-zA-Z@$0-9*]"
                     r"(?:(?P=sep)[a-zA-Z@$0-9*]){1,30}(?![\w*])")
_SEPARATOR = re.compile(r"[ .\-_]+")
_SPACED_AT = re.compile(_SPACED_HINT, re.IGNORECASE)     # starts with a blank: `re` tries only those
_SPACED_REACH = 100     # a spaced run is at most 94 characters long


def _spaced(text: str) -> list[re.Match[str]]:
    """What `_SPACED.finditer(text)` finds, looked for only near the places where its hint matches (every
    run holds one): the full expression would be tried at every letter of the text."""
    found: list[re.Match[str]] = []
    reach = 0
    for hint in _SPACED_AT.finditer(text):
        if hint.end() <= reach:
            continue
        lo, hi = max(reach, hint.start() - _SPACED_REACH), min(len(text), hint.end() + _SPACED_REACH)
        for match in _SPACED.finditer(text, lo, hi):
            if match.end() > hi - 4 and hi < len(text):      # perhaps cut by the window: read it whole
                match = _SPACED.match(text, match.start())
                if match is None:
                    continue
            if match.start() >= reach:
                found.append(match)
                reach = match.end()
        reach = max(reach, lo)
    return found


@functools.cache
def _spaced_hint() -> Prefilter:
    return Prefilter([_SPACED_HINT])       # caseless


def words(text: str | Normalised) -> Normalised:
    """`fold`, then spaced or dotted letters joined and l33t read, only inside words that mix letters
    and digits or symbols. Each step first looks for its trigger with a cheap expression."""
    folded = fold(text)
    text = str(folded)
    edits: list[tuple[int, int, str]] = []
    if _spaced_hint().candidates(text):
        for match in _spaced(text):
            seps = list(_SEPARATOR.finditer(match.group(0)))
            keep_first = (len(match.group(0)) - sum(len(s.group()) for s in seps) > 3
                          and match.group(0)[0] in "aiAI" and match.group("sep").strip() == "")
            for k, sep in enumerate(seps):    # 'a f u c k' -> 'a fuck': a leading 'a' or 'i' stays a word
                if not (k == 0 and keep_first):
                    edits.append((match.start() + sep.start(), match.start() + sep.end(), ""))
    if edits:
        folded = _chain(text, folded, edits)
        text = str(folded)
    edits = []
    last = 0
    for match in _PAIR.finditer(text):
        if match.start() < last:
            continue
        start = match.start()
        while start > 0 and text[start - 1] in _TOKEN_CHARS:
            start -= 1
        end = _TOKEN_END.match(text, match.end()).end()
        token = text[start:end]
        read = _leet(token)
        if read != token:
            edits.append((start, end, read))
        last = end
    return _chain(text, folded, edits) if edits else folded


def _leet(token: str) -> str:
    if len(token) > 24 or not any(c.isalpha() for c in token):
        return token
    core = token.rstrip("!|")
    read = core.translate(LEET)
    letters = [c for c in core if c.isalpha()]
    if letters and all(c.isupper() for c in letters):      # "C0NF1D3NT1AL" -> "CONFIDENTIAL"
        read = read.upper()
    return read + token[len(core):]


def for_lexicons(text: str | Normalised) -> Normalised:
    """What the regular-expression lexicons (gateway/matching/weighted.py) read: `words`, in lower case."""
    return lower(words(text))


def lower(text: Normalised) -> Normalised:
    """Lower case with the same offsets (a character whose lower case is longer keeps its first letter)."""
    low = text.lower()
    if len(low) != len(text):
        low = "".join(c.lower()[:1] for c in text)
    return Normalised.make(low, text.original, text._steps)


# --- phrases: punctuation and blank runs as one space ---------------------------------------------

# Punctuation becomes blanks through a byte translation table (ASCII) and a few replacements (typographic
# marks): several times faster than a regular-expression substitution over the text. "&" is kept as a word
# of its own (a phrase with "and" also matches "&").
_ASCII_PUNCTUATION = "!\"#$%'()*+,-./:;<=>?@[\\]^_`{|}~\t\r\x0b\x0c"
_BYTE_TABLE = bytes.maketrans(_ASCII_PUNCTUATION.encode(), b" " * len(_ASCII_PUNCTUATION))
_UNICODE_PUNCTUATION = "\u00a0–—‘’“”•·…«»¡¿"
_SEP = f"[\\s{re.escape(_ASCII_PUNCTUATION + _UNICODE_PUNCTUATION)}]"
_NOT_SEP = f"[^\\s{re.escape(_ASCII_PUNCTUATION + _UNICODE_PUNCTUATION)}]"
_SOURCE_WORD = re.compile(f"{_NOT_SEP}+")


def phrases(text: str | Normalised) -> Normalised:
    """`words`, then each run of punctuation and blanks one space, or one line break if it holds one
    (blank lines dropped), none at the ends; the case kept. Its offsets are worked out when asked for
    (evidence of a hit), by pairing the words of both texts."""
    read = words(text)
    source = str(read)
    plain = _blanks(source)
    if plain == source:
        return read
    return Normalised.make(plain, read.original, (*read._steps, _Paired(plain, source)))


def _blanks(text: str) -> str:
    if not text.isascii():
        for mark in _UNICODE_PUNCTUATION:
            if mark in text:
                text = text.replace(mark, " ")
    text = text.encode("utf-8", "surrogatepass").translate(_BYTE_TABLE).decode("utf-8", "surrogatepass")
    if text.isascii() and not any(c in text for c in "\x1c\x1d\x1e\x1f"):
        # Only spaces and "\n" are blank here: fold them with substring replacements (memchr speed)
        # rather than splitting every line.
        while "  " in text:
            text = text.replace("  ", " ")
        text = text.replace(" \n", "\n").replace("\n ", "\n")
        while "\n\n" in text:
            text = text.replace("\n\n", "\n")
        return text.strip(" \n")
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


class _Paired:
    """Offsets between a text and its `_blanks` form, which has the same words with one blank between:
    the word an offset falls in is counted in one and found in the other by an expression that skips
    that many words (C speed; only a hit's evidence asks)."""

    def __init__(self, new: str, old: str) -> None:
        self.new, self.old = new, old
        self.words = [0]        # words skipped so far, and where the next one starts in `old`
        self.starts = [0]

    def __call__(self, i: int) -> int:
        new, old = self.new, self.old
        i = min(i, len(new))
        word = new.count(" ", 0, i) + new.count("\n", 0, i)
        within = i - (max(new.rfind(" ", 0, i), new.rfind("\n", 0, i)) + 1)
        k = bisect.bisect_right(self.words, word) - 1       # resume from the nearest word already found
        start = _skip(word - self.words[k]).match(old, self.starts[k]).end()
        self.words.insert(k + 1, word)
        self.starts.insert(k + 1, start)
        length = _SOURCE_WORD.match(old, start)
        return start + min(within, length.end() - start if length else 0)


@functools.lru_cache(maxsize=256)
def _skip(words: int) -> re.Pattern[str]:
    """Matches `words` words and the blanks and punctuation before the next one."""
    return re.compile(f"(?:{_SEP}*{_NOT_SEP}+){{{words}}}{_SEP}*")
