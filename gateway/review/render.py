"""A held message made safe to show: headers, text with the evidence highlighted, attachments,
and the HTML body sanitised for a sandboxed preview. Everything from the message is escaped here
or by the templates' autoescaping; nothing from it becomes a path, a URL or markup unescaped."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import magic
import nh3
from markupsafe import Markup, escape

from gateway import htmldepth, mime
from gateway.config import Settings
from gateway.model import Finding
from gateway.plaintext import html_to_text
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
            e = e.strip()
            if not e:
                continue
            if "*" not in e:
                found.add(e)
            found.update(m for pair in re.findall(r"'([^']{3,80})'|\"([^\"]{3,80})\"", e) for m in pair if m)
            tail = re.search(r"\*+[-\s]?([A-Za-z0-9]{3,})\W*$", e)
            if tail:
                found.add(tail.group(1))
    return sorted((n for n in found if len(n) >= 3), key=len, reverse=True)[:50]


def highlight(text: str, terms: list[str]) -> tuple[Markup, int]:
    if not terms:
        return Markup(escape(text)), 0
    pattern = re.compile("|".join(re.escape(t) for t in terms), re.IGNORECASE)
    out: list[str] = []
    last = count = 0
    for match in pattern.finditer(text):
        out.append(str(escape(text[last:match.start()])))
        out.append(f'<mark class="evidence">{escape(match.group(0))}</mark>')
        last = match.end()
        count += 1
    out.append(str(escape(text[last:])))
    return Markup("".join(out)), count


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
    text, count = highlight(body[:MAX_TEXT], needles(item.findings))
    attachments = []
    for part in parsed.attachments:
        scan = tuple(f"{f.kind}: {f.detail}" for f in item.findings if f.part and
                     (f.part == part.label or f.part.startswith(f"part {part.path}:") or f.part == f"part {part.path}"))
        attachments.append(Attachment(
            label=part.label, name=part.filename or "(no name)", declared=part.content_type,
            true_type=true_type(part.payload), size=len(part.payload),
            sha256=hashlib.sha256(part.payload).hexdigest(), scan=scan or ("no findings",)))
    return Rendered(headers, text, source, html_part is not None, attachments, count, parsed.defects)


def preview_html(settings: Settings, item: HeldItem) -> str | None:
    """The HTML body sanitised with nh3: no scripts, styles, images, forms or event handlers."""
    if item.raw is None:
        return None
    parsed = mime.parse(item.raw, limits(settings))
    part = next((p for p in parsed.text_parts if p.content_type == "text/html"), None)
    if part is None:
        return None
    markup = htmldepth.bounded(part.text()[:MAX_TEXT * 5])      # the parser's cost grows with the nesting
    clean = nh3.clean(markup, tags=PREVIEW_TAGS, attributes=PREVIEW_ATTRIBUTES,
                      url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer nofollow",
                      strip_comments=True)
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>preview</title></head>"
            f"<body>{clean}</body></html>")


_PICTURE_PART = re.compile(r"(?i)\.(?:png|jpe?g|gif|bmp|tiff?|webp|heic|heif)\b|inline image|\.pdf page \d+$")


def is_picture_part(label: str | None) -> bool:
    """Does a finding's `part` name an image or a PDF page (OCR, adult content)? Then the message page
    offers a link to see it, blurred."""
    return bool(label) and _PICTURE_PART.search(label) is not None
