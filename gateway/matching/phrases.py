"""Phrase lexicons compiled into one Aho-Corasick automaton: every phrase found in one pass over the text.

Text and phrases are compared after the same normalisation (gateway.matching.normaliser.phrases: look-alike,
full-width, spaced, dotted and l33t letters read, every run of punctuation and blanks one space, "&" kept
as a word of its own, so a phrase with "and" also matches "&"), case folded.
So "Attorney/Client  Privileged", "attorney-client privileged" and "ATTORNEY CLIENT PRIVILEGED" are one
phrase. A phrase ending in "*" matches any word ending ("privilege*": privileged, privileges).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ahocorasick

from gateway.matching.normaliser import Normalised, lower, phrases


class LexiconError(ValueError):
    """A lexicon file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class Entry:
    phrase: str          # as written in the lexicon
    group: str           # the entry's class: "legal", "draft", ...
    weight: float
    upper: bool = False  # only when written in capitals in the text


@dataclass(frozen=True, slots=True)
class Hit:
    entry: Entry
    start: int           # offsets in the normalised text
    end: int


class Lexicon:
    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self.automaton = ahocorasick.Automaton()
        keys: dict[str, list[tuple[Entry, bool]]] = {}
        for entry in entries:
            prefix = entry.phrase.endswith("*")
            base = " ".join(phrases(entry.phrase.rstrip("*")).lower().split())
            if not base:
                continue
            variants = {base, base.replace(" and ", " & ")}
            for v in variants:
                keys.setdefault(v, []).append((entry, prefix))
        for key, values in keys.items():
            self.automaton.add_word(key, (len(key), tuple(values)))
        if keys:
            self.automaton.make_automaton()
        self.empty = not keys

    def find(self, text: str) -> tuple[Normalised, list[Hit]]:
        """(normalised text, hits): every whole-word occurrence of every phrase, in one pass. The
        normalised text maps the hits back to `text` (`Normalised.span`)."""
        cased = phrases(text)
        lowered = cased.lower()
        if len(lowered) != len(cased):
            cased = lower(cased)
            lowered = str(cased)
        lowered = lowered.replace("\n", " ")      # phrases match across line breaks
        if self.empty:
            return cased, []
        hits: list[Hit] = []
        n = len(lowered)
        for end, (length, values) in self.automaton.iter(lowered):
            start = end - length + 1
            if start > 0 and lowered[start - 1] != " ":
                continue
            whole = end + 1 >= n or lowered[end + 1] == " "
            for entry, prefix in values:
                if not (whole or prefix):
                    continue
                stop = end + 1
                if prefix:
                    while stop < n and lowered[stop] != " ":
                        stop += 1
                if entry.upper and not _is_upper(cased[start:stop]):
                    continue
                hits.append(Hit(entry, start, stop))
        return cased, hits

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)


def _is_upper(text: str) -> bool:
    return text.isupper()


def load(path: Path) -> Lexicon:
    """A lexicon file: [[markers]] tables with `class`, `weight`, optional `case = "upper"`, `phrases`."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise LexiconError(f"{path}: no such lexicon file") from None
    except tomllib.TOMLDecodeError as e:
        raise LexiconError(f"{path}: {e}") from None
    entries: list[Entry] = []
    for i, table in enumerate(data.get("markers", []), 1):
        where = f"{path}: [[markers]] #{i}"
        unknown = set(table) - {"class", "weight", "case", "phrases", "description"}
        if unknown:
            raise LexiconError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        phrases = table.get("phrases")
        weight = table.get("weight", 1.0)
        case = table.get("case", "any")
        if not isinstance(phrases, list) or not all(isinstance(p, str) and p.strip() for p in phrases):
            raise LexiconError(f"{where}: phrases must be a list of non-empty strings")
        if not isinstance(weight, int | float) or isinstance(weight, bool) or weight < 0:
            raise LexiconError(f"{where}: weight must be a number >= 0")
        if case not in ("any", "upper"):
            raise LexiconError(f"{where}: case must be 'any' or 'upper'")
        group = str(table.get("class", "marker"))
        entries += [Entry(p.strip(), group, float(weight), case == "upper") for p in phrases]
    return Lexicon(entries)
