"""Builders for content-detector tests: messages with bodies and attachments, documents made at test time."""

from __future__ import annotations

import io
import time
from email.message import EmailMessage

from gateway.config import Settings
from gateway.message import mime
from gateway.model import Direction, Envelope, Mail


def message(body: str = "", subject: str = "Note", html: str | None = None,
            attachments: tuple[tuple[str, str, bytes], ...] = (), headers: dict[str, str] | None = None,
            sender: str = "alice@example.gov", to: str = "bob@example.org") -> bytes:
    """A real MIME message: text (and HTML) body plus (filename, content type, bytes) attachments."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Date"] = "Sun, 29 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = f"<content-{abs(hash((subject, body)))}@example.gov>"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body or "See attached.\n")
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, ctype, data in attachments:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def mail(raw: bytes, direction: Direction = Direction.OUTBOUND) -> Mail:
    """A Mail as the pipeline builds it, without the SMTP front end."""
    return Mail(id="test", envelope=Envelope("alice@example.gov", ("bob@example.org",), "127.0.0.1"), raw=raw,
                parsed=mime.parse(raw), direction=direction, received_at=time.time())


async def run(detector_class, raw: bytes, options: dict | None = None, settings: Settings | None = None):
    detector = detector_class(settings or Settings(), options or {})
    return await detector.check(mail(raw))


# --- documents ------------------------------------------------------------------------------------------

def pdf(lines: list[str], info: dict[str, str] | None = None) -> bytes:
    """A minimal one-page PDF written by hand (Helvetica text, an /Info dictionary), with a correct xref."""
    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    content = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({esc(line)}) Tj T*" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        "<< " + " ".join(f"/{k} ({esc(v)})" for k, v in (info or {}).items()) + " >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(f"{i} 0 obj\n{body}\nendobj\n".encode("latin-1"))
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 6 0 R >>\nstartxref\n{xref}\n%%EOF\n"
              .encode())
    return out.getvalue()


def docx(paragraphs: list[str], header: str = "", title: str = "", custom: dict[str, str] | None = None) -> bytes:
    import docx as python_docx
    document = python_docx.Document()
    for p in paragraphs:
        document.add_paragraph(p)
    if header:
        document.sections[0].header.paragraphs[0].text = header
    document.core_properties.title = title
    out = io.BytesIO()
    document.save(out)
    data = out.getvalue()
    return _with_custom_properties(data, custom) if custom else data


def _with_custom_properties(data: bytes, custom: dict[str, str]) -> bytes:
    """Add docProps/custom.xml (as Office writes sensitivity labels: MSIP_Label_<guid>_Name)."""
    import zipfile
    props = "".join(
        f'<property fmtid="{{D5CDD505-2E9C-101B-9397-08002B2CF9AE}}" pid="{i}" name="{k}">'
        f"<vt:lpwstr>{v}</vt:lpwstr></property>" for i, (k, v) in enumerate(custom.items(), 2))
    xml = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Properties xmlns="http://schemas.openxmlformats.org/'
           'officeDocument/2006/custom-properties" xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/'
           f'docPropsVTypes">{props}</Properties>')
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        dst.writestr("docProps/custom.xml", xml)
    return out.getvalue()


def xlsx(rows: list[list[object]], subject: str = "") -> bytes:
    import openpyxl
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    workbook.properties.subject = subject
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def pptx(title: str, body: str, notes: str = "") -> bytes:
    import pptx as python_pptx
    deck = python_pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = title
    slide.placeholders[1].text = body
    if notes:
        slide.notes_slide.notes_text_frame.text = notes
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def odt(paragraphs: list[str], title: str = "") -> bytes:
    from odf import dc
    from odf.opendocument import OpenDocumentText
    from odf.text import P
    document = OpenDocumentText()
    for p in paragraphs:
        document.text.addElement(P(text=p))
    if title:
        document.meta.addElement(dc.Title(text=title))
    out = io.BytesIO()
    document.write(out)
    return out.getvalue()


def rtf(paragraphs: list[str], title: str = "") -> bytes:
    info = f"{{\\info{{\\title {title}}}}}" if title else ""
    body = "\\par\n".join(p.replace("\\", "\\\\").replace("{", "\\{").replace("}", "\\}") for p in paragraphs)
    return (f"{{\\rtf1\\ansi\\deff0{{\\fonttbl{{\\f0 Times New Roman;}}}}{info}\n\\f0\\fs24 {body}\\par\n}}"
            .encode("latin-1"))
