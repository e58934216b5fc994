"""Zones of a plain-text body: new text, reply quotations, forwarded content and legal disclaimer footers.

Used by gateway/message/text.py for every body part (HTML is converted to text first, its blockquotes marked
with "> "). Cheap tests (substring tests, one Hyperscan pass for the cue words) decide whether a body, line
or paragraph needs a regular expression at all.
"""

from __future__ import annotations

import functools
import re

from gateway.matching.prefilter import Prefilter

FORWARD_SUBJECT = re.compile(r"(?i)^\s*(?:\[[^\]]{0,40}\]\s*)?(?:fw|fwd|tr|wg|rv)\s*:")
_WROTE = re.compile(r"(?i)^(?:on\b.{0,250}\bwrote|le\b.{0,200}a écrit|am\b.{0,200}schrieb|el\b.{0,200}escribió"
                    r"|.{1,120}\b(?:wrote|writes))\s*:?\s*$")
_ORIGINAL = re.compile(r"(?i)^-{2,}\s*(?:original message|message d'origine|ursprüngliche nachricht)\s*-{2,}\s*$")
_FORWARD_HEAD = re.compile(
    r"(?i)^(?:-{2,}\s*forwarded message\s*-{2,}|begin forwarded message\s*:|-{3,}\s*forwarded by\b.*"
    r"|-{2,}\s*(?:weitergeleitete nachricht|message transféré)\s*-{2,})\s*$")
_HEADER_FROM = re.compile(r"(?i)^\*?from\s*:\*?\s+\S")
_HEADER_NEXT = re.compile(r"(?i)^\*?(?:sent|date|to|subject|cc)\s*:")
_FOOTER_STRONG = (r"not the intended recipient|if you (?:are not|were not|have received)|intended (?:only |solely |"
                  r"exclusively )?for (?:the )?(?:sole )?(?:use (?:of|by) )?(?:the )?(?:individual|person|entity|"
                  r"addressee|named|recipient)|received (?:this|the) (?:e-?mail|message|communication|transmission|"
                  r"document) (?:in error|by mistake)")
_FOOTER_WEAK = (r"(?:is|are) (?:strictly )?prohibited|(?:delete|destroy) (?:it|this|the|all copies)|"
                r"notify (?:the sender|us|me) (?:immediately|by)|"
                r"this (?:e-?mail|message) (?:is the property of|and any attachments?|may contain)|"
                r"may contain (?:confidential|privileged|proprietary)|"
                r"(?:dissemination|distribution|copying|disclosure) of this|disclaimer")
_FOOTER = re.compile(rf"(?i)({_FOOTER_STRONG})|{_FOOTER_WEAK}".replace(" ", r"\s+"))   # phrases across lines
_FOOTER_CUES = ("intended", "recipient", "received", "prohibited", "delete", "destroy", "notify", "property of",
                "may contain", "dissemination", "distribution", "copying", "disclosure", "disclaimer")
_QUOTE_CUES = ("wrote", "writes", "écrit", "schrieb", "escribió", "original message", "forwarded", "from:",
               "message d'origine", "ursprüngliche", "weitergeleitete", "transféré")


def split_body(text: str, forward: bool) -> list[tuple[str, str]]:
    """[(zone, text)] of a plain-text body: new text, reply quotes, forwarded content, legal footers."""
    after_quote = "forwarded" if forward else "quoted"
    lowered = text.lower()
    if not (text.startswith(">") or "\n>" in text or _has_cue(lowered, _QUOTE_CUES)):
        return _split_disclaimers("new", text.strip("\n")) if text.strip() else []
    lines = text.split("\n")
    zones: list[str] = []
    mode = "new"
    for i, line in enumerate(lines):
        stripped = line.strip()
        if mode == "new" and stripped:
            if stripped[0] in "-Bb" and _FORWARD_HEAD.match(stripped):
                mode = "forwarded"
            elif _starts_quote(lines, i, stripped):
                mode = after_quote
        if not stripped and zones:
            zones.append(zones[-1])             # a blank line belongs to the block it is in
        elif mode == "new" and (stripped.startswith(">") or (_wrote(stripped) and _next_is_quote(lines, i))):
            zones.append(after_quote)
        else:
            zones.append(mode)
    out: list[tuple[str, str]] = []
    start = 0
    for i in range(1, len(lines) + 1):
        if i == len(lines) or zones[i] != zones[start]:
            chunk = "\n".join(lines[start:i]).strip("\n")
            if chunk.strip():
                out.extend(_split_disclaimers(zones[start], chunk))
            start = i
    return out


