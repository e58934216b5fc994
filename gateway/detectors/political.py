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

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from gateway.config import Settings
from gateway.detectors.base import options_with_defaults
from gateway.detectors.contentscan import group_for, own_group
from gateway.detectors.lexicon import Lexicon, distinct, excerpt
from gateway.model import Finding, Mail

DEFAULTS = {"threshold": 1.0, "lexicon": "lexicons/political.txt", "max_chars": 100_000}
KIND_OF = {"paid_for": "political.campaign", "advocacy": "political.campaign", "endorsement": "political.campaign",
           "fundraising": "political.fundraising", "petition": "political.petition", "topic": "political.campaign"}
# The kind reported is the first family present in this order.
ORDER = ("fundraising", "petition", "paid_for", "advocacy", "endorsement", "topic")
LABEL_TEXT = {"paid_for": '"paid for by" disclaimer', "fundraising": "donation request", "advocacy": "vote advocacy",
              "endorsement": "endorsement", "petition": "petition drive", "topic": "campaign vocabulary"}


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
        score = sum(h.entry.weight for h in hits)
        if score < self.threshold:
            return []
        labels = {h.entry.label for h in hits}
        first = next(label for label in ORDER if label in labels)
        what = ", ".join(LABEL_TEXT[label] for label in ORDER if label in labels)
        phrases = ", ".join(f'"{" ".join(h.text.split())}"' for h in hits[:4])
        return [Finding(kind=KIND_OF[first], detector=self.name, score=round(score, 2),
                        evidence=tuple(f"{h.entry.label}: {excerpt(text, h.start, h.size, 25)}" for h in hits[:5]),
                        detail=f"Political content ({what}): {phrases}; score {score:.1f} >= {self.threshold:g}")]
