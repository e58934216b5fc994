"""The text and document properties of common attachments, within limits (used by gateway/message/text.py).

Formats: PDF (pypdf), Office Open XML (DOCX, XLSX, PPTX), OpenDocument (ODT, ODS, ODP), RTF, HTML and
plain text or CSV. The zip-based formats are read with zipfile and a tag-stripping pass over their XML
rather than a full document library: it is several times faster, reads headers, footers, notes and
comments too, and never resolves entities. Every read is bounded (member size, compression ratio,
page count, a deadline); what does not fit raises `Unreadable` or sets `Document.truncated`.
"""

from __future__ import annotations

import html
import io
import re
import time
import zipfile
from dataclasses import dataclass

from gateway.config import TextSettings
from gateway.message.plaintext import html_text

_TEXT_NAMES = (".txt", ".csv", ".tsv", ".log", ".md", ".text", ".json", ".xml", ".ics", ".vcf")
_OOXML = {"word/document.xml": "docx", "xl/workbook.xml": "xlsx", "ppt/presentation.xml": "pptx"}


class Unreadable(Exception):
    """The document could not be read within the limits (the message says why, for a reviewer)."""


@dataclass(frozen=True, slots=True)
class Document:
    text: str
    properties: str = ""     # "title: ...\nsubject: ...\nMSIP_Label_..._Name: Confidential"
    truncated: str = ""      # why only part of the text was read


def sniff(data: bytes, content_type: str, filename: str) -> str | None:
    """The format to read, from the bytes first (a renamed file is still read), then type and name."""
    head = data[:8].lstrip()
    name = filename.lower()
    if head.startswith(b"%PDF") or b"%PDF-" in data[:1024]:
        return "pdf"
    if head.startswith(b"{\\rtf"):
        return "rtf"
    if data.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):       # OLE2: .doc, .xls, .ppt, .msg
        return "ole"
    if data.startswith(b"PK\x03\x04"):
        if name.endswith((".docx", ".docm", ".dotx", ".xlsx", ".xlsm", ".pptx", ".pptm", ".odt", ".ods", ".odp")):
            return "zipdoc"
        if content_type.startswith(("application/vnd.openxmlformats", "application/vnd.oasis.opendocument",
                                    "application/vnd.ms-")):
            return "zipdoc"
        return "zipdoc" if b"[Content_Types].xml" in data[:4096] or b"mimetypeapplication/vnd.oasis" in data[:200] \
            else None
    if content_type == "text/html" or name.endswith((".html", ".htm")):
        return "html"
    if content_type.startswith("text/") or content_type in ("application/csv", "application/json") \
            or name.endswith(_TEXT_NAMES):
        return "text" if b"\x00" not in data[:4096] else None
    return None


def extract(kind: str, data: bytes, charset: str | None, limits: TextSettings, deadline: float) -> Document:
    if kind == "pdf":
        return _pdf(data, limits, deadline)
    if kind == "zipdoc":
        return _zipdoc(data, limits, deadline)
    if kind == "rtf":
        return _rtf(data.decode("latin-1"))
    if kind == "ole":
        return _ole_strings(data)
    text = decode(data, charset)
    if kind == "html":
        visible, hidden = html_text(text)
        return Document("\n".join(t for t in (visible, hidden) if t))
    return Document(text)


def decode(data: bytes, charset: str | None) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    for candidate in (charset, "utf-8"):
        if candidate:
            try:
                return data.decode(candidate)
            except (LookupError, UnicodeDecodeError):
                continue
    return data.decode("cp1252", errors="replace")


# --- PDF ------------------------------------------------------------------------------------------------

