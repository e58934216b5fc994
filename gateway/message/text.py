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
  such as Microsoft Purview sensitivity labels);
- ``filename``: the name of an attachment or archive member (a file named "CONFIDENTIAL-payroll.xlsx"),
  with the source "part 2: CONFIDENTIAL-payroll.xlsx (file name)".

Attachment text comes from PDF (pypdf), the Office Open XML formats (DOCX, XLSX, PPTX), the
OpenDocument formats (ODT, ODS, ODP), RTF, HTML and plain text/CSV, within the limits of
`TextSettings`; what could not be read within them is listed in `MessageText.unscanned` and reported
by the detectors as `unscanned.text_limits`. Archive members (zip, 7z, rar, tar, gzip, bzip2, xz,
nested) are read the same way, each a segment of its own ("part 2: docs.zip > memo.docx"), from the
archive inventory the antivirus and filetype detectors share (gateway/message/archives.py, opened once within
its limits); what the inventory could not open (encrypted, over its limits) stays the antivirus
detector's unscanned finding.
"""

from __future__ import annotations

import time
from dataclasses import replace

from gateway import offload
from gateway.config import Settings, TextSettings
from gateway.message import archives, documents, htmldepth
from gateway.message.mime import Part
from gateway.message.ocr import message_ocr
from gateway.message.plaintext import MessageText, Segment, html_text, normalise
from gateway.message.quoting import FORWARD_SUBJECT, split_body, split_disclaimers
from gateway.model import Mail

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


def extract(mail: Mail, limits: TextSettings | None = None,
            inventory: archives.Inventory | None = None) -> MessageText:
    """Build the MessageText of a message (blocking: run it in a worker thread). `inventory` is the
    message's shared archive inventory; without one, archives are opened here with the default limits."""
    limits = limits or TextSettings()
    if inventory is None and has_archives(mail):
        inventory = archives.build(mail, archives.Limits())
    members = _Members(inventory)
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
            segments.extend(_name_segments(part.label, part.filenames))
            segments.extend(_attachment_segments(part, budget, part.label in members.packages))
            segments.extend(_member_segments(members.of.get(part.label, ()), members.packages, budget))
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


def _attachment_segments(part: Part, budget: _Budget, package: bool = False) -> list[Segment]:
    kind = "zipdoc" if package else documents.sniff(part.payload, part.content_type, part.filename or "")
    return _document_segments(part.label, kind, part.payload, part.charset, budget)


def has_archives(mail: Mail) -> bool:
    """Whether an attachment is an archive whose members hold text (an Office document is a zip too,
    but is read as one document)."""
    return any(archives.sniff(p.payload) and documents.sniff(p.payload, p.content_type, p.filename or "") != "zipdoc"
               for p in mail.parsed.attachments)


class _Members:
    """The archive members of each attachment (by its label), in the inventory's order, and which files
    are Office or OpenDocument packages: those are read as one document, their zip parts left out."""

    def __init__(self, inventory: archives.Inventory | None) -> None:
        self.of: dict[str, list[archives.File]] = {}
        self.packages: set[str] = set()
        if inventory is None:
            return
        children: dict[str, set[str]] = {}
        for f in inventory.files:
            if f.depth:
                children.setdefault(f.parent, set()).add(f.name)
        top: dict[str, str] = {}         # label -> its attachment's label; absent inside a package
        for f in inventory.files:
            if f.depth and f.parent not in top:
                continue
            root = top.get(f.parent, f.label)
            if f.depth:
                self.of.setdefault(root, []).append(f)
            names = children.get(f.label, set())
            # named or typed as a document, or a zip with an OOXML or ODF package's parts (a .docx sent
            # without a name, its [Content_Types].xml at the end of the zip)
            if "[Content_Types].xml" in names or {"mimetype", "content.xml"} <= names \
                    or documents.sniff(f.data, f.content_type or "", f.name) == "zipdoc":
                self.packages.add(f.label)
            else:
                top[f.label] = root


_MAX_NAME = 1000


def _name_segments(label: str, names: tuple[str, ...]) -> list[Segment]:
    """The file's names, in the ``filename`` zone (not budgeted: a few hundred characters at most)."""
    return [Segment(f"{label} (file name)", name[:_MAX_NAME], "filename") for name in dict.fromkeys(names)
            if name.strip()]


def _member_segments(files: list[archives.File], packages: set[str], budget: _Budget) -> list[Segment]:
    """Names and text of an attachment's archive members; encrypted members have a name only."""
    out: list[Segment] = []
    for f in files:
        out.extend(_name_segments(f.label, f.names))
        if f.encrypted or not f.data:
            continue
        kind = "zipdoc" if f.label in packages else _member_kind(f)
        out.extend(_document_segments(f.label, kind, f.data, None, budget))
    return out


def _member_kind(f: archives.File) -> str | None:
    """A member has no declared type: its bytes and name, and plain UTF-8 text read as text whatever its
    name (what `gzip export` leaves: a member named "export")."""
    kind = documents.sniff(f.data, "", f.name)
    if kind is None and b"\0" not in f.data[:4096] and not archives.sniff(f.data):
        try:
            f.data[:4096].decode("utf-8")
        except UnicodeDecodeError as e:
            if e.start < 4090:         # not just a character cut at the end of the sample
                return None
        return "html" if f.data.lstrip()[:1] == b"<" else "text"      # markup (XHTML, XML): its text only
    return kind


def _document_segments(label: str, kind: str | None, data: bytes, charset: str | None,
                       budget: _Budget) -> list[Segment]:
    if kind is None:
        return []
    if len(data) > budget.limits.max_attachment_bytes:
        budget.unscanned.append(f"{label}: over the {budget.limits.max_attachment_bytes} byte attachment limit")
        return []
    if time.monotonic() > budget.deadline:
        budget.unscanned.append(f"{label}: the {budget.limits.max_seconds:g} s text extraction time ran out")
        return []
    try:
        doc = documents.extract(kind, data, charset, budget.limits, budget.deadline)
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
    inventory = None
    if mail.context.text is None and has_archives(mail):
        # the antivirus and filetype detectors' inventory: the archives are opened once per message
        inventory = await archives.inventory(mail, archives.limits_for(settings.antivirus))
    text = await offload.once(mail, "text", len(mail.raw), lambda: extract(mail, settings.text, inventory))
    # Text read from images and scanned PDF pages (gateway/message/ocr.py, computed once per message too;
    # what OCR could not read within its limits is the `ocr` detector's unscanned.ocr_limits).
    found = await message_ocr(mail, settings)
    return replace(text, segments=text.segments + found.segments) if found.segments else text
