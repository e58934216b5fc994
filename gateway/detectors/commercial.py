"""commercial: advertising, solicitation and commercial ventures.

Policy, Provisions for Publishing and Posting: "Internet users must not use the
Internet for advertising, commercial ventures, political purposes, chain letters, or other
inappropriate purposes."

The score is a probability: sigmoid(lexicon weights + bulk-mail signals + a small trained linear
model over word unigrams and bigrams). The lexicon (policies/lexicons/commercial.txt) holds the
phrases of offers, discounts, calls to buy and private-business promotion; the model
(policies/models/commercial.json, trained by scripts/train_content.py with the lexicon as a fixed
offset) adds what the lexicon misses. The evidence is the lexicon phrases, the bulk-mail signals and
the model's strongest features present in the message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from email.utils import getaddresses
from pathlib import Path
from typing import Any, ClassVar

from gateway import offload
from gateway.config import Settings
from gateway.detectors.base import OptionError, options_with_defaults
from gateway.matching.contentscan import group_for, own_group
from gateway.matching.linear import LinearModel, sigmoid
from gateway.matching.weighted import Hit, Lexicon, distinct, excerpt
from gateway.message.mime import ParsedMessage
from gateway.message.text import message_text
from gateway.model import Finding, Mail

DEFAULTS = {"threshold": 0.6, "lexicon": "lexicons/commercial.txt", "model": "models/commercial.json",
            "max_chars": 100_000, "model_chars": 10_000, "short_words": 200, "short_lexicon_score": 1.8,
            "own_senders": []}

_PIXEL = re.compile(
    r"""<img\b[^>]*?(?:\b(?:width|height)\s*=\s*["']?[01](?:px)?["'\s/>][^>]*?\b(?:width|height)\s*=\s*["']?[01](?:px)?\b"""
    r"""|(?:open|track|pixel|beacon|spacer)[^"'>]*\.(?:gif|png)|\bsrc\s*=\s*["']?https?://[^"'>\s]*[?&](?:uid|mid|cid|rid|email|e|u)=)""",
    re.IGNORECASE)


def signals(parsed: ParsedMessage, max_chars: int = 100_000) -> list[str]:
    """Bulk-mail signals from the headers and the HTML: 'sig:list_unsubscribe', 'sig:tracking_pixel', ..."""
    found = []
    if parsed.message.get("List-Unsubscribe"):
        found.append("sig:list_unsubscribe")
    if parsed.header("Precedence").strip().lower() in ("bulk", "junk"):
        found.append("sig:precedence_bulk")
    html = [p for p in parsed.text_parts if p.content_type == "text/html"]
    if html:
        markup = "".join(p.text()[:max_chars] for p in html)
        if _PIXEL.search(markup):
            found.append("sig:tracking_pixel")
    # "HTML only" and "many links" were tried and dropped: in the 2002 training mail they separate spam
    # from plain-text mailing lists, but today's ordinary mail and newsletters are HTML with many links.
    return found


SIGNAL_TEXT = {
    "sig:list_unsubscribe": "List-Unsubscribe header (bulk mail)",
    "sig:precedence_bulk": "Precedence: bulk header",
    "sig:tracking_pixel": "tracking pixel in the HTML",
}


class Commercial:
    name: ClassVar[str] = "commercial"
    kinds: ClassVar[frozenset[str]] = frozenset({"commercial.advertising", "commercial.business"})

    def __init__(self, settings: Settings, options: Mapping[str, Any]) -> None:
        opts = options_with_defaults(self.name, options, DEFAULTS)
        self.threshold = opts["threshold"]
        self.max_chars = opts["max_chars"]
        self.model_chars = opts["model_chars"]     # the model reads the start of the text: ads are short
        self.short_words = opts["short_words"]
        self.short_lexicon_score = opts["short_lexicon_score"]
        base = Path(settings.policy.dir)
        self.lexicon = Lexicon.load(base / opts["lexicon"])
        self.model = LinearModel.load(base / opts["model"])
        self.settings = settings
        self.shared_lexicon = self.lexicon       # the pipeline scans it with the other content lexicons
        self.own_lexicons = own_group(self.name, self.lexicon)
        self.own_senders = _own_senders(opts["own_senders"])

    def own_sender(self, mail: Mail) -> str:
        """The From address when it is one of the site's own bulk senders (its newsletters), else ""."""
        if not self.own_senders:
            return ""
        for _, address in getaddresses(mail.parsed.header_all("From")[:1]):
            address = address.strip().lower()
            domain = address.rpartition("@")[2]
            if address in self.own_senders or any(domain == d or domain.endswith("." + d)
                                                   for d in self.own_senders if "@" not in d):
                return address
        return ""

    def classify(self, text: str, hits: list[Hit], sigs: list[str]) -> tuple[float, list[tuple[str, float]]]:
        """(probability, model features present with their weights), given the lexicon hits."""
        contributions = self.model.contributions(text[: self.model_chars])
        contributions += [(s, self.model.weights[s]) for s in sigs if s in self.model.weights]
        logit = self.model.logit(contributions) + sum(h.entry.weight for h in hits)
        return sigmoid(logit), contributions

    async def check(self, mail: Mail) -> list[Finding]:
        found, norm = await group_for(mail, self.name, self.own_lexicons).hits(mail, self.name, self.settings)
        hits = distinct(h for h in found if h.start < self.max_chars and not h.quoted)
        text = (await message_text(mail, self.settings)).joined()
        sigs = signals(mail.parsed, self.max_chars)
        own = self.own_sender(mail)
        if own:
            # the site's own newsletter: being bulk mail, and its call to register, are what it is for
            hits = [h for h in hits if h.entry.label not in ("bulk", "call_to_buy")]
            sigs = []
        probability, contributions = await offload.run(min(len(text), self.model_chars),
                                                       lambda: self.classify(text, hits, sigs))
        lexical = sum(h.entry.weight for h in hits)
        # A short message gives the model few words to go on: there the lexicon alone may decide.
        short = lexical >= self.short_lexicon_score and len(text.split(None, self.short_words)) <= self.short_words
        if probability < self.threshold and not short:
            return []
        evidence = [f"{h.entry.label.replace('_', ' ')}: {excerpt(norm, h.start, h.size, 25)}" for h in hits[:4]]
        evidence += [SIGNAL_TEXT[s] for s in sigs if s in SIGNAL_TEXT][:2]
        top = [f'"{f}"' for f, w in contributions if w > 0 and not f.startswith("sig:")][:5]
        if top:
            evidence.append("model features: " + ", ".join(top))
        kind = "commercial.business" if any(h.entry.label == "business" for h in hits) else "commercial.advertising"
        what = ", ".join(dict.fromkeys(h.entry.label.replace("_", " ") for h in hits)) or "advertising vocabulary"
        if own:
            evidence.append(f"from the site's own bulk sender {own}: bulk signals and calls to register not counted")
        return [Finding(kind=kind, detector=self.name, score=round(probability, 3), evidence=tuple(evidence),
                        detail=f"Advertising or solicitation ({what}); score {probability:.2f}"
                               + (f" >= {self.threshold:g}" if probability >= self.threshold else
                                  f", short message with lexicon score {lexical:.1f} >= {self.short_lexicon_score:g}"))]


def _own_senders(values: list) -> frozenset[str]:
    """own_senders: addresses (news@agency.gov) or domains (news.agency.gov, its subdomains too)."""
    out = set()
    for value in values:
        if not isinstance(value, str) or not re.fullmatch(r"@?[\w.+-]*@?[\w-]+(?:\.[\w-]+)+", value.strip()):
            raise OptionError(f"detector 'commercial': own_senders: {value!r} is not an address or domain")
        out.add(value.strip().lower().lstrip("@"))
    return frozenset(out)
