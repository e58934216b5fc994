"""A held message made safe to show: headers, text with the evidence highlighted, attachments,
and the HTML body sanitised for a sandboxed preview. Everything from the message is escaped here
or by the templates' autoescaping; nothing from it becomes a path, a URL or markup unescaped."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

import magic
import nh3
from markupsafe import Markup, escape

from gateway.config import Settings
from gateway.matching.normaliser import LEET, ZERO_WIDTH, confusables
from gateway.message import documents, htmldepth, mime
from gateway.message.plaintext import html_to_text, normalise
from gateway.model import Finding
from gateway.quarantine import HeldItem

MAX_TEXT = 200_000
MAX_HEADERS = 200
MAX_HEADER_VALUE = 2000
# Tags kept in the preview: structure and text only. No img (no remote images), no style, no forms.
PREVIEW_TAGS = {"a", "abbr", "b", "blockquote", "br", "caption", "code", "dd", "del", "div", "dl", "dt", "em",
                "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "ins", "li", "ol", "p", "pre", "q", "s", "small",
                "span", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul"}
PREVIEW_ATTRIBUTES = {"a": {"href", "title"}, "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan"}}


@dataclass(frozen=True)
class Attachment:
    label: str
    name: str
    declared: str
    true_type: str
    size: int
    sha256: str
    scan: tuple[str, ...]          # the findings about this part, or ("no findings",)
    text: Markup | None = None     # its text with the evidence highlighted, when a finding names it
    highlights: int = 0


@dataclass(frozen=True)
class Rendered:
    headers: list[tuple[str, str]]
    text: Markup                   # escaped, evidence wrapped in <mark>
    text_source: str               # "text/plain", "text/html (as text)" or ""
    has_html: bool
    attachments: list[Attachment]
    highlights: int
    defects: tuple[str, ...]


def limits(settings: Settings) -> mime.Limits:
    p = settings.pipeline
    return mime.Limits(max_depth=p.max_depth, max_parts=p.max_parts, max_header_bytes=p.max_header_bytes,
                       max_decoded_bytes=p.max_decoded_bytes)


def needles(findings: tuple[Finding, ...]) -> list[str]:
    """What to highlight: each evidence excerpt, the quoted words in it, and the unmasked tail of a
    masked value ("SSN ***-**-6789" -> "6789")."""
    found: set[str] = set()
    for f in findings:
        for e in f.evidence:
            e = e.strip().strip("…").strip()
            if not e:
                continue
            if "*" not in e:
                found.add(e)
            found.update(m for pair in re.findall(r"'([^']{3,80})'|\"([^\"]{3,80})\"", e) for m in pair if m)
            tail = re.search(r"\*+[-\s]?([A-Za-z0-9]{3,})\W*$", e)
            if tail:
                found.add(tail.group(1))
    return sorted((n for n in found if len(n) >= 3), key=len, reverse=True)[:50]


# Folding for the highlight, as the detectors read text (gateway/matching/normaliser.py): case, accents,
# full-width letters, look-alike letters of other scripts (the same confusables data) and l33t digits and
# symbols; separators (blanks, dots, dashes, underscores, zero-width characters) are skipped, so "S.S.N",
# "s s n" and "ЅЅN" all find "ssn".
_SKIP = frozenset(" \t\r\n\f\v.-_\u00a0" + ZERO_WIDTH)


def folded(text: str) -> tuple[str, list[int]]:
    """`text` folded for matching, and for each folded character the index of its original."""
    lookalike = confusables()
    out: list[str] = []
    index: list[int] = []
    for i, c in enumerate(text):
        if c in _SKIP:
            continue
        if not c.isascii():
            c = lookalike.get(c, c)
            c = "".join(b for b in unicodedata.normalize("NFKD", c) if not unicodedata.combining(b)) or c
        for b in c.lower().translate(LEET):
            out.append(b)
            index.append(i)
    return "".join(out), index


def spans(text: str, terms: list[str]) -> list[tuple[int, int]]:
    """Where the terms occur in `text` after folding both, as merged (start, end) of the original."""
    hay, index = folded(text)
    found: list[tuple[int, int]] = []
    for term in terms:
        needle = folded(term)[0]
        if len(needle) < 3:
            continue
        at = hay.find(needle)
        while at != -1 and len(found) < 1000:
            found.append((index[at], index[at + len(needle) - 1] + 1))
            at = hay.find(needle, at + len(needle))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(found):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def highlight(text: str, terms: list[str]) -> tuple[Markup, int]:
    """The text escaped, each match of the evidence in <mark>; a sensitive value a match touches is
    widened to and shown as its mask (gateway/evidence.py), as the evidence itself is."""
    marks = spans(text, terms) if terms else []
    if not marks:
        return Markup(escape(text)), 0
    from gateway.evidence import redactions

    secret = redactions(text)
    out: list[str] = []
    last = 0
    for start, end in marks:
        if start < last:
            continue
        shown: list[str] = []
        for r_start, r_end, _masked in secret:       # widen to every value the match touches, masked
            if r_start < end and r_end > start:
                start, end = min(start, r_start), max(end, r_end)
        start = max(start, last)
        cut = start
        for r_start, r_end, masked in secret:
            if r_start >= start and r_end <= end:
                shown += [str(escape(text[cut:r_start])), str(escape(masked))]
                cut = r_end
        shown.append(str(escape(text[cut:end])))
        out.append(str(escape(text[last:start])))
        out.append('<mark class="evidence">' + "".join(shown) + "</mark>")
        last = end
    out.append(str(escape(text[last:])))
    return Markup("".join(out)), len(marks)


def true_type(payload: bytes) -> str:
    try:
        return magic.from_buffer(payload[:65536], mime=True) or "unknown"
    except Exception:       # libmagic on attacker bytes: an unknown type, never a crash
        return "unknown"


def render(settings: Settings, item: HeldItem) -> Rendered | None:
    """None when the content was purged. CPU work: call it off the event loop."""
    if item.raw is None:
        return None
    parsed = mime.parse(item.raw, limits(settings))
    headers = [(str(k)[:200], mime.decode_header_value(v)[:MAX_HEADER_VALUE])
               for k, v in list(parsed.message.items())[:MAX_HEADERS]]
    plain = next((p for p in parsed.text_parts if p.content_type == "text/plain"), None)
    html_part = next((p for p in parsed.text_parts if p.content_type == "text/html"), None)
    if plain is not None:
        body, source = plain.text(), "text/plain"
    elif html_part is not None:
        body, source = html_to_text(html_part.text()), "text/html (as text)"
    else:
        body, source = "", ""
    terms = needles(item.recorded_findings)
    text, count = highlight(body[:MAX_TEXT], terms)
    attachments = []
    for part in parsed.attachments:
        scan = tuple(f"{f.kind}: {f.detail}" for f in item.findings if f.part and
                     (f.part == part.label or f.part.startswith(f"part {part.path}:") or f.part == f"part {part.path}"))
        shown, marks = (attachment_text(settings, part, terms) if scan and terms else (None, 0))
        attachments.append(Attachment(
            label=part.label, name=part.filename or "(no name)", declared=part.content_type,
            true_type=true_type(part.payload), size=len(part.payload),
            sha256=hashlib.sha256(part.payload).hexdigest(), scan=scan or ("no findings",), text=shown,
            highlights=marks))
    return Rendered(headers, text, source, html_part is not None, attachments, count, parsed.defects)


def attachment_text(settings: Settings, part: mime.Part, terms: list[str]) -> tuple[Markup | None, int]:
    """The attachment's text as the detectors read it (gateway/message/documents.py, the same limits), with the
    evidence highlighted; None when it has no text or cannot be read."""
    import time

    kind = documents.sniff(part.payload, part.content_type, part.filename or "")
    limits_ = settings.text
    if kind is None or len(part.payload) > limits_.max_attachment_bytes:
        return None, 0
    try:
        doc = documents.extract(kind, part.payload, part.charset, limits_, time.monotonic() + limits_.max_seconds)
    except Exception:          # hostile input a library fails on: no text shown, never a crash
        return None, 0
    if not doc.text:
        return None, 0
    return highlight(normalise(doc.text)[:MAX_TEXT] if kind != "html" else doc.text[:MAX_TEXT], terms)


def preview_html(settings: Settings, item: HeldItem) -> str | None:
    """The HTML body sanitised with nh3: no scripts, styles, images, forms or event handlers."""
    if item.raw is None:
        return None
    parsed = mime.parse(item.raw, limits(settings))
    part = next((p for p in parsed.text_parts if p.content_type == "text/html"), None)
    if part is None:
        return None
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>preview</title></head>"
            f"<body>{preview_body(part.text()[:MAX_TEXT * 5])}</body></html>")


def preview_body(markup: str) -> str:
    """The markup sanitised with nh3; markup nested past htmldepth.MAX_DEPTH (hostile: the parser's cost
    grows with size times depth) is shown as its text instead, in one linear pass."""
    if htmldepth.too_deep(markup):
        return ('<p><em>This HTML is nested too deep to show as a page; its text follows.</em></p>'
                f"<pre>{escape(htmldepth.flat_text(markup))}</pre>")
    return nh3.clean(markup, tags=PREVIEW_TAGS, attributes=PREVIEW_ATTRIBUTES,
                     url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer nofollow",
                     strip_comments=True)


_PICTURE_PART = re.compile(r"(?i)\.(?:png|jpe?g|gif|bmp|tiff?|webp|heic|heif)\b|inline image|\.pdf page \d+$")


def is_picture_part(label: str | None) -> bool:
    """Does a finding's `part` name an image or a PDF page (OCR, adult content)? Then the message page
    offers a link to see it, blurred."""
    return bool(label) and _PICTURE_PART.search(label) is not None
