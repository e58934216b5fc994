"""Weighted, site-editable lexicons compiled into ONE regular expression each.

A lexicon file in policies/lexicons/ has one entry per line:

    weight<TAB>label<TAB>pattern        # comment

`pattern` is a case-insensitive regular expression in lower case; a plain space in it matches any run
of blanks or punctuation (" ?" an optional one), and word boundaries are added at both ends. All the
entries become one expression, regrouped as a trie of first characters (see `Lexicon`), so the text is
scanned once whatever the number of entries. The score of a text is the sum of the weights of the
distinct entries that fired (each entry counts once, so repeating a word does not raise the score).
Several detectors' lexicons are scanned together in one pass by gateway.matching.contentscan.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway import evidence
from gateway.matching.normaliser import Normalised

_LINE = re.compile(r"^\s*(-?[0-9.]+)\t+([a-z0-9_]+)\t+(.+?)\s*$")
_GAP = r"[\W_]+"
_GAP_OPTIONAL = r"[\W_]*"


class LexiconError(ValueError):
    """A lexicon or model file that cannot be used; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class Entry:
    weight: float
    label: str          # the feature family: "offer", "price", "threat", ...
    pattern: str


@dataclass(frozen=True, slots=True)
class Hit:
    entry: Entry
    text: str           # the matched text as it stood in the message
    start: int
    quoted: bool = False    # on a "> " quoted line (a reply quoting someone else)
    length: int = -1        # its length in the normalised text scanned, when `text` is the original

    @property
    def size(self) -> int:
        """The hit's length in the text its `start` points into."""
        return len(self.text) if self.length < 0 else self.length


class Lexicon:
    """Entries compiled into ONE regular expression; `scan` walks the text once.

    For speed, the entries' leading alternatives are distributed and the variants grouped by their
    first character, so the expression is a one-level trie: at each position the engine compares one
    character per group instead of trying every entry (Python's `re` fast-checks a branch's literal
    first character). The text is scanned in lower case without IGNORECASE for the same reason. Which
    entry fired is found afterwards, for the few hits only, by matching the entries one by one there.
    """

    def __init__(self, entries: Iterable[Entry], *, source: str = "<lexicon>", boundaries: bool = True) -> None:
        self.entries = tuple(entries)
        self.source = source
        self.singles: list[re.Pattern[str]] = []
        head, tail = (r"(?<![\w$])", r"(?![\w])") if boundaries else ("", "")
        bodies = []
        for entry in self.entries:
            body = gaps(entry.pattern)
            try:
                self.singles.append(re.compile(f"{head}(?:{body}){tail}", re.IGNORECASE))
            except re.error as e:
                raise LexiconError(f"{source}: entry {entry.pattern!r}: {e}") from None
            bodies.append(f"(?:{body})")
        self.bodies = tuple(bodies)
        self.boundaries = boundaries
        self.atoms = [re.compile("|".join(a or "[\\s\\S]" for a, _ in split_first(b))) for b in bodies]
        self._by_char: dict[str, list[int]] = {}
        self.regex, self.regex_i = compile_trie(bodies, boundaries) if bodies else (None, None)

    @classmethod
    def load(cls, path: Path | str, *, boundaries: bool = True) -> Lexicon:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise LexiconError(f"{path}: cannot read lexicon: {e.strerror}") from None
        return cls(parse_entries(text, str(path)), source=str(path), boundaries=boundaries)

    def scan(self, text: str, limit: int = 200) -> list[Hit]:
        """Every hit in reading order (at most `limit`)."""
        hits: list[Hit] = []
        if self.regex is None:
            return hits
        lower = text.lower()
        finder = self.regex.finditer(lower) if len(lower) == len(text) else self.regex_i.finditer(text)
        for match in finder:
            start, end = match.span()
            entry = self._which(text, start, end)
            if entry is not None:
                hits.append(Hit(entry, text[start:end], start))
                if len(hits) >= limit:
                    break
        return hits

    def _which(self, text: str, start: int, end: int) -> Entry | None:
        return self.identify(text, start, end)[0]

    def identify(self, text: str, start: int, end: int) -> tuple[Entry | None, int]:
        """The entry that matches at start (preferring one that ends at end), and where it ends."""
        ch = text[start].lower()
        candidates = self._by_char.get(ch)
        if candidates is None:
            candidates = self._by_char[ch] = [i for i, atom in enumerate(self.atoms) if atom.fullmatch(ch)]
        fallback: tuple[Entry | None, int] = (None, start)
        for i in candidates:
            m = self.singles[i].match(text, start)
            if m:
                if m.end() == end:
                    return self.entries[i], end
                if fallback[0] is None:
                    fallback = (self.entries[i], m.end())
        return fallback


# What an entry's first atom must not match for the prefilter to put a word boundary in front: ASCII
# punctuation and blanks, and non-ASCII letters and digits (Hyperscan's \b is ASCII-only there).
_NOT_ASCII_WORD = " !\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~\t\n\u00a0\u2013\u2026\u00e9\u00df\u0436\u0639\u0663"


def gate(body: str) -> str:
    """The prefilter's form of an entry (gateway.matching.prefilter): a word boundary in front when every variant
    starts with an ASCII word character, so that "hell" is not a candidate in every "shell"."""
    atoms = [atom for atom, _ in split_first(body)]
    if all(atom and not any(re.fullmatch(atom, c) for c in _NOT_ASCII_WORD) for atom in atoms):
        return rf"\b{body}"
    return body


def compile_trie(bodies: Iterable[str], boundaries: bool = True) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """One expression for all the bodies: for lower-cased text, and an IGNORECASE twin."""
    head, tail = (r"(?<![\w$])", r"(?![\w])") if boundaries else ("", "")
    alternation = f"{head}(?:{trie(list(bodies), TRIE_DEPTH)}){tail}"
    return re.compile(alternation), re.compile(alternation, re.IGNORECASE)




