"""filetype and the file-name reading in gateway.message.mime, on messages parsed as the pipeline parses them."""

from __future__ import annotations

import binascii
import dataclasses

import pytest

from gateway import config
from gateway.detectors import OptionError
from gateway.detectors.filetype import FileType, extensions, unicode_tricks
from gateway.message import mime
from gateway.model import Direction, Envelope, Mail
from tests.support import files


def mail_of(raw: bytes) -> Mail:
    return Mail(id="t1", envelope=Envelope("x@outside.test", ("staff@example.gov",)), raw=raw,
                parsed=mime.parse(raw), direction=Direction.INBOUND, received_at=0.0)


async def check(attachments: list[tuple[str, bytes, str]], **options) -> list[tuple[str, str]]:
    detector = FileType(config.Settings(), options)
    findings = await detector.check(mail_of(files.message_with(attachments)))
    return [(f.kind, f.detail) for f in findings]


def kinds(found: list[tuple[str, str]]) -> set[str]:
    return {k for k, _ in found}


async def test_clean_files_have_no_findings():
    assert await check([("a.pdf", files.pdf(), "application/pdf"), ("b.csv", files.csv(), "text/csv"),
                        ("c.docx", files.ooxml(), "application/msword"), ("d.png", files.png(), "image/png"),
                        ("e.jpeg", files.jpeg(), "image/jpeg"), ("notes.txt", b"#!/bin/sh\necho hi\n", "text/plain"),
                        ("f.csv", files.csv(), "application/octet-stream")]) == []


@pytest.mark.parametrize("name,kind", [
    ("payload.js", "dangerous_file.script"), ("run.vbs", "dangerous_file.script"),
    ("setup.ps1", "dangerous_file.script"), ("go.bat", "dangerous_file.script"), ("x.hta", "dangerous_file.script"),
    ("link.lnk", "dangerous_file.script"), ("app.jar", "dangerous_file.script"),
    ("disk.iso", "dangerous_file.disk_image"), ("disk.img", "dangerous_file.disk_image"),
    ("disk.vhd", "dangerous_file.disk_image"), ("screen.scr", "dangerous_file.executable"),
    ("trailing.exe. ", "dangerous_file.executable"),
])
async def test_dangerous_by_name(name, kind):
    found = await check([(name, b"harmless looking text\n", "application/octet-stream")])
    assert kind in kinds(found), found