def _pdf(data: bytes, limits: TextSettings, deadline: float) -> Document:
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    if b"%%EOF" not in data:
        # pypdf would walk the whole file backwards line by line looking for it (150 ms per MB) and fail
        # the same way: a truncated or fake PDF.
        raise Unreadable("the PDF could not be parsed (EOF marker not found)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unreadable("the PDF is encrypted")
        pages = reader.pages
        count = len(pages)
    except PdfReadError as e:
        raise Unreadable(f"the PDF could not be parsed ({str(e)[:80]})") from None
    except (NotImplementedError, KeyError) as e:
        raise Unreadable(f"the PDF could not be opened ({type(e).__name__})") from None
    texts: list[str] = []
    truncated = ""
    for i in range(count):
        if i >= limits.max_pages:
            truncated = f"only the first {limits.max_pages} of {count} PDF pages read"
            break
        if time.monotonic() > deadline:
            truncated = f"time limit reached after {i} of {count} PDF pages"
            break
        try:
            texts.append(pages[i].extract_text() or "")
        except Exception as e:   # one bad page: report it, keep the rest
            truncated = f"PDF page {i + 1} could not be read ({type(e).__name__})"
    props: list[str] = []
    try:
        meta = reader.metadata or {}
        for key, value in meta.items():
            if isinstance(value, str | bytes) and key not in ("/Producer", "/Creator", "/CreationDate", "/ModDate"):
                text = value.decode("latin-1") if isinstance(value, bytes) else value
                props.append(f"{key.lstrip('/')}: {text}")
    except Exception:
        pass
    return Document("\n".join(texts), "\n".join(props), truncated)


# --- Office Open XML and OpenDocument ------------------------------------------------------------------

_PARA_END = re.compile(r"</(?:w:p|a:p|text:p|text:h|w:tr|table:table-row|row)>|<(?:w:br|w:cr|a:br|text:line-break)"
                       r"\b[^>]*/>")
_TAB = re.compile(r"<(?:w:tab|text:tab|text:s)\b[^>]*/>|</(?:w:tc|table:table-cell|c)>")
_TAG = re.compile(r"<[^>]*>")
_SHARED_REF = re.compile(r'(<c\b[^>]*\bt="s"[^>]*>)\s*<v>(\d{1,9})</v>', re.S)
_SHARED_ITEM = re.compile(r"<si\b[^>]*>(.*?)</si>", re.S)
# Field codes are not text; tracked deletions are kept: the recipient can show them, so they are disclosed.
_FIELD_CODES = re.compile(r"<w:instrText\b.*?</w:instrText>", re.S)
_PROPERTY = re.compile(r"<(?:[\w]+:)?(title|subject|keywords|description|category|keyword|contentStatus)\b[^>]*>"
                       r"([^<]{1,2000})</", re.S)
_CUSTOM = re.compile(r'<property\b[^>]*\bname="([^"]{1,200})"[^>]*>\s*<[^>]+>([^<]{0,2000})</', re.S)
_ODF_USER = re.compile(r'<meta:user-defined\b[^>]*meta:name="([^"]{1,200})"[^>]*>([^<]{0,2000})</', re.S)


def xml_text(xml: str) -> str:
    """Text of an Office/OpenDocument XML part: paragraphs on lines, cells tab-separated, entities decoded."""
    xml = _FIELD_CODES.sub("", xml)
    xml = _PARA_END.sub("\n", xml)
    xml = _TAB.sub("\t", xml)
    return html.unescape(_TAG.sub("", xml))


def _member_order(name: str) -> tuple:
    number = re.search(r"(\d+)\.xml$", name)
    return (re.sub(r"\d+\.xml$", "", name), int(number.group(1)) if number else 0)


def _zipdoc(data: bytes, limits: TextSettings, deadline: float) -> Document:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = {i.filename: i for i in archive.infolist()}
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise Unreadable(f"the document's zip container could not be read ({str(e)[:60]})") from None
    if "mimetype" in infos or "content.xml" in infos:
        text_members = [n for n in ("content.xml", "styles.xml") if n in infos]
        prop_members = [n for n in ("meta.xml",) if n in infos]
    else:
        kind = next((k for m, k in _OOXML.items() if m in infos), None)
        if kind is None:
            raise Unreadable("the zip file is not an Office document")
        if kind == "docx":
            pattern = re.compile(r"word/(?:document|header\d*|footer\d*|footnotes|endnotes|comments)\.xml$")
        elif kind == "xlsx":
            pattern = re.compile(r"xl/(?:worksheets/sheet\d+|comments\d*)\.xml$")
        else:
            pattern = re.compile(r"ppt/(?:slides/slide\d+|notesSlides/notesSlide\d+|comments/comment\d+)\.xml$")
        text_members = sorted((n for n in infos if pattern.match(n)), key=_member_order)
        prop_members = [n for n in ("docProps/core.xml", "docProps/custom.xml", "docProps/app.xml") if n in infos]
    texts: list[str] = []
    truncated = ""
    unpacked = 0
    shared: list[str] = []
    if "xl/sharedStrings.xml" in infos:
        xml = _read_member(archive, infos["xl/sharedStrings.xml"], limits, unpacked)
        unpacked += len(xml)
        shared = [xml_text(item) for item in _SHARED_ITEM.findall(xml)]
    for count, name in enumerate(text_members):
        if count >= limits.max_pages:
            truncated = f"only {limits.max_pages} of {len(text_members)} document parts read"
            break
        if time.monotonic() > deadline:
            truncated = f"time limit reached after {count} of {len(text_members)} document parts"
            break
        xml = _read_member(archive, infos[name], limits, unpacked)
        unpacked += len(xml)
        if name.startswith("xl/worksheets/"):
            xml = _SHARED_REF.sub(lambda m: m.group(1) + _shared(shared, m.group(2)), xml)
        texts.append(xml_text(xml))
    props: list[str] = []
    for name in prop_members:
        xml = _read_member(archive, infos[name], limits, unpacked)
        if name.endswith("app.xml"):
            continue
        props += [f"{k}: {html.unescape(v.strip())}" for k, v in _PROPERTY.findall(xml) if v.strip()]
        props += [f"{k}: {html.unescape(v.strip())}" for k, v in _CUSTOM.findall(xml) + _ODF_USER.findall(xml)]
    return Document("\n".join(texts), "\n".join(props), truncated)


def _shared(strings: list[str], index: str) -> str:
    """A sheet cell's shared string, put back in its cell (escaped again: it is stripped as XML next)."""
    i = int(index)
    return html.escape(strings[i], quote=False) if i < len(strings) else ""


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: TextSettings, unpacked: int) -> str:
    if info.file_size + unpacked > limits.max_unpacked_bytes:
        raise Unreadable(f"the document unpacks to more than {limits.max_unpacked_bytes} bytes")
    if info.compress_size and info.file_size / info.compress_size > limits.max_ratio and info.file_size > 1 << 20:
        raise Unreadable(f"{info.filename} has a compression ratio over {limits.max_ratio} (a zip bomb?)")
    try:
        with archive.open(info) as f:
            raw = f.read(limits.max_unpacked_bytes + 1)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as e:
        raise Unreadable(f"{info.filename} could not be unpacked ({type(e).__name__})") from None
    if len(raw) > limits.max_unpacked_bytes:
        raise Unreadable(f"the document unpacks to more than {limits.max_unpacked_bytes} bytes")
    return raw.decode("utf-8", errors="replace")


