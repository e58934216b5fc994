"""Attachments end to end: a real SMTP client -> the gateway -> a real clamd (tests/support/clamav.py) -> the sink.

Every case asserts the finding's kind and detail, the verdict (the rule that held it) and that nothing
unsafe reached the next hop. The EICAR string and every test file are made at test time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time

import pytest

from gateway.model import Finding
from tests.support import files
from tests.support.clamav import FOUND, ClamdServer, HangingScanner
from tests.support.peers import make_message, send


async def inbound(gw, message: bytes) -> tuple[int, str]:
    code, text, _ = await send(gw.port, "x@outside.test", ["staff@example.gov"], message, source="127.0.0.2")
    return code, text


async def held(gw, sink) -> object:
    """The one held message; and nothing reached the sink."""
    await asyncio.sleep(0.05)
    assert sink.messages == []
    [item] = await gw.store.list()
    return item


def found(item, kind: str) -> list[Finding]:
    hits = [f for f in item.findings if f.kind == kind]
    assert hits, f"no {kind} in {[(f.kind, f.detail) for f in item.findings]}"
    return hits


async def assert_virus_held(gw, sink, message: bytes, part_fragment: str) -> Finding:
    code, text = await inbound(gw, message)
    assert code == 250, text
    item = await held(gw, sink)
    assert item.rule in ("inbound/virus", "inbound/malformed"), item.rule
    [virus] = found(item, "virus")[:1]
    assert FOUND in virus.detail and virus.evidence == (FOUND,)
    assert part_fragment in (virus.part or ""), virus.part
    return virus


# --- viruses ------------------------------------------------------------------------------------------

async def test_eicar_plain_attachment_is_held(gw, sink):
    message = files.message_with([("eicar.com", files.eicar(), "application/octet-stream")])
    virus = await assert_virus_held(gw, sink, message, "eicar.com")
    assert virus.detail == f"Virus {FOUND} found in eicar.com"
    [item] = await gw.store.list()
    assert item.rule == "inbound/virus"


async def test_eicar_in_zip_and_in_zip_inside_zip(gw, sink):
    inner = files.zip_of({"docs/eicar.txt": files.eicar()})
    message = files.message_with([("outer.zip", files.zip_of({"inner.zip": inner}), "application/zip")])
    virus = await assert_virus_held(gw, sink, message, "outer.zip")
    assert "outer.zip" in virus.detail


async def test_eicar_in_plain_zip(gw, sink):
    message = files.message_with([("files.zip", files.zip_of({"eicar.txt": files.eicar()}), "application/zip")])
    await assert_virus_held(gw, sink, message, "files.zip")


async def test_eicar_in_7z(gw, sink):
    message = files.message_with([("files.7z", files.seven_zip_of({"eicar.txt": files.eicar()}),
                                   "application/x-7z-compressed")])
    await assert_virus_held(gw, sink, message, "files.7z")


async def test_eicar_in_tar_gz(gw, sink):
    message = files.message_with([("files.tgz", files.tar_gz_of({"a/eicar.txt": files.eicar()}),
                                   "application/gzip")])
    await assert_virus_held(gw, sink, message, "files.tgz")


@pytest.mark.parametrize("cte", ["base64", "quoted-printable"])
async def test_eicar_in_base64_and_quoted_printable(gw, sink, cte):
    message = files.message_with([("note.txt", files.eicar(), "text/plain")], cte=cte)
    assert f"Content-Transfer-Encoding: {cte}".encode() in message
    await assert_virus_held(gw, sink, message, "note.txt")


async def test_eicar_inside_attached_message(gw, sink):
    inner = files.message_with([("eicar.com", files.eicar(), "application/octet-stream")], subject="inner")
    message = (b"From: x@outside.test\r\nTo: staff@example.gov\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n--outer\r\nContent-Type: text/plain\r\n\r\n"
               b"forwarded\r\n--outer\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--outer--\r\n")
    await assert_virus_held(gw, sink, message, "eicar.com")


async def test_eicar_uuencoded_in_the_body(gw, sink):
    data = files.eicar()
    uu = b"".join(binascii.b2a_uu(data[i:i + 45]) for i in range(0, len(data), 45))
    body = "Here it is:\n\nbegin 644 eicar.com\n" + uu.decode() + "`\nend\n\nbye\n"
    message = make_message(subject="uu", body=body, sender="x@outside.test", to="staff@example.gov")
    virus = await assert_virus_held(gw, sink, message, "uu1: eicar.com")
    assert virus.detail == f"Virus {FOUND} found in eicar.com"


# --- what cannot be scanned -----------------------------------------------------------------------------

async def test_encrypted_zip_is_held_unscanned(gw, sink, tmp_path):
    archive = files.encrypted_zip(tmp_path, "salary.txt", b"confidential numbers\n")
    code, _ = await inbound(gw, files.message_with([("salary.zip", archive, "application/zip")]))
    assert code == 250
    item = await held(gw, sink)
    assert item.rule == "inbound/unscanned"
    details = [f.detail for f in found(item, "unscanned.encrypted")]
    assert any("'salary.txt' is encrypted" in d for d in details), details
    assert {f.kind for f in item.findings} == {"unscanned.encrypted"}


async def test_zip_bomb_is_held_without_expanding_it(gw, sink):
    bomb = files.zip_bomb(64 * 1024 * 1024)
    assert len(bomb) < 200 * 1024
    start = time.perf_counter()
    code, _ = await inbound(gw, files.message_with([("bomb.zip", bomb, "application/zip")]))
    assert code == 250
    assert time.perf_counter() - start < 20
    item = await held(gw, sink)
    assert item.rule == "inbound/unscanned"
    [limit] = found(item, "unscanned.limits_exceeded")
    assert "zip bomb" in limit.detail and limit.part == "part 2: bomb.zip"


async def test_archive_nested_too_deep_is_held(start_gateway, sink):
    gw = await start_gateway(antivirus={"archive_max_depth": 2})
    data = b"quarterly figures\n"
    for level in range(4):
        data = files.zip_of({f"level{level}.zip" if level else "figures.txt": data})
    code, _ = await inbound(gw, files.message_with([("nested.zip", data, "application/zip")]))
    assert code == 250
    item = await held(gw, sink)
    [limit] = found(item, "unscanned.limits_exceeded")
    assert "deeper than 2 levels" in limit.detail


async def test_attachment_over_stream_max_length_is_never_clean(start_gateway, sink):
    gw = await start_gateway(antivirus={"stream_max_length": 4096})
    code, _ = await inbound(gw, files.message_with([("big.csv", files.csv() * 200, "text/csv")]))
    assert code == 250
    item = await held(gw, sink)
    [limit] = found(item, "unscanned.limits_exceeded")
    assert "too large" in limit.detail and "big.csv" in limit.detail      # the StreamMaxLength reply is logged


# --- dangerous file types -------------------------------------------------------------------------------

async def test_exe_named_pdf_is_held(gw, sink):
    code, _ = await inbound(gw, files.message_with([("invoice.pdf", files.pe_executable(), "application/pdf")]))
    assert code == 250
    item = await held(gw, sink)
    assert item.rule == "inbound/dangerous-file"
    [exe] = found(item, "dangerous_file.executable")
    assert exe.detail.startswith("invoice.pdf is a program (PE32 executable")
    details = [f.detail for f in found(item, "dangerous_file.mismatch")]
    assert any("invoice.pdf is named as PDF but is really PE32 executable" in d for d in details), details
    assert any("declared as application/pdf" in d for d in details), details


async def test_macro_document_named_docx_is_held(gw, sink):
    docm = files.ooxml(macro=True)
    code, _ = await inbound(gw, files.message_with([
        ("report.docx", docm, "application/vnd.openxmlformats-officedocument.wordprocessingml.document")]))
    assert code == 250
    item = await held(gw, sink)
    assert item.rule == "inbound/dangerous-file"
    [macro] = found(item, "dangerous_file.macro_document")
    assert macro.part == "part 2: report.docx > word/vbaProject.bin"
    assert "holds Office macros" in macro.detail


async def test_right_to_left_override_in_name_is_held(gw, sink):
    name = "invoice\u202efdp.exe"                 # shows as "invoiceexe.pdf"
    code, _ = await inbound(gw, files.message_with([(name, files.pe_executable(), "application/octet-stream")]))
    assert code == 250
    item = await held(gw, sink)
    tricks = [f for f in found(item, "dangerous_file.mismatch") if "U+202E" in f.detail]
    assert tricks and "RIGHT-TO-LEFT OVERRIDE" in tricks[0].detail
    assert "invoice<U+202E>fdp.exe" in tricks[0].detail        # shown escaped to the reviewer
    assert found(item, "dangerous_file.executable")


async def test_rfc2231_split_file_name_is_joined_like_mail_clients_do(gw, sink):
    payload = base64.encodebytes(files.pe_executable()).decode().replace("\n", "\r\n")
    message = ("From: x@outside.test\r\nTo: staff@example.gov\r\nSubject: split\r\nMIME-Version: 1.0\r\n"
               "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
               "--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
               "Content-Disposition: attachment; filename*0*=UTF-8''r%C3%A9; filename*1=\"sum\";\r\n"
               " filename*2=\"e.ex\"; filename*3=\"e\"\r\n\r\n" + payload + "--b--\r\n").encode()
    code, _ = await inbound(gw, message)
    assert code == 250
    item = await held(gw, sink)
    exe = found(item, "dangerous_file.executable")
    assert any(f.detail == "résume.exe is a program (by its name)" for f in exe), [f.detail for f in exe]


async def test_disagreeing_file_names_are_ambiguous_and_every_name_is_checked(gw, sink):
    payload = base64.encodebytes(files.pdf()).decode().replace("\n", "\r\n")
    message = ("From: x@outside.test\r\nTo: staff@example.gov\r\nSubject: two names\r\nMIME-Version: 1.0\r\n"
               "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
               "--b\r\nContent-Type: application/pdf; name=\"statement.pdf\"\r\nContent-Transfer-Encoding: base64\r\n"
               "Content-Disposition: attachment; filename=\"statement.pdf\";\r\n"
               " filename=\"=?utf-8?q?statement=2Ejs?=\"\r\n"
               "\r\n" + payload + "--b--\r\n").encode()
    code, _ = await inbound(gw, message)
    assert code == 250
    item = await held(gw, sink)
    [ambiguous] = found(item, "malformed.ambiguous_filename")
    assert "'statement.pdf', 'statement.js'" in ambiguous.detail
    assert any(f.detail == "statement.js is a script (by its name)" for f in found(item, "dangerous_file.script"))


# --- the scanner itself failing ---------------------------------------------------------------------------

async def test_clamd_stopped_during_a_run(start_gateway, sink, tmp_path):
    scanner = ClamdServer(tmp_path / "own-clamd").start()
    try:
        gw = await start_gateway(antivirus={"clamd": scanner.address})
        code, _ = await inbound(gw, files.message_with([("a.pdf", files.pdf(), "application/pdf")]))
        assert code == 250
        [first] = await sink.wait_for(1)
        assert b"X-Gateway-Scanned: ClamAV " in first.data
        scanner.stop()
        other = files.pdf().replace(b"612 792", b"595 842")       # another file: not in the result cache
        code, _ = await inbound(gw, files.message_with([("b.pdf", other, "application/pdf")], subject="second"))
        assert code == 250
        await asyncio.sleep(0.05)
        assert len(sink.messages) == 1
        [item] = await gw.store.list()
        assert item.rule == "inbound/unscanned"
        [down] = found(item, "unscanned.scanner_unavailable")
        assert down.detail.startswith("The virus scanner was not available when the message arrived, so the file b.pdf")
        # A message without files is still delivered: our own parser read all of it.
        code, _ = await inbound(gw, make_message(sender="x@outside.test", to="staff@example.gov"))
        assert code == 250 and len(await sink.wait_for(2)) == 2
        assert b"X-Gateway-Scanned" not in sink.messages[1].data
    finally:
        scanner.stop()


async def test_clamd_hanging_times_out_and_holds(start_gateway, sink, tmp_path):
    hanging = await HangingScanner(tmp_path / "hang.sock").start()
    try:
        gw = await start_gateway(antivirus={"clamd": hanging.address, "timeout": 0.5})
        start = time.perf_counter()
        code, _ = await inbound(gw, files.message_with([("a.csv", files.csv(), "text/csv")]))
        assert code == 250
        assert time.perf_counter() - start < 10
        item = await held(gw, sink)
        [slow] = found(item, "unscanned.timeout")
        assert "did not finish checking the file a.csv in time" in slow.detail      # "within 0.5 s": logged
        assert hanging.connections >= 1
    finally:
        await hanging.stop()


async def test_no_scanner_configured_holds_every_file(start_gateway, sink):
    gw = await start_gateway(antivirus={"clamd": ""})
    code, _ = await inbound(gw, files.message_with([("a.pdf", files.pdf(), "application/pdf"),
                                                    ("b.png", files.png(), "image/png")]))
    assert code == 250
    item = await held(gw, sink)
    down = found(item, "unscanned.scanner_unavailable")
    assert sorted(f.part for f in down) == ["part 2: a.pdf", "part 3: b.png"]


# --- clean controls ---------------------------------------------------------------------------------------

async def test_clean_documents_images_and_csv_are_delivered_with_scanned_header(gw, sink):
    attachments = [
        ("report.pdf", files.pdf(), "application/pdf"),
        ("report.docx", files.ooxml(), "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        ("chart.png", files.png(), "image/png"),
        ("photo.jpg", files.jpeg(), "image/jpeg"),
        ("figures.csv", files.csv(), "text/csv"),
        ("figures.zip", files.zip_of({"figures.csv": files.csv(), "chart.png": files.png()}), "application/zip"),
    ]
    code, text = await inbound(gw, files.message_with(attachments))
    assert code == 250, text
    [got] = await sink.wait_for(1)
    assert await gw.store.list() == []
    assert b"X-Gateway-Verdict: deliver; rule=inbound/default" in got.data
    assert b"X-Gateway-Scanned: ClamAV 1." in got.data


async def test_clean_outbound_csv_declared_as_text_plain_is_delivered(gw, sink):
    message = files.message_with([("numbers.csv", files.csv(), "text/plain")])
    code, _, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], message)
    assert code == 250
    [got] = await sink.wait_for(1)
    assert b"X-Gateway-Verdict: deliver\r\n" in got.data and b"rule=" not in got.data


async def test_our_scanned_header_cannot_be_forged_and_is_absent_without_files(gw, sink):
    forged = make_message(sender="x@outside.test", to="staff@example.gov",
                          extra_headers="X-Gateway-Scanned: ClamAV 0.1 (forged)\r\n")
    code, _ = await inbound(gw, forged)
    assert code == 250
    [got] = await sink.wait_for(1)
    assert b"X-Gateway-Scanned" not in got.data


async def test_site_can_tempfail_while_the_scanner_is_unavailable(start_gateway, sink, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text('[[inbound.rules]]\nname = "scanner-down"\nmatch = ["unscanned.scanner_unavailable"]\n'
                    'action = "tempfail"\nreply = "Virus scanning is temporarily unavailable"\n')
    gw = await start_gateway(antivirus={"clamd": f"unix://{tmp_path / 'gone.sock'}"}, policy={"site": str(site)})
    code, text = await inbound(gw, files.message_with([("a.pdf", files.pdf(), "application/pdf")]))
    assert code == 451 and "Virus scanning is temporarily unavailable" in text
    assert sink.messages == [] and await gw.store.list() == []


@pytest.mark.parametrize("cache_seconds,delivered", [(300, 2), (0, 1)])
async def test_results_are_cached_by_content_for_a_short_time(start_gateway, sink, tmp_path, cache_seconds,
                                                              delivered):
    scanner = ClamdServer(tmp_path / "cache-clamd").start()
    site = tmp_path / "site.toml"       # only the file is scanned: the raw message differs each time
    site.write_text("[detectors.antivirus]\nscan_whole_message = false\n")
    try:
        gw = await start_gateway(antivirus={"clamd": scanner.address, "cache_seconds": cache_seconds},
                                 policy={"site": str(site)})
        message = files.message_with([("a.pdf", files.pdf(), "application/pdf")])
        assert (await inbound(gw, message))[0] == 250
        scanner.stop()
        # The same file again: known clean for cache_seconds, so no scan is needed; without a cache it is held.
        assert (await inbound(gw, files.message_with([("copy.pdf", files.pdf(), "application/pdf")],
                                                     subject="again")))[0] == 250
        await asyncio.sleep(0.05)
        assert len(sink.messages) == delivered
        assert len(await gw.store.list()) == 2 - delivered
    finally:
        scanner.stop()


async def test_whole_message_scan_finds_what_the_mime_parser_does_not_show(gw, sink):
    # A file after the closing boundary (the epilogue) is no part to our parser, nor to most clients;
    # clamd's scan of the raw message still sees it.
    message = (b"From: x@outside.test\r\nTo: staff@example.gov\r\nSubject: epilogue\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
               b"--b--\r\n" + files.eicar() + b"\r\n")
    code, _ = await inbound(gw, message)
    assert code == 250
    item = await held(gw, sink)
    [virus] = found(item, "virus")
    assert virus.part == "whole message"
    assert virus.detail == f"Virus {FOUND} found in the message as a whole"
