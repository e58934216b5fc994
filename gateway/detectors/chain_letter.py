"""chain_letter: requests to forward to many people, luck and curse threats, deadlines, "this is not a
joke", money chains and pyramids, hoaxes that ask for mass forwarding, deep forward chains, and
near-duplicates of letters already seen.

Policy, Provisions for Publishing and Posting: "Internet users must not use the
Internet for advertising, commercial ventures, political purposes, chain letters, or other
inappropriate purposes."

Score = the lexicon weights (policies/lexicons/chain_letter.txt, one regular expression) + the forward
depth (Fwd: prefixes and forwarded-message separators) + `duplicate_weight` when the body is a near
duplicate of a letter already remembered. Letters scoring at least `remember_score` are remembered as a
bottom-k MinHash sketch of their word 4-shingles, so a letter circulating in the department is caught
from its second copy even when the first did not reach the threshold. The memory is bounded to
`memory_size` letters (least recently matched dropped first) and `memory_days` days.

In the gateway the memory is the quarantine store's (the `letter` tables), so every worker and node
sees the letters the others saw; the pipeline hands the store on in each message's context. A message
is compared with it when it has any chain-letter wording or is forwarded (not one query per message).
When the store fails or does not answer within `memory_timeout` seconds, this process's own memory in
RAM is used and a warning logged: an outage of the memory must not make the check fail
(`error.chain_letter` is a tempfail for every message). Without a store (a `Mail` built outside a
gateway, `gateway check`/`evaluate`) the memory is per process.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import re
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from gateway import offload
from gateway.config import Settings
from gateway.detectors.base import options_with_defaults
from gateway.matching.contentscan import group_for, own_group
from gateway.matching.weighted import Hit, Lexicon, distinct, excerpt
from gateway.message.text import message_text
from gateway.model import Finding, Mail
from gateway.quarantine import Store

DEFAULTS = {"threshold": 1.0, "lexicon": "lexicons/chain_letter.txt", "max_chars": 100_000,
            "remember_score": 0.6, "duplicate_weight": 1.0, "similarity": 0.6, "memory_size": 5000,
            "memory_days": 30, "forward_depth": 4, "memory_timeout": 2.0}
# Only letters with these families are remembered for near-duplicate matching (not bare deadlines).
REMEMBERED = frozenset({"forward_request", "luck_threat", "money_chain", "hoax", "not_joke"})
SKETCH = 64               # hashes per sketch (bottom-k MinHash)
SHINGLE = 4               # words per shingle
MIN_SHINGLES = 20         # shorter texts are not fingerprinted: too little to compare
MAX_WORDS = 800           # chain letters are short; the start of a long text is enough
_WORD = re.compile(r"[a-z0-9']+")
_FWD_SUBJECT = re.compile(r"(?i)\b(?:fwd?|fw)\s*:")
_FWD_BODY = re.compile(r"(?im)^[ >]*(?:-{2,} ?(?:forwarded message|forwarded by)"
                       r"|begin forwarded message)")
_QUOTE = re.compile(r"(?m)^[ \t]*(?:>[ \t]*)+")
WARN_EVERY = 60.0         # seconds between warnings while the shared memory stays unavailable
log = logging.getLogger("gateway.detectors.chain_letter")


def sketch(text: str) -> tuple[int, ...]:
    """The SKETCH smallest CRC-32 hashes of the text's word 4-shingles (quote markers ignored)."""
    words = _first_words(text)
    if len(words) < MIN_SHINGLES + SHINGLE - 1:
        return ()
    shingles = map(" ".join, zip(*(itertools.islice(words, i, None) for i in range(SHINGLE)), strict=False))
    hashes = set(map(zlib.crc32, map(str.encode, shingles)))
    return tuple(sorted(heapq.nsmallest(SKETCH, hashes)))


