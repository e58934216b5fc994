"""filetype: files dangerous to the department's network, by their TRUE type (policy: Provisions for
Retrieving and Transmitting Information).

Every attachment and archive member (gateway.message.archives) is typed by libmagic on its decoded content;
executables, scripts, disk images (policies/dangerous_types.toml, site-editable) and Office documents
with macros (oletools) are `dangerous_file.<category>`. A name or Content-Type that hides the true
type, a double extension, or a Unicode trick in a name is `dangerous_file.mismatch`. Every name a
mail client might show is evaluated; when they disagree the part is `malformed.ambiguous_filename`.
"""

from __future__ import annotations

import asyncio
import logging
import tomllib
import unicodedata
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import magic

from gateway.config import Settings
from gateway.detectors.base import OptionError, options_with_defaults
from gateway.message import archives
from gateway.message.archives import shown
from gateway.model import Finding, Mail

log = logging.getLogger("gateway.filetype")

DEFAULTS = {"types_file": "dangerous_types.toml", "macros": True, "magic_bytes": 1024 * 1024}
MAGIC_OLE = ("application/x-ole-storage", "application/msword", "application/vnd.ms-excel",
             "application/vnd.ms-powerpoint", "application/cdfv2", "application/vnd.ms-office")
CATEGORY_WORDS = {"executable": "a program", "script": "a script", "disk_image": "a disk image",
                  "macro_document": "an Office document with macros"}

# Families of types that a name or a Content-Type can claim. Two known, different, incompatible
# families are a mismatch; unknown names and application/octet-stream claim nothing.
EXT_FAMILY = {
    "pdf": "pdf", "doc": "ole", "dot": "ole", "xls": "ole", "xlt": "ole", "ppt": "ole", "msg": "ole",
    "docx": "ooxml", "docm": "ooxml", "dotx": "ooxml", "xlsx": "ooxml", "xlsm": "ooxml", "pptx": "ooxml",
    "pptm": "ooxml", "odt": "odf", "ods": "odf", "odp": "odf", "rtf": "rtf",
    "png": "image", "jpg": "image", "jpeg": "image", "gif": "image", "bmp": "image", "tif": "image",
    "tiff": "image", "webp": "image", "heic": "image",
    "txt": "text", "csv": "text", "tsv": "text", "log": "text", "md": "text", "json": "text", "xml": "text",
    "htm": "html", "html": "html", "ics": "text", "vcf": "text",
    "zip": "zip", "7z": "7z", "rar": "rar", "gz": "gzip", "tgz": "gzip", "bz2": "bzip2", "xz": "xz", "tar": "tar",
    "mp3": "audio", "wav": "audio", "m4a": "audio", "mp4": "video", "mov": "video", "avi": "video",
}
MIME_FAMILY = {
    "application/pdf": "pdf", "application/rtf": "rtf", "text/rtf": "rtf", "application/zip": "zip",
    "application/x-zip-compressed": "zip", "application/x-7z-compressed": "7z", "application/x-rar": "rar",
    "application/vnd.rar": "rar", "application/x-rar-compressed": "rar", "application/gzip": "gzip",
    "application/x-gzip": "gzip", "application/x-bzip2": "bzip2", "application/x-xz": "xz",
    "application/x-tar": "tar", "text/html": "html", "application/xml": "text", "application/json": "text",
    "application/csv": "text",
}
COMPATIBLE = {frozenset(p) for p in (("ooxml", "zip"), ("odf", "zip"), ("ole", "ooxml"), ("ole", "odf"),
                                     ("ooxml", "odf"), ("text", "html"), ("gzip", "tar"))}
SAFE_FOR_SCRIPTS = frozenset({"text", "html"})    # a script typed by content but named .txt is not run
# A harmless true type under another name is odd but not a threat: "dummy" text in a part named .png.
HARMLESS = frozenset({"text", "image", "audio", "video"})
DOCUMENT_FAMILIES = frozenset({"pdf", "ole", "ooxml", "odf", "rtf", "image", "text", "html", "audio", "video"})