def _starts_quote(lines: list[str], i: int, stripped: str) -> bool:
    """An attribution line ("On ... wrote:", "-----Original Message-----", an Outlook header block)."""
    if stripped[:1] == "-" and _ORIGINAL.match(stripped):
        return True
    if stripped[:1] in "Ff*" and _HEADER_FROM.match(stripped) and _header_block(lines, i):
        return True
    return _wrote(stripped) and not _next_is_quote(lines, i) \
        and (stripped.lower().startswith("on") or stripped.endswith(":"))


def _wrote(line: str) -> bool:
    """An attribution line ("On Monday, Bob wrote:"); the substring test keeps the regex off most lines."""
    lowered = line[-40:].lower()
    return ("wrote" in lowered or "writes" in lowered or "écrit" in lowered or "schrieb" in lowered
            or "escribió" in lowered) and bool(_WROTE.match(line))


def _header_block(lines: list[str], i: int) -> bool:
    """An Outlook-style "From: ... / Sent: ... / To: ..." header block starting at line i."""
    following = [ln.strip() for ln in lines[i + 1:i + 6] if ln.strip()]
    return sum(1 for ln in following[:4] if _HEADER_NEXT.match(ln)) >= 2


def _next_is_quote(lines: list[str], i: int) -> bool:
    for line in lines[i + 1:i + 4]:
        if line.strip():
            return line.lstrip().startswith(">")
    return False


def split_disclaimers(text: str) -> list[tuple[str, str]]:
    """[(zone, text)] of an attachment's text: a printed e-mail keeps its legal footer as zone "disclaimer"."""
    return _split_disclaimers("new", text)


def _split_disclaimers(zone: str, chunk: str) -> list[tuple[str, str]]:
    """Legal footers become zone "disclaimer" (new/forwarded text only): from the first line with a footer
    phrase (back to where its sentence or its "CONFIDENTIALITY NOTICE" heading begins) to the end of a
    paragraph that has a
    strong footer phrase ("not the intended recipient") or two weaker ones; the lines before stay."""
    if zone not in ("new", "forwarded"):
        return [(zone, chunk)]
    lowered = chunk.lower()
    if not _has_cue(lowered, _FOOTER_CUES):     # most text: no footer word anywhere
        text = "\n\n".join(para for para in chunk.split("\n\n") if para.strip())
        return [(zone, text)] if text else []
    out: list[tuple[str, str]] = []

    def add(z: str, text: str) -> None:
        if not text.strip():
            return
        if out and out[-1][0] == z:
            out[-1] = (z, out[-1][1] + "\n\n" + text)
        else:
            out.append((z, text))

    for para in chunk.split("\n\n"):
        footer = False
        if len(para) < 3000:
            lowered = para.lower()
            if any(cue in lowered for cue in _FOOTER_CUES):
                cues = _FOOTER.findall(para)
                footer = len(cues) >= 2 or any(cues)
        if not footer:
            add(zone, para)
            continue
        lines = para.split("\n")
        first = next((i for i, line in enumerate(lines) if _FOOTER.search(line)), 0)
        if first and len(lines[first - 1]) < 60 and any(w in lines[first - 1].lower()
                                                         for w in ("notice", "disclaimer", "confidential")):
            first -= 1
        while first and lines[first - 1].strip() and lines[first - 1].rstrip()[-1] not in ".!?:;)":
            first -= 1          # the footer's sentence began on an earlier line
        add(zone, "\n".join(lines[:first]))
        add("disclaimer", "\n".join(lines[first:]))
    return out


def _has_cue(lowered: str, cues: tuple[str, ...]) -> bool:
    """Whether any cue occurs in the lower-cased text: one Hyperscan pass (a substring test per cue
    read a 10 KB body fourteen times over). A gate only: what it lets through is checked exactly."""
    return bool(_cue_finder(cues).candidates(lowered))


@functools.cache
def _cue_finder(cues: tuple[str, ...]) -> Prefilter:
    return Prefilter([re.escape(cue) for cue in cues])
