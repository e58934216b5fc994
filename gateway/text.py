"""The text of a message, extracted once and shared by every content detector.

The first detector to ask starts the extraction (in a worker thread, off the event loop) and any
other that asks, before or after it finished, awaits the same task, so the text is built once per
message however many detectors read it.

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

import time
from dataclasses import replace

from gateway import documents, htmldepth, offload
from gateway.config import Settings, TextSettings
from gateway.mime import Part
from gateway.model import Mail
from gateway.ocr import message_ocr
from gateway.plaintext import MessageText, Segment, html_text, normalise
from gateway.quoting import FORWARD_SUBJECT, split_body, split_disclaimers

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
        text = budget.take(label, normalise(doc.text) if kind != "html" else doc.text)
        # a printed or saved e-mail carries its sender's legal footer: that is not a marker of the document
        out.extend(Segment(label, chunk, zone) for zone, chunk in split_disclaimers(text))
    if doc.properties:
        out.append(Segment(f"{label} (properties)", budget.take(label, normalise(doc.properties)), "metadata"))
    return out


async def message_text(mail: Mail, settings: Settings) -> MessageText:
    """The shared extraction for this message (computed on first use; in a worker thread when the message
    is large or has attachments, gateway/offload.py). Its limits are the pipeline's (the message's
    context), else the caller's settings: the same for every detector, whichever asks first."""
    settings = mail.context.settings or settings
    text = await offload.once(mail, "text", len(mail.raw), lambda: extract(mail, settings.text))
    # Text read from images and scanned PDF pages (gateway/ocr.py, computed once per message too;
    # what OCR could not read within its limits is the `ocr` detector's unscanned.ocr_limits).
    found = await message_ocr(mail, settings)
    return replace(text, segments=text.segments + found.segments) if found.segments else text
