r"""Which of many regular expressions may match a text, from one Hyperscan pass.

The content lexicons hold a few hundred regular expressions and most mail matches none of them (81 %
of the development corpus's ham). Python's `re` walks a 20 KB text in about a millisecond whatever it
finds; Hyperscan compiles every entry into one automaton and answers in tens of microseconds. It runs
in prefilter mode: what it cannot match exactly (look-arounds, back-references) is widened, so its
answer is a superset: an entry it does not report cannot match, one it reports may. The exact scan
with `re` then runs only when something may match, so the findings are the same as without it.

Hyperscan's Unicode mode (UCP) took four minutes to compile the lexicons, so the automaton works on
ASCII classes and each pattern is widened first (`widen`): `\w`, `\d` and `\s` also accept any
non-ASCII character and a `\b` inside a pattern is dropped, which keeps the answer a superset of what
Python's Unicode-aware `re` can match.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

import hyperscan

_FLAGS = (hyperscan.HS_FLAG_PREFILTER | hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_CASELESS
          | hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_ALLOWEMPTY)
# Python-only syntax that PCRE would read differently (`{,n}` is a literal there): such an entry is
# always a candidate instead of being trusted to the automaton.
_PYTHON_ONLY = re.compile(r"\{,|\(\?P=|\\[uUN]")


class Prefilter:
    """`candidates(text)`: the indices of the patterns that may match somewhere in `text`."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.always: frozenset[int] = frozenset(i for i, p in enumerate(patterns) if _PYTHON_ONLY.search(p))
        usable = {i: widen(p) for i, p in enumerate(patterns) if i not in self.always}
        try:
            self.database = _database(list(usable.values())) if usable else None
        except hyperscan.error:     # find the entries it cannot take, the rest still compile together
            rejected = {i for i, p in usable.items() if not _compiles([p])}
            self.always |= rejected
            usable = {i: p for i, p in usable.items() if i not in rejected}
            self.database = _database(list(usable.values())) if usable else None
        self.ids = list(usable)
        self._scratch = threading.local()

    def candidates(self, text: str) -> set[int]:
        found = set(self.always)
        if self.database is None or not text:
            return found
        scratch = getattr(self._scratch, "value", None)
        if scratch is None:        # one scratch space per thread: a scan may run in a worker thread
            scratch = self._scratch.value = hyperscan.Scratch(self.database)
        ids = self.ids

        def report(index: int, start: int, end: int, flags: int, context: object) -> None:
            found.add(ids[index])

        self.database.scan(text.encode("utf-8", "replace"), match_event_handler=report, scratch=scratch)
        return found


_NON_ASCII = r"\x{80}-\x{10ffff}"


def widen(pattern: str) -> str:
    r"""The pattern for Hyperscan's ASCII classes, widened so that it matches at least what Python's
    Unicode `re` does: `\w`, `\d`, `\s` also take any non-ASCII character (outside a negated class;
    inside one, ASCII classes already leave every non-ASCII character in), and `\b`, `\B` are dropped,
    but for a leading `\b`, which callers only put before ASCII word characters (lexicon.gate)."""
    out: list[str] = []
    i, in_class, negated = 0, False, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            escape = pattern[i:i + 2]
            if escape in ("\\w", "\\d", "\\s") and not negated:
                out.append(escape + _NON_ASCII if in_class else f"[{escape}{_NON_ASCII}]")
            elif escape in ("\\b", "\\B") and not in_class and i:
                pass
            else:
                out.append(escape)
            i += 2
            continue
        if c == "[" and not in_class:
            in_class, negated = True, pattern[i + 1:i + 2] == "^"
            if pattern[i + 1 + negated:i + 2 + negated] == "]":       # "[]...]" and "[^]...]": a literal "]"
                out.append(pattern[i:i + 2 + negated])
                i += 2 + negated
                continue
        elif c == "]" and in_class:
            in_class = negated = False
        out.append(c)
        i += 1
    return "".join(out)


def _database(patterns: Sequence[str]) -> hyperscan.Database:
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(expressions=[p.encode("utf-8") for p in patterns], ids=list(range(len(patterns))),
                     elements=len(patterns), flags=[_FLAGS] * len(patterns))
    return database


def _compiles(patterns: Sequence[str]) -> bool:
    try:
        _database(patterns)
    except hyperscan.error:
        return False
    return True