def mime_family(mime: str) -> str | None:
    mime = mime.lower()
    if mime in MIME_FAMILY:
        return MIME_FAMILY[mime]
    if mime in MAGIC_OLE:
        return "ole"
    if mime.startswith(("application/vnd.openxmlformats-officedocument.", "application/vnd.ms-word.",
                        "application/vnd.ms-excel.", "application/vnd.ms-powerpoint.")):
        return "ooxml"
    if mime.startswith("application/vnd.oasis.opendocument."):
        return "odf"
    for prefix, family in (("image/", "image"), ("audio/", "audio"), ("video/", "video"), ("text/", "text")):
        if mime.startswith(prefix):
            return family
    return None


def extensions(name: str) -> list[str]:
    """'Invoice.PDF.exe. ' -> ['pdf', 'exe']: Windows ignores trailing dots and spaces."""
    stem = name.rstrip(" .")
    return [e.strip().lower() for e in stem.split(".")[1:] if e.strip()]


def unicode_tricks(name: str) -> list[str]:
    """Bidirectional overrides, invisible characters, look-alike dots in a file name."""
    tricks = []
    for c in dict.fromkeys(name):
        cat = unicodedata.category(c)
        if cat in ("Cf", "Cc", "Zl", "Zp") or c in "\u2024\ufe52\uff0e\u3002\u2e31":
            tricks.append(f"U+{ord(c):04X} {unicodedata.name(c, 'control character')}")
    return tricks