_ATOM = re.compile(r"\\[dDwWsS$.\\()\[\]{}|?*+^-]|\\.|\[(?:\\.|[^\]\\])+\]|[a-z0-9 '@#$%&!,:;<>=/_~\"-]")


TRIE_DEPTH = 3


def trie(variants: list[str], depth: int) -> str:
    """Alternatives regrouped by their first atoms, `depth` levels deep: 'f(?:orward|ree)|s(?:end)'."""
    if depth == 0 or len(variants) == 1:
        return "|".join(dict.fromkeys(variants))
    groups: dict[str, list[str]] = {}
    for variant in variants:
        for atom, rest in split_first(variant):
            groups.setdefault(atom, []).append(rest)
    branches, loose = [], groups.pop("", [])
    for atom, rests in groups.items():
        branches.append(f"{atom}(?:{trie(rests, depth - 1)})" if any(rests) else atom)
    # Unsplittable variants keep their place after the grouped ones; an empty one (the end of a
    # shorter entry) goes last so that longer matches are preferred.
    branches += [v for v in dict.fromkeys(loose) if v]
    if "" in loose:
        branches.append("")
    return "|".join(branches)


def split_first(pattern: str, depth: int = 0) -> list[tuple[str, str]]:
    """pattern -> [(first atom, the rest)], distributing a leading group's alternatives, so that every
    variant starts with one character or class. Falls back to ('', pattern) when it cannot."""
    if depth > 4 or not pattern:
        return [("", pattern)]
    if pattern.startswith("(?:"):
        close = _closing(pattern, 0)
        if close < 0:
            return [("", pattern)]
        inner, after = pattern[3:close], pattern[close + 1:]
        optional = after.startswith("?") and not after.startswith("??")
        if after[:1] in ("*", "+", "{") or after.startswith("??"):
            return [("", pattern)]
        if optional:
            after = after[1:]
        variants = [alt + after for alt in _top_level_split(inner)]
        if optional:
            variants.append(after)
        if len(variants) > 40:
            return [("", pattern)]
        out = []
        for v in variants:
            out += split_first(v, depth + 1)
        return out
    m = _ATOM.match(pattern)
    if not m:
        return [("", pattern)]
    atom, rest = m.group(0), pattern[m.end():]
    if rest[:1] == "+":
        return [(atom, f"{atom}*{rest[1:]}")]
    if rest[:1] in ("?", "*", "{"):
        return [("", pattern)]
    return [(atom, rest)]


def _syntax(pattern: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """(index, character, group depth after it) for each character of a regular expression outside
    escapes and character classes: where its groups open and close, and where its top-level "|" are."""
    depth, i, in_class = 0, start, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        else:
            depth += (c == "(") - (c == ")")
            yield i, c, depth
        i += 1


def _closing(pattern: str, open_at: int) -> int:
    """The index of the ")" that closes the group opened at `open_at`, or -1."""
    return next((i for i, c, depth in _syntax(pattern, open_at) if c == ")" and depth == 0), -1)


def _top_level_split(inner: str) -> list[str]:
    """The alternatives of `inner` at its top level ("a|(b|c)" -> "a", "(b|c)")."""
    cuts = [i for i, c, depth in _syntax(inner) if c == "|" and depth == 0]
    return [inner[a + 1:b] for a, b in zip([-1, *cuts], [*cuts, len(inner)], strict=True)]


def gaps(pattern: str) -> str:
    """Each plain space outside a character class -> a run of blanks or punctuation; an optional
    space (" ?" or " *") -> an optional run."""
    out, in_class, escaped = [], False, False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if escaped:
            out.append(c)
            escaped = False
        elif c == "\\":
            out.append(c)
            escaped = True
        elif c == "[":
            in_class = True
            out.append(c)
        elif c == "]":
            in_class = False
            out.append(c)
        elif c == " " and not in_class:
            if pattern[i + 1:i + 2] in ("?", "*"):
                out.append(_GAP_OPTIONAL)
                i += 1
            else:
                out.append(_GAP)
        else:
            out.append(c)
        i += 1
    return "".join(out)


def parse_entries(text: str, source: str) -> list[Entry]:
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.split("  #", 1)[0].rstrip()
        if not stripped.strip() or stripped.lstrip().startswith("#"):
            continue
        match = _LINE.match(stripped)
        if not match:
            raise LexiconError(f"{source}:{number}: expected 'weight<TAB>label<TAB>pattern'")
        try:
            weight = float(match.group(1))
        except ValueError:
            raise LexiconError(f"{source}:{number}: bad weight {match.group(1)!r}") from None
        entries.append(Entry(weight, match.group(2), match.group(3)))
    return entries


def distinct(hits: Iterable[Hit]) -> list[Hit]:
    """The first hit of each entry, in reading order."""
    seen: set[int] = set()
    out = []
    for hit in hits:
        if id(hit.entry) not in seen:
            seen.add(id(hit.entry))
            out.append(hit)
    return out


def score(hits: Iterable[Hit]) -> float:
    return sum(h.entry.weight for h in distinct(hits))


def excerpt(text: str, start: int, length: int, width: int = 30) -> str:
    """A short one-line masked excerpt around a hit, for evidence: at most `width` characters of
    context on each side and evidence.LIMIT in all. A hit in normalised text is quoted from the text
    as written (where the recognisers that mask evidence read what their detectors read)."""
    if isinstance(text, Normalised):
        start, end = text.span(start, start + length)
        text, length = text.original, end - start
    return evidence.excerpt(text, start, start + length, min(evidence.LIMIT, length + 2 * width + 2))
