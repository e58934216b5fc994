"""The text of a message, extracted once and shared by every content detector.

Detectors run concurrently; the first to ask starts the extraction (in a worker thread, off the event
loop) and the others await the same task, so the text is built once per message however many
detectors read it.

The text is a tuple of `Segment`s, each with a source label ("subject", "body", "part 2: a.pdf") and a
zone that tells detectors how to weigh it:

- ``new``: text the sender wrote or attached in this message;
- ``quoted``: reply quotation (``>`` lines, the block after "On ... wrote:" or "-----Original Message-----"
  in a reply): text the correspondents were sent before;
- ``forwarded``: the content of a forwarded message (new to the recipients, so it counts like new text);
- ``disclaimer``: a standard legal footer ("If you are not the intended recipient ...");
- ``hidden``: HTML text a reader does not see (display:none, visibility:hidden, tiny fonts);
- ``metadata``: document properties of an attachment (title, subject, keywords, custom properties
  such as Microsoft Purview sensitivity labels).

Attachment text comes from PDF (pypdf), the Office Open XML formats (DOCX, XLSX, PPTX), the
OpenDocument formats (ODT, ODS, ODP), RTF, HTML and plain text/CSV, within the limits of
`TextSettings`; what could not be read within them is listed in `MessageText.unscanned` and reported
by the detectors as `unscanned.text_limits`.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from selectolax.lexbor import LexborHTMLParser

from gateway import documents, htmldepth, offload
from gateway.config import TextSettings
from gateway.mime import Part
from gateway.model import Finding, Mail
from gateway.quoting import FORWARD_SUBJECT, split_body

T = TypeVar("T")
ZONES = ("new", "quoted", "forwarded", "disclaimer", "hidden", "metadata")

_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u200e\u200f\u2060-\u2064\ufeff\u00ad\u034f\u180e]")
_BLANKS = "[ \t\r\f\v\u00a0\u2000-\u200a\u202f\u205f\u3000]"
_SPACES = re.compile(f"[\t\r\f\v\u00a0\u2000-\u200a\u202f\u205f\u3000]{_BLANKS}*| {_BLANKS}+")   # not lone spaces
_BLANK_LINES = re.compile(r"\n{3,}")
_ASCII_ODD = "\x1c\x1d\x1e\x1f"     # ASCII line and blank characters that only splitlines()/strip() know


@dataclass(frozen=True, slots=True)
class Segment:
    source: str          # "subject", "body", "part 2: report.pdf", "part 2: report.pdf (properties)"
    text: str
    zone: str = "new"    # one of ZONES

    @property
    def quoted(self) -> bool:
        """Reply quotation: text the correspondents already had."""
        return self.zone == "quoted"

    @property
    def counts(self) -> bool:
        """Text this message discloses: new, forwarded or attachment properties (not quotes, footers, hidden)."""
        return self.zone in ("new", "forwarded", "metadata")


@dataclass(frozen=True, slots=True)
class MessageText:
    segments: tuple[Segment, ...]
    unscanned: tuple[str, ...] = ()     # "part 2: big.pdf: over the 20971520 byte attachment limit"
    forward: bool = False               # the subject says this message is a forward
    elapsed_ms: float = 0.0

    @property
    def subject(self) -> str:
        return next((s.text for s in self.segments if s.source == "subject"), "")

    def joined(self, zones: tuple[str, ...] | None = None) -> str:
        """The text of the segments in `zones` (default: everything a reader sees, quotes included)."""
        zones = zones or ("new", "quoted", "forwarded", "disclaimer", "metadata")
        return "\n".join(s.text for s in self.segments if s.zone in zones)

    def zone(self, *zones: str) -> tuple[Segment, ...]:
        return tuple(s for s in self.segments if s.zone in zones)


async def off_loop_if_large(text: MessageText, scan: Callable[[], T]) -> T:
    """Run a detector's scan inline for typical mail (well under a millisecond), in a thread for big text."""
    return await offload.run(sum(len(s.text) for s in text.segments), scan)


def limits_finding(text: MessageText, detector: str) -> list[Finding]:
    """`unscanned.text_limits` when some text could not be extracted within the limits, else []."""
    if not text.unscanned:
        return []
    return [Finding(kind="unscanned.text_limits", detector=detector,
                    detail=f"The {detector} check could not read all of the message's text: "
                           + "; ".join(text.unscanned[:3]) + (" ..." if len(text.unscanned) > 3 else ""),
                    evidence=tuple(text.unscanned[:5]))]


# --- plain text ---------------------------------------------------------------------------------------

