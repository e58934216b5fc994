"""One scan per message for the content detectors' lexicons, over the normalised text.

A pipeline owns one `ScanGroup` with the commercial, political, abusive and chain-letter lexicons
(each of those detectors offers its `shared_lexicon`), and the first detector to ask for a message's
hits starts one pass of one expression (in a thread) that the others await. A detector used outside
a pipeline scans a group of its own (`own_group`, `group_for`). `normalise` is what that pass reads: lower case,
spaced or dotted letters joined, l33t read as letters.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import re

from gateway import offload
from gateway.config import Settings
from gateway.detectors.lexicon import Hit, Lexicon, Normalised, compile_trie, gate
from gateway.model import Mail
from gateway.prefilter import Prefilter
from gateway.text import message_text

_QUOTED = re.compile(r"(?m)^[ \t]*>.*$")


class ScanGroup:
    """The lexicons of several detectors scanned together: one expression, one pass per message.

    The pipeline adds its detectors' lexicons when it is built; the first detector to ask for a
    message's hits starts the scan (in a thread) and the others await the same result. The text scanned is the
    normalised text (see `normalise`). A hit is offered to every member lexicon at its start, so two
    detectors can both see a phrase that starts at the same place; an entry of one lexicon that would
    start INSIDE another's match is not seen (rare, and only ever a missed extra hit).
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
                    out[name].append(Hit(entry, text[start:stop], start))
                    count += 1
            if count >= limit:
                break
        return out

    async def hits(self, mail: Mail, name: str, settings: Settings,
                   max_chars: int = 200_000) -> tuple[list[Hit], str]:
        """(this member's hits in the message, the text they point into: the message text, or the
        normalised text (a `Normalised`) when normalising moved offsets). Shared through the message's context when this
        is the pipeline's group."""
        context = mail.context
        if context.lexicons is self:
            task = context.lexicon_hits
            if task is None:
                task = context.lexicon_hits = asyncio.ensure_future(self._run(mail, settings, max_chars))
            text, found = await task
        else:
            text, found = await self._run(mail, settings, max_chars)
        if name not in found:       # added after this message's scan started
            found[name] = await offload.run(len(text), lambda: self.members[name].scan(normalise(text)))
        return found[name], text

    async def _run(self, mail: Mail, settings: Settings, max_chars: int) -> tuple[str, dict[str, list[Hit]]]:
        text = (await message_text(mail, settings)).joined()[:max_chars]

        def work() -> tuple[str, dict[str, list[Hit]]]:
            norm = normalise(text)
            found = self.scan(norm)
            hit = any(found.values())       # most mail: none, and no quoted lines to look for
            quoted = [m.span() for m in _QUOTED.finditer(norm)] if hit and ">" in norm else []
            starts = [a for a, _ in quoted]
            # Same offsets: show what the message really says ("b1tch", "Order now"); otherwise (letters
            # were joined) the normalised text.
            shown = text if len(norm) == len(text) else Normalised(norm)

            def remake(h: Hit) -> Hit:
                i = bisect.bisect_right(starts, h.start) - 1
                inside = i >= 0 and h.start < quoted[i][1]
                return Hit(h.entry, shown[h.start:h.start + len(h.text)], h.start, inside)

            return shown, {name: [remake(h) for h in hits] for name, hits in found.items()}

        return await offload.run(len(text), work)


@functools.lru_cache(maxsize=4)
def _compile(bodies: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str], Prefilter]:
    """The group's expression, its IGNORECASE twin and its prefilter; about a second of CPU, so once per
    process for the same lexicons (every pipeline built in a process adds the same members again)."""
    return (*compile_trie(bodies), Prefilter([gate(b) for b in bodies]))


# --- normalisation shared by every lexicon: what obfuscation hides, read back -----------------------

_LEET = str.maketrans({"4": "a", "@": "a", "3": "e", "1": "i", "!": "i", "|": "i", "0": "o",
                       "5": "s", "$": "s", "7": "t", "+": "t"})
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789@$!|+*#")
# A digit or symbol next to a letter. Written to start with the (rare) digit or symbol so that `re` skips
# ahead to candidates instead of trying every letter: three times faster on prose.
_PAIR = re.compile(r"[0-9@$!|+*#](?:(?<=[a-z][0-9@$!|+*#])|(?=[a-z]))")
_TOKEN_END = re.compile(r"[a-z0-9@$!|+*#]*")
# Necessary for _SPACED: two single characters in a row, each after a separator ("f u c k" has " u c").
# Asked of Hyperscan (a superset, `_spaced_hint`): `re` tried it at every blank, 0.16 ms per 13 KB.
_SPACED_HINT = r"[ .\-_][a-z@$0-9*][ .\-_]{1,2}[a-z@$0-9*](?![\w*])"
_SPACED = re.compile(r"(?<![\w@$*])[a-z@$0-9](?P<sep>[ .\-_]{1,2})[a-z@$0-9*](?:(?P=sep)[a-z@$0-9*]){1,30}(?![\w*])")


def normalise(text: str) -> str:
    """Lower case, s p a c e d or d.o.t.t.e.d letters joined, l33t read as letters (only inside words
    that mix letters and digits or symbols, so "$100" and "room 101" stay). Each step first looks for
    its trigger with a cheap expression."""
    text = text.lower()
    if _spaced_hint().candidates(text):
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


@functools.cache
def _spaced_hint() -> Prefilter:
    return Prefilter([_SPACED_HINT])


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


def own_group(name: str, lexicon: Lexicon) -> ScanGroup:
    """A detector's lexicon alone, for when it checks a message outside a pipeline (compiled on first use)."""
    group = ScanGroup(name)
    group.add(name, lexicon)
    return group


def group_for(mail: Mail, name: str, own: ScanGroup) -> ScanGroup:
    """The pipeline's group when it scans this detector's lexicon, else the detector's own."""
    shared = mail.context.lexicons
    return shared if shared is not None and name in shared.members else own
