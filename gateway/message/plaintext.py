"""Text primitives: the `Segment` and `MessageText` values, and the plain-text and HTML normalising
that the text extraction (gateway/message/text.py), the document readers (gateway/message/documents.py) and OCR
(gateway/message/ocr.py) all use. It imports none of them, so they do not import each other for these.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from selectolax.lexbor import LexborHTMLParser

from gateway import offload
from gateway.matching.normaliser import ZERO_WIDTH_RE
from gateway.message import htmldepth
from gateway.model import Finding

T = TypeVar("T")
ZONES = ("new", "quoted", "forwarded", "disclaimer", "hidden", "metadata", "filename")

_BLANKS = "[ \t\r\f\v\u00a0\u2000-\u200a\u202f\u205f\u3000]"
_SPACES = re.compile(f"[\t\r\f\v\u00a0\u2000-\u200a\u202f\u205f\u3000]{_BLANKS}*| {_BLANKS}+")   # not lone spaces
_BLANK_LINES = re.compile(r"\n{3,}")
_ASCII_ODD = "\x1c\x1d\x1e\x1f"     # ASCII line and blank characters that only splitlines()/strip() know


@dataclass(frozen=True, slots=True)
class Segment:
    source: str          # "subject", "body", "part 2: report.pdf", "part 2: report.pdf (properties)",
                         # "part 2: docs.zip > memo.docx"
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
    text = _SPACES.sub(" ", ZERO_WIDTH_RE.sub("", text))
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
