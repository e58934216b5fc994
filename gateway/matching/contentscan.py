"""One scan per message for the content detectors' lexicons, over the normalised text.

A pipeline owns one `ScanGroup` with the commercial, political, abusive and chain-letter lexicons
(each of those detectors offers its `shared_lexicon`), and the first detector to ask for a message's
hits starts one pass of one expression (in a thread) that the others await. A detector used outside
a pipeline scans a group of its own (`own_group`, `group_for`). That pass reads gateway.matching.normaliser's
`for_lexicons` text; hits are quoted from the text as written.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import re

from gateway import offload
from gateway.config import Settings
from gateway.matching.normaliser import Normalised, for_lexicons
from gateway.matching.prefilter import Prefilter
from gateway.matching.weighted import Hit, Lexicon, compile_trie, gate
from gateway.message.text import message_text
from gateway.model import Mail

_QUOTED = re.compile(r"(?m)^[ \t]*>.*$")


class ScanGroup:
    """The lexicons of several detectors scanned together: one expression, one pass per message.

    The pipeline adds its detectors' lexicons when it is built; the first detector to ask for a
    message's hits starts the scan (in a thread) and the others await the same result. The text
    scanned is the normalised text (gateway.matching.normaliser.for_lexicons). A hit is offered to every
    member lexicon at its start, so two detectors can both see a phrase that starts at the same
    place; an entry of one lexicon that would start INSIDE another's match is not seen (rare, and
    only ever a missed extra hit).
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.members: dict[str, Lexicon] = {}
        self._compiled: tuple[re.Pattern[str], re.Pattern[str], Prefilter] | None = None

    def add(self, name: str, lexicon: Lexicon) -> None:
        self.members[name] = lexicon
        self._compiled = None

    def prepare(self) -> tuple[re.Pattern[str], re.Pattern[str], Prefilter]:
        """Compile the group now (about a second, once per process) rather than on the first message."""
        if self._compiled is None:
            self._compiled = _compile(tuple(b for lex in self.members.values() if lex.boundaries
                                            for b in lex.bodies))
        return self._compiled

    def scan(self, text: str, limit: int = 400) -> dict[str, list[Hit]]:
        members = dict(self.members)
        compiled = self.prepare()
        out: dict[str, list[Hit]] = {name: [] for name in members}
        if not compiled[2].candidates(text):     # most mail: no entry can match, skip the exact scan
            return out
        lower = text.lower()
        finder = compiled[0].finditer(lower) if len(lower) == len(text) else compiled[1].finditer(text)
        count = 0
        for match in finder:
            start, end = match.span()
            for name, lexicon in members.items():
                entry, stop = lexicon.identify(text, start, end)
                if entry is not None:
                    out[name].append(_hit(text, entry, start, stop))
                    count += 1
            if count >= limit:
                break
        return out

    async def hits(self, mail: Mail, name: str, settings: Settings,
                   max_chars: int = 200_000) -> tuple[list[Hit], Normalised]:
        """(this member's hits in the message, the normalised text they point into, which maps them back
        to the message text). Shared through the message's context when this is the pipeline's group."""
        context = mail.context
        if context.lexicons is self:
            task = context.lexicon_hits
            if task is None:
                task = context.lexicon_hits = asyncio.ensure_future(self._run(mail, settings, max_chars))
            text, found = await task
        else:
            text, found = await self._run(mail, settings, max_chars)
        if name not in found:       # added after this message's scan started
            found[name] = await offload.run(len(text), lambda: [_hit(text, h.entry, h.start, h.start + h.size)
                                                                for h in self.members[name].scan(text)])
        return found[name], text

    async def _run(self, mail: Mail, settings: Settings, max_chars: int) -> tuple[Normalised, dict[str, list[Hit]]]:
        text = (await message_text(mail, settings)).joined()[:max_chars]

        def work() -> tuple[Normalised, dict[str, list[Hit]]]:
            norm = for_lexicons(text)
            found = self.scan(norm)
            hit = any(found.values())       # most mail: none, and no quoted lines to look for
            quoted = [m.span() for m in _QUOTED.finditer(norm)] if hit and ">" in norm else []
            starts = [a for a, _ in quoted]

            def remake(h: Hit) -> Hit:
                i = bisect.bisect_right(starts, h.start) - 1
                inside = i >= 0 and h.start < quoted[i][1]
                return Hit(h.entry, h.text, h.start, inside, h.length)

            return norm, {name: [remake(h) for h in hits] for name, hits in found.items()}

        return await offload.run(len(text), work)


@functools.lru_cache(maxsize=4)
def _compile(bodies: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str], Prefilter]:
    """The group's expression, its IGNORECASE twin and its prefilter; about a second of CPU, so once per
    process for the same lexicons (every pipeline built in a process adds the same members again)."""
    return (*compile_trie(bodies), Prefilter([gate(b) for b in bodies]))


def _hit(norm: str, entry, start: int, stop: int) -> Hit:
    """A hit as the message writes it ("b1tch", "C O N F"), with its length in the normalised text."""
    if isinstance(norm, Normalised):
        a, b = norm.span(start, stop)
        return Hit(entry, norm.original[a:b], start, length=stop - start)
    return Hit(entry, norm[start:stop], start)


def own_group(name: str, lexicon: Lexicon) -> ScanGroup:
    """A detector's lexicon alone, for when it checks a message outside a pipeline (compiled on first use)."""
    group = ScanGroup(name)
    group.add(name, lexicon)
    return group


def group_for(mail: Mail, name: str, own: ScanGroup) -> ScanGroup:
    """The pipeline's group when it scans this detector's lexicon, else the detector's own."""
    shared = mail.context.lexicons
    return shared if shared is not None and name in shared.members else own