class FileType:
    name: ClassVar[str] = "filetype"
    waits: ClassVar[bool] = True        # on archives and documents opened in a worker thread
    kinds: ClassVar[frozenset[str]] = frozenset({"dangerous_file.*", "malformed.ambiguous_filename"})

    def __init__(self, settings: Settings, options: Mapping[str, Any]) -> None:
        opts = options_with_defaults(self.name, options, DEFAULTS)
        self.macros = opts["macros"]
        self.magic_bytes = opts["magic_bytes"]
        self.limits = archives.limits_for(settings.antivirus)
        path = Path(opts["types_file"])
        if not path.is_absolute():
            path = Path(settings.policy.dir) / path
        self.categories = load_types(path)
        self.words = {c: CATEGORY_WORDS.get(c, f"a dangerous file ({c.replace('_', ' ')})")
                      for c in (*self.categories, "macro_document")}
        self.dangerous_ext = {ext: cat for cat, (_, exts) in self.categories.items() for ext in exts}
        self.dangerous_mime = {m: cat for cat, (mimes, _) in self.categories.items() for m in mimes}

    async def check(self, mail: Mail) -> list[Finding]:
        inventory = await archives.inventory(mail, self.limits)
        if not inventory.files:
            return []
        return await asyncio.to_thread(self.examine, inventory.files)     # libmagic, oletools: never on the loop

    def examine(self, files: list[archives.File]) -> list[Finding]:
        findings: list[Finding] = []
        for file in files:
            for finding in self.file_findings(file):
                if finding not in findings:
                    findings.append(finding)
        return findings

    def finding(self, kind: str, file: archives.File, detail: str, *evidence: str) -> Finding:
        return Finding(kind=kind, detector=self.name, part=file.label, detail=detail, evidence=evidence)

    def file_findings(self, file: archives.File) -> list[Finding]:
        out: list[Finding] = []
        names = file.names
        if len({n.casefold() for n in names}) > 1:
            out.append(self.finding("malformed.ambiguous_filename", file,
                                    "The attachment's name differs between its headers, so mail clients may "
                                    "show different files: " + ", ".join(repr(shown(n)) for n in names)))
        for name in names:
            out += self.name_findings(file, name)
        if file.encrypted or not file.data:
            return out
        mime, description = self.true_type(file.data)
        category = self.dangerous_mime.get(mime)
        true_family = category or mime_family(mime)
        for name in names or ("",):
            exts = extensions(name)
            claimed = EXT_FAMILY.get(exts[-1]) if exts else None
            if category == "script" and claimed in SAFE_FOR_SCRIPTS:
                continue        # a script named .txt opens in a text editor
            if category:
                out.append(self.finding(f"dangerous_file.{category}", file,
                                        f"{shown(name) or 'The file'} is {self.words[category]} "
                                        f"({description[:80]})", mime))
            if (category and category != "script" and exts and self.dangerous_ext.get(exts[-1]) != category) \
                    or _incompatible(claimed, true_family):
                out.append(self.finding("dangerous_file.mismatch", file,
                                        f"{shown(name)} is named as {exts[-1].upper()} but is really "
                                        f"{description[:80]}", mime))
        declared = mime_family(file.content_type or "")
        script_as_text = category == "script" and declared in SAFE_FOR_SCRIPTS
        if not script_as_text and (_incompatible(declared, true_family) or (category and declared
                                                                            and category != "script")):
            out.append(self.finding("dangerous_file.mismatch", file,
                                    f"{shown(file.name) or 'The file'} is declared as {file.content_type} but is "
                                    f"really {description[:80]}", mime))
        if self.macros and (mime in MAGIC_OLE or description.startswith("Composite Document File")) \
                and has_macros(file):
            out.append(self.finding("dangerous_file.macro_document", file,
                                    f"{shown(file.name) or 'The file'} holds Office macros (VBA or Excel 4)"))
        return out

    def name_findings(self, file: archives.File, name: str) -> list[Finding]:
        out = []
        tricks = unicode_tricks(name)
        if tricks:
            out.append(self.finding("dangerous_file.mismatch", file,
                                    f"The name {shown(name)!r} hides its real extension with "
                                    f"{', '.join(tricks[:3])}", *tricks[:3]))
        exts = extensions(name)
        category = self.dangerous_ext.get(exts[-1]) if exts else None
        if category:
            out.append(self.finding(f"dangerous_file.{category}", file,
                                    f"{shown(name)} is {self.words[category]} (by its name)", exts[-1]))
            if len(exts) > 1 and EXT_FAMILY.get(exts[-2]) in DOCUMENT_FAMILIES | {"zip"}:
                out.append(self.finding("dangerous_file.mismatch", file,
                                        f"{shown(name)} has a double extension: it looks like a "
                                        f"{exts[-2].upper()} but is a {exts[-1].upper()}", f".{exts[-2]}.{exts[-1]}"))
            elif "   " in name:
                out.append(self.finding("dangerous_file.mismatch", file,
                                        f"{shown(name)!r} pads its name with spaces to hide its extension"))
        return out

    def true_type(self, data: bytes) -> tuple[str, str]:
        head = data[: self.magic_bytes]
        try:
            return magic.from_buffer(head, mime=True).lower(), magic.from_buffer(head)
        except Exception as e:          # libmagic on hostile input: unknown, never a crash
            log.warning("libmagic failed: %s", e)
            return "application/octet-stream", "unknown data"


def _incompatible(claimed: str | None, true: str | None) -> bool:
    return bool(claimed and true and claimed != true and true not in HARMLESS
                and frozenset((claimed, true)) not in COMPATIBLE)


def has_macros(file: archives.File) -> bool:
    with warnings.catch_warnings():         # oletools' pyparsing grammar uses deprecated names
        warnings.simplefilter("ignore", DeprecationWarning)
        from oletools.olevba import VBA_Parser

    try:
        parser = VBA_Parser(file.name or "file", data=file.data)
        try:
            return bool(parser.detect_vba_macros() or parser.detect_xlm_macros())
        finally:
            parser.close()
    except Exception as e:              # not an Office file after all, or a broken one: clamd still scans it
        log.info("oletools could not read %s: %s", file.label, type(e).__name__)
        return False


def load_types(path: Path) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """category -> (true MIME types, name extensions), from the site-editable list."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise OptionError(f"detector 'filetype': types_file {path}: {e}") from None
    categories = {}
    for category, table in data.items():
        if not isinstance(table, dict) or set(table) - {"mime", "extensions"}:
            raise OptionError(f"detector 'filetype': {path}: [{category}] takes only mime and extensions")
        categories[category] = (frozenset(m.lower() for m in table.get("mime", [])),
                                frozenset(e.lower().lstrip(".") for e in table.get("extensions", [])))
    return categories