def normalise(text: str) -> str:
    """Zero-width characters removed, runs of blanks folded, blank-line runs shortened."""
    if text.isascii() and not any(c in text for c in _ASCII_ODD):
        # The common case, several times faster (substring tests run at memchr speed, `re` does not):
        # no zero-width or Unicode blanks can be there, blanks need folding only where two meet or a
        # tab/CR/FF/VT is, and lines end only at "\n" (after the fold a line begins or ends with at
        # most one space).
        text = text.replace("\r\n", "\n")
        if "  " in text or any(c in text for c in "\t\r\f\v"):
            text = _SPACES.sub(" ", text)
        text = text.replace(" \n", "\n").replace("\n ", "\n")
        if "\n\n\n" in text:
            text = _BLANK_LINES.sub("\n\n", text)
        return text.strip()
    text = _SPACES.sub(" ", _ZERO_WIDTH.sub("", text))
    text = "\n".join(line.strip() for line in text.splitlines())
    return _BLANK_LINES.sub("\n\n", text).strip()


# --- HTML -----------------------------------------------------------------------------------------------

_DROP = "script, style, head, title, template, object, svg, meta, link"
_BLOCKS = ("p, div, br, tr, li, ul, ol, table, h1, h2, h3, h4, h5, h6, blockquote, pre, hr, section, article, "
           "header, footer, dd, dt, address, center, form, fieldset")
_CELLS = "td, th"
_HIDDEN_STYLE = re.compile(
    r"(?i)(?:^|;)\s*(?:display\s*:\s*none|visibility\s*:\s*hidden|mso-hide\s*:\s*all"
    r"|font-size\s*:\s*(?:0(?:\.\d+)?(?:px|pt|em|rem|%)?|1(?:px|pt|%)|0?\.[0-4]\d*(?:em|rem))\s*(?:!important)?\s*(?:;|$)"
    r"|opacity\s*:\s*0(?:\.0+)?\s*(?:;|$))")
# height:0 hides only with overflow:hidden after it (no quote between): two searches, each part of the
# style read once, where one pattern rescanned the rest of the style for every `height:0`.
_HEIGHT_0 = re.compile(r"(?i)(?:^|;)\s*(?:max-)?height\s*:\s*0(?:px)?\s*(?:;|$)")
_OVERFLOW_HIDDEN = re.compile(r"(?i)overflow\s*:\s*hidden")
_QUOTE = re.compile("[\"']")


def _hidden_style(style: str) -> bool:
    if _HIDDEN_STYLE.search(style):
        return True
    searched = -1                                       # the quote-free stretches up to here had no overflow
    for match in _HEIGHT_0.finditer(style):
        if match.end() <= searched:
            continue
        quote = _QUOTE.search(style, match.end())
        searched = quote.start() if quote else len(style)
        if _OVERFLOW_HIDDEN.search(style, match.end(), searched):
            return True
    return False


def _is_hidden(node) -> bool:
    attrs = node.attributes
    if "hidden" in attrs:
        return True
    style = attrs.get("style")
    if not style:
        return False
    if len(style) > 300:        # attacker-sized: not worth a cache slot
        return _hidden_style(style)
    return _hiding(style)


@functools.lru_cache(maxsize=4096)
def _hiding(style: str) -> bool:
    """Whether a style attribute hides its element; cached, since a newsletter repeats a few styles on
    every cell (87 look-ups per message of the benchmark's newsletter, 3 distinct styles)."""
    return _hidden_style(style)


class _Inside:
    """Which nodes lie inside one of a set of nodes: each ancestor chain is walked once for all the
    questions (remembered per node), so a deep tree costs linear time, not depth times nodes."""

    def __init__(self, ids: set[int]) -> None:
        self.ids = ids
        self.known: dict[int, bool] = {}       # node -> it or an ancestor is one of ids

    def __call__(self, node) -> bool:
        path: list[int] = []
        parent = node.parent
        found = False
        while parent is not None:
            key = parent.mem_id
            if key in self.known:
                found = self.known[key]
                break
            if key in self.ids:
                found = True
                break
            path.append(key)
            parent = parent.parent
        for key in path:
            self.known[key] = found
        return found


def html_to_text(markup: str) -> str:
    """Visible text of an HTML body: scripts, styles, comments and hidden elements dropped."""
    return html_text(markup)[0]


def html_text(markup: str) -> tuple[str, str]:
    """(visible text, hidden text) of an HTML document, entities decoded, blocks on their own lines.

    Markup nested deeper than `htmldepth.MAX_DEPTH` (the parsers' cost grows with depth times size:
    seconds for 1 MB nested 30,000 deep) is read by the linear tag stripper instead: all of its text
    counts as visible and nothing as quoted, so the nesting cannot be used to hide text from a check."""
    if htmldepth.too_deep(markup):
        return htmldepth.flat_text(markup), ""
    tree = LexborHTMLParser(markup)
    for node in tree.css(_DROP):
        node.decompose()
    candidates = [node for node in tree.css("[style], [hidden]") if _is_hidden(node)]
    inside = _Inside({node.mem_id for node in candidates})
    hidden: list[str] = []
    top = [node for node in candidates if not inside(node)]
    for node in top:
        hidden.append(node.text(separator=" "))
        node.decompose()
    for node in tree.css(_BLOCKS):
        node.insert_after("\n")
    for node in tree.css(_CELLS):
        node.insert_after(" ")
    quotes = tree.css("blockquote")
    inside = _Inside({node.mem_id for node in quotes})
    for node in [node for node in quotes if not inside(node)]:   # reply quotations: marked as in plain text
        lines = node.text(separator="").split("\n")
        node.replace_with("\n" + "\n".join("> " + line for line in lines if line.strip()) + "\n")
    root = tree.body or tree.root
    visible = root.text(separator="") if root is not None else ""
    return normalise(visible), normalise("\n".join(hidden))


