"""Where whole-word keywords occur in lower-case ASCII text, from one Hyperscan pass.

An Aho-Corasick automaton reports every occurrence, inside words too ("tin" in "meeting", "dr" in
"address"), and each is then checked in Python: about 160 per 10 KB of ordinary prose for the PII
keywords. Here the word boundaries are part of the patterns, so only whole words come back.
A boundary is anything but [a-z0-9], which in lower-case ASCII text is exactly "not str.isalnum()";
text with other characters is for the caller's own, Unicode-aware path.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

import hyperscan


class WholeWords:
    """`find(text)`: [(start, end, keyword)] for every whole-word occurrence, by end then start."""

    def __init__(self, keywords: Sequence[str]) -> None:
        if not all(k and k.isascii() and k == k.lower() and k[0].isalnum() for k in keywords):
            raise ValueError("keywords must be lower-case ASCII and start with a letter or digit")
        self.keywords = list(dict.fromkeys(keywords))
        patterns = [rb"(?:^|[^a-z0-9])" + re.escape(k).encode() + rb"(?:[^a-z0-9]|$)" for k in self.keywords]
        self.database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self.database.compile(expressions=patterns, ids=list(range(len(patterns))), elements=len(patterns),
                              flags=[hyperscan.HS_FLAG_SOM_LEFTMOST] * len(patterns))
        self._scratch = threading.local()

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Occurrences in `text`, which must be lower-case ASCII."""
        if not text:
            return []
        scratch = getattr(self._scratch, "value", None)
        if scratch is None:        # one scratch space per thread: a scan may run in a worker thread
            scratch = self._scratch.value = hyperscan.Scratch(self.database)
        found: list[tuple[int, int, str]] = []
        keywords = self.keywords

        def report(index: int, start: int, end: int, flags: int, context: object) -> None:
            word = keywords[index]
            begin = start if text[start].isalnum() else start + 1      # the match may hold the boundary before
            found.append((begin, begin + len(word), word))

        self.database.scan(text.encode("ascii"), match_event_handler=report, scratch=scratch)
        found.sort(key=lambda hit: (hit[1], hit[0]))
        return list(dict.fromkeys(found))     # "$" also matches before a final newline: one occurrence, twice
