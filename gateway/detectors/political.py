"""political: campaign and election advocacy, fundraising and donation requests, endorsements,
"paid for by" disclaimers and petition drives.

Policy, Provisions for Publishing and Posting: "Internet users must not use the
Internet for advertising, commercial ventures, political purposes, chain letters, or other
inappropriate purposes."

A weighted lexicon (policies/lexicons/political.txt) compiled into one regular expression. Talking
about politics, legislation or regulation is ordinary government work: topical words weigh little,
and what makes the score is a call to act for a candidate, party or measure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from gateway.config import Settings
from gateway.detectors.base import options_with_defaults
from gateway.matching.contentscan import group_for, own_group
from gateway.matching.weighted import Lexicon, distinct, excerpt
from gateway.model import Finding, Mail

DEFAULTS = {"threshold": 1.0, "lexicon": "lexicons/political.txt", "max_chars": 100_000}
KIND_OF = {"paid_for": "political.campaign", "advocacy": "political.campaign", "endorsement": "political.campaign",
           "fundraising": "political.fundraising", "petition": "political.petition", "topic": "political.campaign"}
# The kind reported is the first family present in this order.
ORDER = ("fundraising", "petition", "paid_for", "advocacy", "endorsement", "topic")
LABEL_TEXT = {"paid_for": '"paid for by" disclaimer', "fundraising": "donation request", "advocacy": "vote advocacy",
              "endorsement": "endorsement", "petition": "petition drive", "topic": "campaign vocabulary"}


# A news clipping reports what campaigns do; it asks the reader nothing. In a message that is a clipping
# (its opening says so, or a line attributes a story to a paper), a phrase counts only when the reader
# is addressed next to it.
_CLIPPING = re.compile(r"\b(?:clips|clippings?|news summary|media summary|in the news|news roundup)\b")
_ATTRIBUTION = re.compile(
    r"(?m)^[A-Z][\w.' -]{0,60}\b(?:Post-Dispatch|Star|Times|Tribune|Journal|Gazette|News|News-Leader|Herald"
    r"|Post|Press|Associated Press|Reuters|Bloomberg|Politico)\b[\w-]*,? "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)")
_READER = re.compile(r"(?i)\b(?:you|your|you're|please|join us|join me|rsvp|we need|help us|sign up)\b")


def _clipping(text: str) -> str:
    """What shows the message is a news clipping ("" when it is not)."""
    opening = _CLIPPING.search(text[:300].lower())
    if opening:
        return repr(opening.group(0))
    line = _ATTRIBUTION.search(text)
    return f"a story attributed to {line.group(0).strip()!r}" if line else ""


class Political:
    name: ClassVar[str] = "political"
    kinds: ClassVar[frozenset[str]] = frozenset(KIND_OF.values())

    def __init__(self, settings: Settings, options: Mapping[str, Any]) -> None:
        opts = options_with_defaults(self.name, options, DEFAULTS)
        self.threshold = opts["threshold"]
        self.max_chars = opts["max_chars"]
        self.lexicon = Lexicon.load(Path(settings.policy.dir) / opts["lexicon"])
        unknown = {e.label for e in self.lexicon.entries} - set(KIND_OF)
        if unknown:
            raise ValueError(f"{self.lexicon.source}: unknown labels {sorted(unknown)} (known: {', '.join(KIND_OF)})")
        self.settings = settings
        self.shared_lexicon = self.lexicon       # the pipeline scans it with the other content lexicons
        self.own_lexicons = own_group(self.name, self.lexicon)

    async def check(self, mail: Mail) -> list[Finding]:
        found, text = await group_for(mail, self.name, self.own_lexicons).hits(mail, self.name, self.settings)
        hits = distinct(h for h in found if h.start < self.max_chars and not h.quoted)
        clipping = _clipping(text) if hits else ""
        reported = [h for h in hits if clipping and not _READER.search(text, max(0, h.start - 120), h.start + 120)]
        hits = [h for h in hits if h not in reported]
        score = sum(h.entry.weight for h in hits)
        if score < self.threshold:
            return []
        labels = {h.entry.label for h in hits}
        first = next(label for label in ORDER if label in labels)
        what = ", ".join(LABEL_TEXT[label] for label in ORDER if label in labels)
        phrases = ", ".join(f'"{" ".join(h.text.split())}"' for h in hits[:4])
        return [Finding(kind=KIND_OF[first], detector=self.name, score=round(score, 2),
                        evidence=tuple(f"{h.entry.label}: {excerpt(text, h.start, h.size, 25)}" for h in hits[:5]),
                        detail=f"Political content ({what}): {phrases}; score {score:.1f} >= {self.threshold:g}"
                               + (f"; not counted (reported in a news clipping, {clipping}, the reader not addressed): "
                                  f"{reported[0].text!r}" if reported else ""))]
