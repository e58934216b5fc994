"""confidential: confidentiality markers and sensitivity labels (policy: Confidentiality of Department Information).

Markers come from a site-editable lexicon (policies/confidential.toml) compiled into one automaton.
They count in the subject, new and forwarded body text, attachment and archive member text, document
properties and file names (a marker there counts as a label);
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

from gateway import evidence
from gateway.config import Settings
from gateway.detectors.base import OptionError, options_with_defaults
from gateway.matching import phrases as lexicon
from gateway.matching.normaliser import Normalised, phrases
from gateway.message.plaintext import MessageText, limits_finding, off_loop_if_large
from gateway.message.text import message_text
from gateway.model import Finding, Mail

DEFAULTS: dict[str, Any] = {
    "lexicon": "confidential.toml",     # relative to [policy] dir, or an absolute path
    "threshold": 1.0,                   # score at which the message is reported
    "label_factor": 2.0,                # a marker used as a label counts this many times its weight
    "metadata_factor": 2.5,             # ... and in document properties (title, subject, keywords, labels)
    "count_quoted": False,              # reply quotations count too (off: only what this message adds)
    "public_phrases": [],               # public-notice and statutory wording a marker inside does not count in
    "label_headers": ["msip_labels", "Sensitivity", "X-Sensitivity", "Classification", "X-Classification"],
    "sensitivity_labels": ["confidential", "highly confidential", "company confidential", "strictly confidential",
                           "restricted", "highly restricted", "secret", "privileged", "internal only", "sensitive"],
}
_LABEL_NAME = re.compile(r"(?i)MSIP_Label_[0-9a-f-]+_Name\s*=\s*([^;]{1,100})")
_PROPERTY_LABEL = re.compile(r"(?im)^MSIP_Label_[0-9a-f-]+_Name: (.{1,100})$")
_NEGATED = frozenset({"non", "not", "un", "no", "nonconfidential"})
ZONE_WEIGHT = {"new": 1.0, "forwarded": 1.0, "metadata": 1.0, "filename": 1.0}
# Talking about a marker is not marking: a marker counts unless the text around it shows it is explained,
# announced or cited rather than stamped on what is sent (see `Confidential._talk`).
_STATUTE = re.compile(r"\b(?:section \d[\d ]*|rsmo|sunshine law|open meetings (?:act|law)|open records (?:act|law)"
                      r"|freedom of information|foia|public records (?:act|law)|chapter \d|u s c|csr|cfr|statute)")
_SELF = re.compile(r"\b(?:this|the attached|the enclosed|attached|enclosed) (?:document|record|e ?mail|message|memo"
                   r"|report|attachment|file|letter|page|material|information|draft)s?\b")
_RECORDS_TALK = re.compile(r"\b(?:closed (?:session|meeting)|withheld|redacted|(?:sunshine|records|foia|information) "
                           r"(?:law )?request|custodian of records|open to the public|notice of (?:open )?meeting)\b")
_PRESS_RELEASE = re.compile(r"\b(?:for immediate release|press release|news release|media contact|media advisory"
                            r"|at embargo time)\b")
_PUBLIC_NOTICE = re.compile(r"\b(?:public notice|notice is hereby given|public comment|available for public review"
                            r"|notice of (?:open )?(?:public )?(?:meeting|hearing))\b")
_EMBARGO = frozenset({"embargoed until", "under embargo"})
# A phrase's best contribution is looked for among its first occurrences only: each is weighed in context
# (about 15 us), and one phrase repeated 30,000 times in a 1 MB body must not cost a second of CPU.
MAX_OCCURRENCES = 500


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
        public = opts["public_phrases"]
        if not isinstance(public, list) or not all(isinstance(p, str) and p.strip() for p in public):
            raise OptionError(f"detector {self.name!r}: public_phrases must be a list of non-empty strings")
        self.public = _phrase_pattern(public)
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
        talk: dict[str, str] = {}      # phrase -> why it was not counted (explained, announced, public wording)
        weighed: dict[str, int] = {}   # phrase -> occurrences weighed so far (MAX_OCCURRENCES)
        # phrase -> (points, group, source, (normalised text, hit) for the excerpt)
        for segment in text.segments:
            zone_weight = self.zones.get(segment.zone, 0.0)
            if not zone_weight or not segment.text:
                continue
            norm, hits = self.lexicon.find(segment.text)
            lowered = norm.lower().replace("\n", " ") if hits else ""
            public = [m.span() for m in self.public.finditer(lowered)] if hits and self.public else []
            for hit in _outermost(hits):
                phrase = hit.entry.phrase.lower()
                weighed[phrase] = weighed.get(phrase, 0) + 1
                if weighed[phrase] > MAX_OCCURRENCES or _negated(norm, hit.start):
                    continue
                if any(a <= hit.start and hit.end <= b for a, b in public):
                    talk.setdefault(phrase, f"public wording {lowered[public[0][0]:public[0][1]]!r}"
                                    if len(public) == 1 else "site public wording")
                    continue
                label = segment.zone == "filename" or (
                    segment.zone != "metadata" and _label_use(norm, hit, segment.source == "subject"))
                why = "" if segment.zone == "metadata" else _talk(lowered, hit, label)
                if why:
                    talk.setdefault(phrase, why)
                    continue
                points = hit.entry.weight * zone_weight
                if segment.zone == "metadata":
                    points *= self.metadata_factor
                elif label:
                    # a stamp or heading; a marker in a file name labels the file like a stamp on its first page
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
                   f"(score {total:g}, threshold {self.threshold:g})"
                   + ("; not counted: " + "; ".join(f"{p!r} ({why})" for p, why in list(talk.items())[:3])
                      if talk else ""),
            evidence=tuple(f"{src}: {_excerpt(*where)}" for _, (_, _, src, where) in ranked[:5]))


def _talk(lowered: str, hit: lexicon.Hit, label: bool) -> str:
    """Why a marker is talked about rather than applied ("" when it marks the message): a closed-record
    phrase explained in running text that cites the law, in a records response or meeting notice and not
    said of this document; an embargo on a
    press release; the word DRAFT in a public notice (a draft permit published for comment)."""
    group, phrase = hit.entry.group, hit.entry.phrase.lower()
    if group == "closed_record" and not label:
        around = lowered[max(0, hit.start - 100):hit.end + 100]
        before = lowered[max(0, hit.start - 60):hit.start]
        cited = _STATUTE.search(around)
        context = _RECORDS_TALK.search(lowered) if cited and not _SELF.search(before) else None
        if context:
            return f"explained with a citation of {cited.group(0).strip()!r} in a {context.group(0)!r} text"
    if group == "draft" and phrase in _EMBARGO:
        found = _PRESS_RELEASE.search(lowered)
        if found:
            return f"embargo of a press release ({found.group(0)!r})"
    if group == "draft" and hit.entry.weight < 1:
        found = _PUBLIC_NOTICE.search(lowered)
        if found:
            return f"draft published for comment ({found.group(0)!r})"
    return ""


def _phrase_pattern(public: list[str]) -> re.Pattern[str] | None:
    """One pattern over the normalised lower-case text for site public wording; "*" ends a word freely."""
    bodies = []
    for phrase in public:
        words = str(phrases(phrase.replace("*", " * "))).lower().split()
        parts = [r"\w*" if w == "*" else re.escape(w) for w in words]
        bodies.append(r"\b" + " ".join(parts).replace(r" \w*", r"\w*") + r"\b")
    return re.compile("|".join(bodies)) if bodies else None


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