# --- extraction -----------------------------------------------------------------------------------------

class _Budget:
    def __init__(self, limits: TextSettings) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.max_seconds
        self.chars = 0
        self.unscanned: list[str] = []

    def take(self, label: str, text: str) -> str:
        room = self.limits.max_chars - self.chars
        if len(text) > room:
            self.unscanned.append(f"{label}: text over the {self.limits.max_chars} character limit")
            text = text[:max(room, 0)]
        self.chars += len(text)
        return text


def extract(mail: Mail, limits: TextSettings | None = None) -> MessageText:
    """Build the MessageText of a message (blocking: run it in a worker thread)."""
    limits = limits or TextSettings()
    started = time.perf_counter()
    budget = _Budget(limits)
    subject = normalise(mail.parsed.subject)
    forward = bool(FORWARD_SUBJECT.match(subject))
    segments = [Segment("subject", subject)]
    first_body = True
    for part in mail.parsed.parts:
        if part.is_text:
            source = "body" if first_body and not part.nested_in_message else f"part {part.path}"
            first_body = False
            segments.extend(_body_segments(part, source, forward or part.nested_in_message, budget))
        elif part.is_attachment:
            segments.extend(_attachment_segments(part, budget))
    if mail.parsed.limit_exceeded:
        budget.unscanned.append(f"message: MIME {mail.parsed.limit_exceeded} limit reached, later parts unread")
    return MessageText(tuple(s for s in segments if s.text or s.source == "subject"),
                       tuple(budget.unscanned), forward, round((time.perf_counter() - started) * 1000, 3))


def _body_segments(part: Part, source: str, forward: bool, budget: _Budget) -> list[Segment]:
    raw = part.text()
    if len(raw) > budget.limits.max_body_chars:
        budget.unscanned.append(f"{source}: over the {budget.limits.max_body_chars} character body limit")
        raw = raw[:budget.limits.max_body_chars]
    hidden = ""
    if part.content_type == "text/html":
        try:
            body, hidden = html_text(raw)
        except Exception:       # the HTML parser failing on hostile markup: fall back to stripping tags
            body = htmldepth.flat_text(raw)     # linear (a lazy <script>.*?</script> pattern was not)
    else:
        body = normalise(raw)
    body = budget.take(source, body)
    out = [Segment(source, text, zone) for zone, text in split_body(body, forward)]
    if hidden:
        out.append(Segment(source, budget.take(source, hidden), "hidden"))
    return out


def _attachment_segments(part: Part, budget: _Budget) -> list[Segment]:
    label = part.label
    kind = documents.sniff(part.payload, part.content_type, part.filename or "")
    if kind is None:
        return []
    if len(part.payload) > budget.limits.max_attachment_bytes:
        budget.unscanned.append(f"{label}: over the {budget.limits.max_attachment_bytes} byte attachment limit")
        return []
    if time.monotonic() > budget.deadline:
        budget.unscanned.append(f"{label}: the {budget.limits.max_seconds:g} s text extraction time ran out")
        return []
    try:
        doc = documents.extract(kind, part.payload, part.charset, budget.limits, budget.deadline)
    except documents.Unreadable as e:
        budget.unscanned.append(f"{label}: {e}")
        return []
    except Exception as e:     # a library failing on hostile input: could not read, never a pass
        budget.unscanned.append(f"{label}: {kind} text could not be read ({type(e).__name__})")
        return []
    if doc.truncated:
        budget.unscanned.append(f"{label}: {doc.truncated}")
    out: list[Segment] = []
    if doc.text:
        text = normalise(doc.text) if kind != "html" else doc.text
        out.append(Segment(label, budget.take(label, text)))
    if doc.properties:
        out.append(Segment(f"{label} (properties)", budget.take(label, normalise(doc.properties)), "metadata"))
    return out


async def message_text(mail: Mail, limits: TextSettings | None = None) -> MessageText:
    """The shared extraction for this message (computed on first use; in a worker thread when the message
    is large or has attachments, gateway/offload.py)."""
    text = await offload.once(mail, "text", len(mail.raw), lambda: extract(mail, limits))
    # Text read from images and scanned PDF pages (gateway/ocr.py, computed once per message too;
    # what OCR could not read within its limits is the `ocr` detector's unscanned.ocr_limits).
    from dataclasses import replace

    from gateway.ocr import message_ocr

    found = await message_ocr(mail)
    return replace(text, segments=text.segments + found.segments) if found.segments else text