# --- legacy binary Office files -------------------------------------------------------------------------

_ASCII_RUN = re.compile(rb"[\x20-\x7e\t\r\n]{6,}")
_UTF16_RUN = re.compile(rb"(?:[\x20-\x7e\t\r\n\xa0-\xff]\x00){6,}")


def _ole_strings(data: bytes) -> Document:
    """Best effort for .doc/.xls/.ppt/.msg (OLE2): the text runs a `strings` tool would find, in 8-bit and
    UTF-16 form. Word and Excel keep their text and the SummaryInformation properties (title, subject,
    keywords) as such runs, so markers and numbers are found; layout is lost."""
    runs = [m.decode("latin-1") for m in _ASCII_RUN.findall(data)]
    runs += [m.decode("utf-16-le", errors="ignore") for m in _UTF16_RUN.findall(data)]
    return Document("\n".join(r for r in runs if sum(c.isalnum() for c in r) >= 4))


# --- RTF ------------------------------------------------------------------------------------------------

_RTF_TOKEN = re.compile(r"\\([a-z]{1,32})(-?\d{1,10})? ?|\\'([0-9a-fA-F]{2})|\\([^a-z])|([{}])|[\r\n]+|([^\\{}\r\n]+)")
_RTF_SKIP = frozenset({"fonttbl", "colortbl", "stylesheet", "listtable", "listoverridetable", "rsidtbl", "generator",
                       "pict", "object", "themedata", "colorschememapping", "datastore", "latentstyles", "xmlnstbl",
                       "revtbl", "filetbl", "fldinst", "operator", "author", "company",
                       "creatim", "revtim", "printim", "buptim", "pgdsctbl", "mmathPr", "wgrffmtfilter",
                       "datafield", "bkmkstart", "bkmkend"})
_RTF_PROPS = frozenset({"title", "subject", "keywords", "doccomm", "category"})
_RTF_BREAK = {"par": "\n", "line": "\n", "row": "\n", "sect": "\n", "page": "\n", "tab": "\t", "cell": "\t",
              "emdash": "—", "endash": "–", "bullet": "•", "lquote": "‘", "rquote": "’", "ldblquote": "“",
              "rdblquote": "”", "~": " "}


def _rtf(source: str) -> Document:
    """Text and \\info properties of an RTF document: a small tokenizer, enough for what text detectors need."""
    out: list[str] = []
    props: list[str] = []
    stack: list[tuple[bool, str | None, int]] = []
    skip, prop, uc, pending_skip = False, None, 1, 0
    prop_text: list[str] = []
    star = False
    for m in _RTF_TOKEN.finditer(source):
        word, arg, hexchar, symbol, brace, text = m.groups()
        if brace == "{":
            stack.append((skip, prop, uc))
            star = False
            continue
        if brace == "}":
            if prop and (not stack or stack[-1][1] != prop):
                props.append(f"{prop}: {''.join(prop_text).strip()}")
                prop_text = []
            skip, prop, uc = stack.pop() if stack else (False, None, 1)
            continue
        target = prop_text if prop else out
        if word:
            if word in _RTF_SKIP or star:
                skip = True
                star = False
            elif word in _RTF_PROPS:
                prop, prop_text = word, []
            elif word == "uc" and arg:
                uc = int(arg)
            elif word == "u" and arg and not skip:
                code = int(arg)
                target.append(chr(code + 65536 if code < 0 else code) if 0 <= code + (65536 if code < 0 else 0)
                              < 0x110000 else "")
                pending_skip = uc
            elif word in _RTF_BREAK and not skip:
                target.append(_RTF_BREAK[word])
            continue
        if symbol:
            if symbol == "*":
                star = True
            elif not skip and symbol in "\\{}":
                target.append(symbol)
            elif not skip and symbol == "~":
                target.append(" ")
            continue
        if hexchar:
            if pending_skip:
                pending_skip -= 1
            elif not skip:
                target.append(bytes([int(hexchar, 16)]).decode("cp1252", errors="replace"))
            continue
        if text and not skip:
            if pending_skip:
                drop = min(pending_skip, len(text))
                text, pending_skip = text[drop:], pending_skip - drop
            target.append(text)
    return Document("".join(out), "\n".join(props))
