"""confidential: confidentiality markers and sensitivity labels (policy: Confidentiality of Department Information).

Markers come from a site-editable lexicon (policies/confidential.toml) compiled into one automaton.
They count in the subject, new and forwarded body text, attachment text and document properties;
reply quotations, legal disclaimer footers and hidden HTML text do not count, so a reply to a
privileged thread or an ordinary "If you are not the intended recipient" footer is not reported.
Sensitivity-label headers (Microsoft Purview `msip_labels`, RFC 2156 `Sensitivity`) whose label
name is one of `sensitivity_labels` are reported as `confidential.label` whatever the score.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from gateway import evidence, lexicon
from gateway.config import Settings
from gateway.detectors.base import OptionError, options_with_defaults
from gateway.model import Finding, Mail
from gateway.normaliser import Normalised, phrases
from gateway.plaintext import MessageText, limits_finding, off_loop_if_large
from gateway.text import message_text

DEFAULTS: dict[str, Any] = {
    "lexicon": "confidential.toml",     # relative to [policy] dir, or an absolute path
    "threshold": 1.0,                   # score at which the message is reported
    "label_factor": 2.0,                # a marker used as a label counts this many times its weight
    "metadata_factor": 2.5,             # ... and in document properties (title, subject, keywords, labels)
    "count_quoted": False,              # reply quotations count too (off: only what this message adds)
    "label_headers": ["msip_labels", "Sensitivity", "X-Sensitivity", "Classification", "X-Classification"],
    "sensitivity_labels": ["confidential", "highly confidential", "company confidential", "strictly confidential",
                           "restricted", "highly restricted", "secret", "privileged", "internal only", "sensitive"],
}
_LABEL_NAME = re.compile(r"(?i)MSIP_Label_[0-9a-f-]+_Name\s*=\s*([^;]{1,100})")
_PROPERTY_LABEL = re.compile(r"(?im)^MSIP_Label_[0-9a-f-]+_Name: (.{1,100})$")
_NEGATED = frozenset({"non", "not", "un", "no", "nonconfidential"})
ZONE_WEIGHT = {"new": 1.0, "forwarded": 1.0, "metadata": 1.0}


class Confidential:
    name: ClassVar[str] = "confidential"
    kinds: ClassVar[frozenset[str]] = frozenset({"confidential.*", "unscanned.text_limits"})

    def __init__(self, settings: Settings, options: Mapping[str, Any]) -> None:
        opts = options_with_defaults(self.name, options, DEFAULTS)
        path = Path(opts["lexicon"])
        if not path.is_absolute():
            path = Path(settings.policy.dir) / path
        try:
            self.lexicon = lexicon.load(path)
        except lexicon.LexiconError as e:
            raise OptionError(f"detector {self.name!r}: {e}") from None
        self.settings = settings
        self.threshold = opts["threshold"]
        self.label_factor = opts["label_factor"]
        self.metadata_factor = opts["metadata_factor"]
        self.zones = dict(ZONE_WEIGHT, **({"quoted": 1.0} if opts["count_quoted"] else {}))
        self.label_headers = tuple(opts["label_headers"])
        self.labels = tuple(str(phrases(x)).strip().lower() for x in opts["sensitivity_labels"])

    async def check(self, mail: Mail) -> list[Finding]:
        text = await message_text(mail, self.settings)
        findings = self._labels(mail, text)
        found = await off_loop_if_large(text, lambda: self.score(text))
        if found:
            findings.append(found)
        return findings + limits_finding(text, self.name)

    def _labels(self, mail: Mail, text: MessageText) -> list[Finding]:
        """Sensitivity labels: label headers, and MSIP_Label_..._Name document properties of attachments."""
        names: list[tuple[str, str]] = []
        for header in self.label_headers:
            for value in mail.parsed.header_all(header)[:10]:
                found = _LABEL_NAME.findall(value) if "MSIP_Label" in value else [value]
                names += [(f"the {header} header", _name(n)) for n in found if n.strip()]
        for segment in text.zone("metadata"):
            names += [(segment.source, _name(n)) for n in _PROPERTY_LABEL.findall(segment.text)]
        # a label name is quoted like an excerpt: masked, at most evidence.LIMIT characters
        hits = [(where, evidence.excerpt(n, 0, len(n))) for where, n in names if self._is_confidential_label(n)]
        if not hits:
            return []
        return [Finding(kind="confidential.label", detector=self.name, score=self.threshold,
                        part=None if hits[0][0].startswith("the ") else hits[0][0],
                        detail=f"Sensitivity label {hits[0][1]!r} in {hits[0][0]}",
                        evidence=tuple(f"{where}: {n}" for where, n in dict.fromkeys(hits))[:5])]

    def _is_confidential_label(self, name: str) -> bool:
        words = str(phrases(name)).strip().lower()
        if words.split(" ", 1)[0] in _NEGATED or words.startswith("non "):
            return False
        padded = f" {words} "
        return any(f" {label} " in padded for label in self.labels)

    def score(self, text: MessageText) -> Finding | None:
        """The best contribution of each distinct phrase, summed; a Finding when it reaches the threshold."""
        best: dict[str, tuple[float, str, str, tuple[Normalised, lexicon.Hit]]] = {}
        # phrase -> (points, group, source, (normalised text, hit) for the excerpt)
        for segment in text.segments:
            zone_weight = self.zones.get(segment.zone, 0.0)
            if not zone_weight or not segment.text:
                continue
            norm, hits = self.lexicon.find(segment.text)
            for hit in _outermost(hits):
                if _negated(norm, hit.start):
                    continue
                points = hit.entry.weight * zone_weight
                if segment.zone == "metadata":
                    points *= self.metadata_factor
                elif _label_use(norm, hit, segment.source == "subject"):
                    points *= self.label_factor
                # a weak word counts once however it is qualified ("confidential", "strictly confidential")
                key = hit.entry.phrase.lower() if hit.entry.weight >= 1 else hit.entry.phrase.lower().split()[-1]
                if points > best.get(key, (0.0,))[0]:
                    best[key] = (points, hit.entry.group, segment.source, (norm, hit))
        total = sum(p for p, *_ in best.values())
        if total < self.threshold or not best:
            return None
        ranked = sorted(best.items(), key=lambda kv: -kv[1][0])
        group, source = ranked[0][1][1], ranked[0][1][2]
        listed = "; ".join(f"{phrase!r} in {src}" for phrase, (_, _, src, _) in ranked[:4])
        more = f" and {len(ranked) - 4} more" if len(ranked) > 4 else ""
        return Finding(
            kind=f"confidential.{group}", detector=self.name, part=None if source in ("subject", "body") else source,
            score=round(total, 2),
            detail=f"Confidentiality marker{'s' if len(ranked) > 1 else ''} {listed}{more} "
                   f"(score {total:g}, threshold {self.threshold:g})",
            evidence=tuple(f"{src}: {_excerpt(*where)}" for _, (_, _, src, where) in ranked[:5]))


def _name(value: str) -> str:
    """A label name, at most 100 characters; a word cut there is dropped (it may be part of a number)."""
    value = value.strip()
    return value if len(value) < 100 else value[:100].rsplit(" ", 1)[0]


def _outermost(hits: list[lexicon.Hit]) -> list[lexicon.Hit]:
    """Drop hits inside a longer strong hit ("confidential" inside "privileged and confidential").

    Hits inside a weak phrase are kept: "STRICTLY CONFIDENTIAL" counts as the capitalised label it is."""
    hits = sorted(hits, key=lambda h: (h.start, -(h.end - h.start), -h.entry.weight))
    kept: list[lexicon.Hit] = []
    reach = -1
    for hit in hits:
        if hit.end <= reach and (hit.start, hit.end) != (kept[-1].start, kept[-1].end):
            continue
        kept.append(hit)
        if hit.entry.weight >= 1:
            reach = max(reach, hit.end)
    return kept


def _negated(norm: str, start: int) -> bool:
    before = norm[max(0, start - 16):start].lower().split()
    return bool(before) and before[-1] in _NEGATED


def _label_use(norm: str, hit: lexicon.Hit, subject: bool) -> bool:
    """Used as a label: in capitals (not in a shouted sentence), or a line of its own in the body."""
    phrase = norm[hit.start:hit.end]
    line_start = norm.rfind("\n", 0, hit.start) + 1
    line_end = norm.find("\n", hit.end)
    line = norm[line_start:line_end if line_end >= 0 else len(norm)].strip()
    if phrase.isupper() and len(phrase) >= 5:
        letters = [c for c in line if c.isalpha()]
        shouted = len(line.split()) >= 8 and sum(c.isupper() for c in letters) >= 0.7 * len(letters)
        return not shouted
    if line[:8].lower() == "subject ":     # a quoted header line is a subject, not a stamp
        subject = True
    # a phrase of several words standing alone on a short line: a stamp or a heading
    return not subject and " " in phrase and 0 < len(line) <= 40 and len(phrase) >= 0.6 * len(line)


def _excerpt(norm: Normalised, hit: lexicon.Hit) -> str:
    """The masked excerpt around a hit, quoted from the text as written (where the pii and credentials
    recognisers read what their detectors read)."""
    start, end = norm.span(hit.start, hit.end)
    return evidence.excerpt(norm.original, start, end)