@pytest.mark.parametrize("data,kind,word", [
    (files.pe_executable(), "dangerous_file.executable", "PE32 executable"),
    (b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x02\x00\x3e\x00" + b"\0" * 100, "dangerous_file.executable", "ELF"),
    (b"\xcf\xfa\xed\xfe" + b"\0" * 100, "dangerous_file.executable", "Mach-O"),
    (b"\0" * 32768 + b"\x01CD001\x01" + b"\0" * 3000, "dangerous_file.disk_image", "ISO 9660"),
    (b"L\0\0\0\x01\x14\x02\0\0\0\0\0\xc0\0\0\0\0\0\0F" + b"\0" * 100, "dangerous_file.script", "shortcut"),
    (b"@echo off\r\ndel /q *\r\n", "dangerous_file.script", "batch"),
])
async def test_dangerous_by_true_type_whatever_the_name(data, kind, word):
    found = await check([("holiday-photo.jpg", data, "image/jpeg")])
    assert any(k == kind and word in d for k, d in found), found
    assert any(k == "dangerous_file.mismatch" and "named as JPG" in d for k, d in found), found


async def test_double_extension_and_padding():
    found = await check([("invoice.pdf.exe", b"text", "application/pdf")])
    assert ("dangerous_file.mismatch", "invoice.pdf.exe has a double extension: it looks like a PDF but is a EXE") \
        in found
    found = await check([("invoice.pdf                          .scr", b"text", "application/pdf")])
    assert "dangerous_file.mismatch" in kinds(found)


async def test_content_type_hiding_another_type():
    found = await check([("scan", files.zip_of({"a.txt": b"x"}), "image/png")])
    assert found == [("dangerous_file.mismatch", "scan is declared as image/png but is really Zip archive data, "
                                                 "at least v2.0 to extract, compression method=store")]
    # A harmless type under another name is not a threat (seen in real mail: "dummy" text named .png).
    assert await check([("scan.png", b"dummy\n", "image/png"), ("b.pdf", files.png(), "application/pdf")]) == []


async def test_macro_document_inside_a_zip_and_bare_ole():
    found = await check([("docs.zip", files.zip_of({"q3.docm": files.ooxml(macro=True)}), "application/zip")])
    assert any(k == "dangerous_file.macro_document" for k, _ in found), found
    found = await check([("legacy.doc", files.vba_project_bin(), "application/msword")])
    assert "dangerous_file.macro_document" in kinds(found)
    assert await check([("legacy.doc", files.vba_project_bin(), "application/msword")], macros=False) == []


async def test_members_of_archives_are_checked_by_name_and_type():
    archive = files.tar_gz_of({"readme.txt": b"hi", "tools/run.pdf": files.pe_executable()})
    found = await check([("bundle.tar.gz", archive, "application/gzip")])
    assert any(k == "dangerous_file.executable" and d.startswith("tools/run.pdf is a program") for k, d in found)


async def test_site_list_of_dangerous_types(tmp_path):
    types = tmp_path / "types.toml"
    types.write_text('[spreadsheet]\nextensions = ["xlsx"]\n')
    found = await check([("a.xlsx", b"x", "application/octet-stream"), ("b.exe", b"y", "application/octet-stream")],
                        types_file=str(types))
    assert found == [("dangerous_file.spreadsheet", "a.xlsx is a dangerous file (spreadsheet) (by its name)")]
    types.write_text('[x]\nmimes = []\n')
    with pytest.raises(OptionError, match="takes only mime and extensions"):
        FileType(config.Settings(), {"types_file": str(types)})


def test_unicode_tricks_and_extensions():
    assert unicode_tricks("invoice\u202efdp.exe") == ["U+202E RIGHT-TO-LEFT OVERRIDE"]
    assert unicode_tricks("report\u200b.pdf") == ["U+200B ZERO WIDTH SPACE"]
    assert unicode_tricks("report\uff0eexe") == ["U+FF0E FULLWIDTH FULL STOP"]
    assert unicode_tricks("Résumé – 2026.pdf") == []
    assert extensions("Invoice.PDF.exe. ") == ["pdf", "exe"]
    assert extensions("noextension") == []


# --- file names as mail clients read them -----------------------------------------------------------

def leaf(headers: str) -> mime.Part:
    raw = ("From: a@b\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
           "--b\r\n" + headers + "\r\n\r\nAAAA\r\n--b--\r\n").encode()
    return mime.parse(raw).parts[0]


@pytest.mark.parametrize("headers,names", [
    ('Content-Type: application/pdf; name="a.pdf"\r\nContent-Disposition: attachment; filename="a.pdf"', ("a.pdf",)),
    ('Content-Type: application/pdf; name="a.pdf"\r\nContent-Disposition: attachment; filename="b.exe"',
     ("b.exe", "a.pdf")),
    ('Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="a.pdf"; filename="a.exe"',
     ("a.pdf", "a.exe")),
    ('Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="a.pdf"\r\n'
     'Content-Disposition: attachment; filename="c.js"', ("a.pdf", "c.js")),
    ("Content-Type: application/pdf\r\nContent-Disposition: attachment; filename*=iso-8859-1''caf%E9.pdf",
     ("café.pdf",)),
    ('Content-Type: application/pdf; name="=?UTF-8?B?w6l0w6kucGRm?="', ("été.pdf",)),
    ('Content-Type: application/pdf; name="C:\\\\Users\\\\x\\\\evil.exe"', ("evil.exe",)),
    ("Content-Type: application/pdf\r\nContent-Disposition: attachment; filename*=bogus-charset''x%E9.pdf",
     ("x\u00e9.pdf",)),       # an unknown charset: read as Latin-1, as the standard library does
])
def test_filename_candidates(headers, names):
    part = leaf(headers)
    assert part.filenames == names, part.filenames
    assert part.filename == names[0]


def test_uuencoded_files_in_text_become_attachments():
    data = b"0123456789" * 10
    payload = b"".join(binascii.b2a_uu(data[i:i + 45]) for i in range(0, len(data), 45))
    text = b"Hi\r\n\r\nbegin 644 ../../data.bin\r\n" + payload.replace(b"\n", b"\r\n") + b"`\r\nend\r\nBye\r\n"
    parsed = mime.parse(b"From: a@b\r\nSubject: x\r\n\r\n" + text)
    body, uu = parsed.parts
    assert body.is_text and uu.is_attachment
    assert dataclasses.astuple(uu)[:3] == ("1.uu1", "application/octet-stream", "data.bin")
    assert uu.payload == b"0123456789" * 10
    assert mime.parse(b"From: a@b\r\n\r\nbegin 644 \r\nnot uuencode at all\r\n").attachments == ()
