"""Test files made at test time: EICAR (never committed), a minimal PE, an Office macro project,
clean documents and images, archives. Everything is built from pieces here, nothing is downloaded."""

from __future__ import annotations

import io
import struct
import subprocess
import tarfile
import zipfile
import zlib
from email.message import EmailMessage
from pathlib import Path


def eicar() -> bytes:
    """The EICAR anti-virus test string, assembled so that no file in the repository contains it."""
    head = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$"
    tail = "EICAR-STANDARD-ANTIVIRUS-" + "TEST-FILE!$H+H*"
    return (head + tail).encode("ascii")


def pe_executable() -> bytes:
    """A minimal Windows PE header (MZ stub + PE signature + COFF + optional header): libmagic says PE32."""
    mz = bytearray(b"MZ" + b"\0" * 58 + struct.pack("<I", 64))
    coff = struct.pack("<HHIIIHH", 0x14C, 1, 0, 0, 0, 224, 0x0102)
    optional = struct.pack("<HBB", 0x10B, 14, 0) + b"\0" * 221
    section = b".text\0\0\0" + struct.pack("<IIIIIIHHI", 0x1000, 0x1000, 0x200, 0x200, 0, 0, 0, 0, 0x60000020)
    body = bytes(mz) + b"PE\0\0" + coff + optional + section
    return body + b"\0" * (0x400 - len(body)) + b"\xc3" * 0x200


# --- a compound file (OLE2) with a VBA project, written by hand -------------------------------------

_FREE, _END, _FAT, _NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF


def _direntry(name: str, kind: int, left: int = _NOSTREAM, right: int = _NOSTREAM, child: int = _NOSTREAM,
              start: int = _END, size: int = 0) -> bytes:
    encoded = name.encode("utf-16-le") + b"\0\0"
    return (encoded.ljust(64, b"\0") + struct.pack("<HBB", len(encoded), kind, 1)
            + struct.pack("<III", left, right, child) + b"\0" * 16 + b"\0" * 4 + b"\0" * 16
            + struct.pack("<IQ", start, size))


def vba_project_bin() -> bytes:
    """An OLE2 file holding the storages and streams of a VBA project (PROJECT, VBA/dir, VBA/_VBA_PROJECT),
    as Office puts in word/vbaProject.bin; oletools reports it as containing macros."""
    streams = {
        "PROJECT": b'ID="{00000000-0000-0000-0000-000000000000}"\r\nDocument=ThisDocument/&H00000000\r\n',
        "dir": b"\x01" + b"Attribut\x00e VB_Name = \"ThisDocument\"\r\n",
        "_VBA_PROJECT": b"\xcc\x61\xff\xff\x00\x00\x00",
    }
    sector = 512
    per_stream = 4096 // sector                  # 4096 bytes each: at the mini-stream cutoff, regular sectors
    data_start = 3                               # sector 0: FAT, 1-2: directory
    starts = {name: data_start + i * per_stream for i, name in enumerate(streams)}
    # Tree: Root -> VBA (right: PROJECT); VBA -> dir (right: _VBA_PROJECT)
    entries = [
        _direntry("Root Entry", 5, child=1),
        _direntry("VBA", 1, right=2, child=3),
        _direntry("PROJECT", 2, start=starts["PROJECT"], size=4096),
        _direntry("dir", 2, right=4, start=starts["dir"], size=4096),
        _direntry("_VBA_PROJECT", 2, start=starts["_VBA_PROJECT"], size=4096),
    ]
    directory = b"".join(entries).ljust(2 * sector, b"\0")
    fat = [_FAT, 2, _END]
    for name in streams:
        first = starts[name]
        fat += [first + i + 1 for i in range(per_stream - 1)] + [_END]
    fat_sector = struct.pack(f"<{len(fat)}I", *fat).ljust(sector, b"\xff")
    header = (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 16
              + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6) + b"\0" * 6
              + struct.pack("<IIIIIIIII", 0, 1, 1, 0, 4096, _END, 0, _END, 0)
              + struct.pack("<I", 0) + struct.pack("<108I", *([_FREE] * 108)))
    body = b"".join(content.ljust(4096, b"\0") for content in streams.values())
    return header + fat_sector + directory + body


# --- clean documents ----------------------------------------------------------------------------------

def pdf() -> bytes:
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\0" + b"\xff\x00\x00" * 4 for _ in range(4))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def jpeg() -> bytes:
    """A JFIF header and an end marker: enough for libmagic's and clamd's type recognition."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    return b"\xff\xd8" + app0 + b"\xff\xdb\x00\x43\x00" + bytes(range(1, 65)) + b"\xff\xd9"


def csv() -> bytes:
    return b"date,item,amount\r\n2026-11-01,paper,12.50\r\n2026-11-02,toner,80.00\r\n"


def ooxml(extra: dict[str, bytes] | None = None, macro: bool = False) -> bytes:
    """A minimal Word document (docx; docm parts when macro=True)."""
    main = "application/vnd.ms-word.document.macroEnabled.main+xml" if macro else \
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
    types = ('<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
             'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
             'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
             f'<Override PartName="/word/document.xml" ContentType="{main}"/></Types>')
    rels = ('<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
            '2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/'
            '2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>')
    doc = ('<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
           'wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>Quarterly report</w:t></w:r></w:p></w:body>'
           '</w:document>')
    members = {"[Content_Types].xml": types.encode(), "_rels/.rels": rels.encode(), "word/document.xml": doc.encode()}
    if macro:
        members["word/vbaProject.bin"] = vba_project_bin()
    members.update(extra or {})
    return zip_of(members, deflate=True)


# --- archives -------------------------------------------------------------------------------------------

def zip_of(members: dict[str, bytes], deflate: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_gz_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def seven_zip_of(members: dict[str, bytes], password: str | None = None) -> bytes:
    import py7zr

    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w", password=password) as archive:
        for name, data in members.items():
            archive.writestr(data, name)
    return buf.getvalue()


def encrypted_zip(tmp: Path, name: str, data: bytes, password: str = "secret") -> bytes:
    """ZipCrypto-encrypted zip made with 7z (the standard library cannot write encrypted zips)."""
    source = tmp / name
    source.write_bytes(data)
    target = tmp / "encrypted.zip"
    subprocess.run(["7z", "a", "-tzip", f"-p{password}", str(target), str(source)], check=True,
                   capture_output=True, timeout=30)
    return target.read_bytes()


def zip_bomb(expanded: int = 64 * 1024 * 1024) -> bytes:
    """One member of zeros, deflated about 1000:1, written in pieces so the test never holds it expanded."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("zeros.bin", "w", force_zip64=True) as f:
        block = b"\0" * (1024 * 1024)
        for _ in range(expanded // len(block)):
            f.write(block)
    return buf.getvalue()


# --- messages ---------------------------------------------------------------------------------------------

def message_with(files: list[tuple[str, bytes, str]], *, sender: str = "x@outside.test",
                 to: str = "staff@example.gov", subject: str = "Files", cte: str | None = None) -> bytes:
    """A message with attachments: (file name, content, content type); cte forces a transfer encoding."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Date"] = "Sun, 29 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = f"<files-{abs(hash(subject))}@example.gov>"
    msg.set_content("Please find the files attached.\n")
    for name, data, ctype in files:
        maintype, _, subtype = ctype.partition("/")
        if maintype == "text" and cte:
            msg.add_attachment(data.decode("latin-1"), subtype=subtype, filename=name, cte=cte)
        else:
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name, cte=cte or "base64")
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
