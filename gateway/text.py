"""The text of a message, extracted once and shared by every content detector.

Detectors run concurrently; the first to ask starts the extraction and the others await the same
task, so the text is built once per message however many detectors read it.
"""

from __future__ import annotations

import asyncio
import html
import re
from dataclasses import dataclass

from gateway.model import Mail

_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_TAGS = re.compile(r"(?is)<(script|style|head)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>")
_BLOCK = re.compile(r"(?i)<(?:br|/p|/div|/tr|/li|/h[1-6]|p|div|tr|li)\b[^>]*>")
_SPACES = re.compile(r"[ \t\r\f\v]+")


@dataclass(frozen=True, slots=True)
class Segment:
    source: str          # "subject", "body", "part 2: report.pdf"
    text: str


@dataclass(frozen=True, slots=True)
class MessageText:
    segments: tuple[Segment, ...]
    unscanned: tuple[str, ...] = ()     # parts whose text could not be extracted within the limits

    @property
    def subject(self) -> str:
        return next((s.text for s in self.segments if s.source == "subject"), "")

    def joined(self) -> str:
        return "\n".join(s.text for s in self.segments)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML body: scripts, styles and comments dropped, entities decoded."""
    text = _BLOCK.sub("\n", markup)
    text = _TAGS.sub(" ", text)
    return normalise(html.unescape(text))


def normalise(text: str) -> str:
    """Zero-width characters removed, runs of blanks folded."""
    text = _ZERO_WIDTH.sub("", text)
    return "\n".join(_SPACES.sub(" ", line).strip() for line in text.splitlines()).strip()


def extract(mail: Mail) -> MessageText:
    segments = [Segment("subject", normalise(mail.parsed.subject))]
    for part in mail.parsed.text_parts:
        body = part.text()
        body = html_to_text(body) if part.content_type == "text/html" else normalise(body)
        if body:
            segments.append(Segment("body" if part.path in ("1", "1.1") else f"part {part.path}", body))
    return MessageText(tuple(segments))


async def message_text(mail: Mail) -> MessageText:
    """The shared extraction for this message (computed on first use)."""
    notes = mail.parsed.notes
    task = notes.get("text")
    if task is None:
        task = notes["text"] = asyncio.ensure_future(asyncio.to_thread(extract, mail))
    text = await task
    # Text read from images and scanned PDF pages (gateway/ocr.py, computed once per message too;
    # what OCR could not read within its limits is the `ocr` detector's unscanned.ocr_limits).
    from dataclasses import replace

    from gateway.ocr import message_ocr

    found = await message_ocr(mail)
    return replace(text, segments=text.segments + found.segments) if found.segments else text