def _first_words(text: str) -> list[str]:
    """The first MAX_WORDS words, quote markers ignored, read from a prefix of the text that is enlarged
    until it holds one word more (so no word is cut): a 20 KB message costs a quarter of reading all."""
    size = MAX_WORDS * 8
    while True:
        words = _WORD.findall(_QUOTE.sub("", text[:size].lower()))
        if len(words) > MAX_WORDS or size >= len(text):
            return words[:MAX_WORDS]
        size *= 4


def similarity(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """Estimated Jaccard similarity of two bottom-k sketches."""
    union = heapq.nsmallest(SKETCH, set(a) | set(b))
    both = set(a) & set(b)
    return sum(1 for h in union if h in both) / max(1, len(union))


@dataclass
class Letter:
    sketch: tuple[int, ...]
    first_seen: float
    copies: int
    subject: str


class LetterMemory:
    """Sketches of letters seen, with an inverted index from hash to letters; bounded in size and age."""

    def __init__(self, size: int, days: float) -> None:
        self.size = size
        self.max_age = days * 86400
        self.letters: OrderedDict[int, Letter] = OrderedDict()
        self.index: dict[int, set[int]] = {}
        self.next_id = 0

    def match(self, fingerprint: tuple[int, ...], threshold: float) -> tuple[Letter, float] | None:
        if not fingerprint:
            return None
        counts = Counter(i for h in fingerprint for i in self.index.get(h, ()))
        best: tuple[Letter, float] | None = None
        now = time.time()
        for letter_id, shared in counts.most_common(8):
            if shared < SKETCH * threshold / 2:
                break
            letter = self.letters[letter_id]
            if now - letter.first_seen > self.max_age:
                continue
            value = similarity(fingerprint, letter.sketch)
            if value >= threshold and (best is None or value > best[1]):
                best = (letter, value)
                self.letters.move_to_end(letter_id)
        return best

    def remember(self, fingerprint: tuple[int, ...], subject: str) -> None:
        if not fingerprint:
            return
        letter_id = self.next_id
        self.next_id += 1
        self.letters[letter_id] = Letter(fingerprint, time.time(), 1, subject[:80])
        for h in fingerprint:
            self.index.setdefault(h, set()).add(letter_id)
        while len(self.letters) > self.size:
            old_id, old = self.letters.popitem(last=False)
            for h in old.sketch:
                ids = self.index.get(h)
                if ids is not None:
                    ids.discard(old_id)
                    if not ids:
                        del self.index[h]


class ChainLetter:
    name: ClassVar[str] = "chain_letter"
    kinds: ClassVar[frozenset[str]] = frozenset({"chain_letter.content", "chain_letter.duplicate"})

    def __init__(self, settings: Settings, options: Mapping[str, Any]) -> None:
        opts = options_with_defaults(self.name, options, DEFAULTS)
        self.opts = opts
        self.threshold = opts["threshold"]
        self.lexicon = Lexicon.load(Path(settings.policy.dir) / opts["lexicon"])
        self.memory = LetterMemory(opts["memory_size"], opts["memory_days"])
        self.settings = settings
        self.shared_lexicon = self.lexicon       # the pipeline scans it with the other content lexicons
        self.own_lexicons = own_group(self.name, self.lexicon)
        self._warned_at = -WARN_EVERY

    def analyse(self, text: str, subject: str, hits: list[Hit], shared: bool) -> tuple[int, tuple[int, ...]]:
        """(forward depth, sketch of the body if it is needed)."""
        text = text[: self.opts["max_chars"]]
        depth = len(_FWD_SUBJECT.findall(subject)) + len(_FWD_BODY.findall(text))
        # The sketch is only needed to compare with remembered letters or to remember this one.
        needed = ((shared and (bool(hits) or depth > 0)) or bool(self.memory.letters)
                  or sum(h.entry.weight for h in hits) >= self.opts["remember_score"])
        return depth, sketch(text) if needed else ()

    async def check(self, mail: Mail) -> list[Finding]:
        found, norm = await group_for(mail, self.name, self.own_lexicons).hits(mail, self.name, self.settings)
        hits = distinct(h for h in found if h.start < self.opts["max_chars"])
        extracted = await message_text(mail, self.settings)
        joined = extracted.joined()
        store = mail.context.letters
        depth, fingerprint = await offload.run(
            len(joined), lambda: self.analyse(joined, extracted.subject, hits, store is not None))
        score = sum(h.entry.weight for h in hits)
        evidence = [f"{h.entry.label.replace('_', ' ')}: {excerpt(norm, h.start, h.size, 25)}" for h in hits[:5]]
        reasons = list(dict.fromkeys(h.entry.label.replace("_", " ") for h in hits))
        if depth >= self.opts["forward_depth"]:
            score += min(0.5, 0.1 * depth)
            evidence.append(f"forwarded {depth} times")
            reasons.append(f"forwarded {depth} times")
        lexical = sum(h.entry.weight for h in hits)
        remember = lexical >= self.opts["remember_score"] and any(h.entry.label in REMEMBERED for h in hits)
        asked = store if hits or depth else None       # the store is asked about likely letters only
        match = await self._recall(asked, fingerprint, extracted.subject, remember)
        if match:
            first_seen, copies, subject, value = match
            score += self.opts["duplicate_weight"]
            seen = time.strftime("%Y-%m-%d %H:%M", time.gmtime(first_seen))
            evidence.append(f"near-duplicate ({value:.0%} similar) of a letter first seen {seen} UTC, "
                            f"{copies} copies: {subject!r}")
            reasons.append(f"copy {copies} of a letter already seen")
        if score < self.threshold:
            return []
        kind = "chain_letter.duplicate" if match and lexical < self.threshold else "chain_letter.content"
        return [Finding(kind=kind, detector=self.name, score=round(score, 2), evidence=tuple(evidence[:7]),
                        detail=f"Chain letter ({', '.join(reasons)}); score {score:.1f} >= {self.threshold:g}")]

    async def _recall(self, store: Store | None, fingerprint: tuple[int, ...], subject: str,
                      remember: bool) -> tuple[float, int, str, float] | None:
        """(first seen, copies, subject, similarity) of the remembered letter this one copies, counting
        this copy; else remember it if `remember`. The shared memory when there is one and it answers,
        else this process's."""
        if not fingerprint:
            return None
        if store is not None:
            try:
                async with asyncio.timeout(self.opts["memory_timeout"]):
                    return await self._recall_shared(store, fingerprint, subject, remember)
            except Exception as e:       # any store failure: fall back, never error.chain_letter
                self._warn(e)
        match = self.memory.match(fingerprint, self.opts["similarity"])
        if match:
            letter, value = match
            letter.copies += 1
            return letter.first_seen, letter.copies, letter.subject, value
        if remember:
            self.memory.remember(fingerprint, subject)
        return None

    async def _recall_shared(self, store: Store, fingerprint: tuple[int, ...], subject: str,
                             remember: bool) -> tuple[float, int, str, float] | None:
        threshold = self.opts["similarity"]
        max_age = self.opts["memory_days"] * 86400
        candidates = await store.letter_candidates(fingerprint, since=time.time() - max_age,
                                                   min_shared=math.ceil(SKETCH * threshold / 2))
        scored = [(similarity(fingerprint, c.sketch), c) for c in candidates]
        value, letter = max(scored, key=lambda pair: pair[0], default=(0.0, None))
        if letter is not None and value >= threshold:
            copies = await store.letter_copied(letter.id)
            return letter.first_seen, copies, letter.subject, value
        if remember:
            await store.remember_letter(fingerprint, subject[:80], size=self.opts["memory_size"], max_age=max_age)
        return None

    def _warn(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning("chain-letter memory in the store unavailable (%s: %s); using this process's memory",
                        type(error).__name__, str(error) or "no answer")
