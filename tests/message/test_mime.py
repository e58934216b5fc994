"""The MIME layer: parsed once with hard limits; ambiguities recorded as defects; never raises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.message import mime


def multipart(parts: list[bytes], boundary: bytes = b"b1", close: bool = True, headers: bytes = b"") -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    if close:
        body += b"--" + boundary + b"--\r\n"
    return (b"From: a@example.gov\r\nSubject: t\r\nMIME-Version: 1.0\r\n" + headers +
            b"Content-Type: multipart/mixed; boundary=\"" + boundary + b"\"\r\n\r\n" + body)


TEXT = b"Content-Type: text/plain\r\n\r\nhello"


def test_parts_paths_names_and_payloads():
    attachment = (b"Content-Type: application/octet-stream\r\nContent-Disposition: attachment;\r\n"
                  b" filename*0*=utf-8''r%C3%A9sum;\r\n filename*1*=%C3%A9.pdf\r\n"
                  b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK")
    parsed = mime.parse(multipart([TEXT, attachment]))
    assert parsed.defects == ()
    text, att = parsed.parts
    assert (text.path, text.is_text, text.text()) == ("1", True, "hello")
    assert att.path == "2" and att.filename == "résumé.pdf" and att.payload == b"%PDF-1.4\n"
    assert att.is_attachment and att.label == "part 2: résumé.pdf"


def test_encoded_word_name_and_disagreeing_sources_are_all_candidates():
    part = (b"Content-Type: application/pdf; name=\"=?utf-8?B?aW52b2ljZS5leGU=?=\"\r\n"
            b"Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n\r\nx")
    [_, att] = mime.parse(multipart([TEXT, part])).parts
    assert att.filenames == ("invoice.pdf", "invoice.exe")


def test_missing_final_boundary_and_nested_same_boundary():
    assert "missing_final_boundary" in mime.parse(multipart([TEXT], close=False)).defects
    inner = b"Content-Type: multipart/mixed; boundary=\"in\"\r\n\r\n--in\r\n" + TEXT
    assert "missing_final_boundary" in mime.parse(multipart([inner, TEXT])).defects
    # An inner boundary extending the outer one: clients that match boundaries as line prefixes split
    # the outer multipart at the inner delimiters, so text around the inner parts becomes parts.
    inner = b"Content-Type: multipart/mixed; boundary=\"b1x\"\r\n\r\n--b1x\r\n" + TEXT + b"\r\n--b1x--\r\nmore"
    assert "ambiguous_boundary" in mime.parse(multipart([TEXT, inner])).defects
    inner = b"Content-Type: multipart/mixed; boundary=\"b1x\"\r\n\r\n--b1x\r\n" + TEXT + b"\r\n--b1x--"
    assert mime.parse(multipart([TEXT, inner])).defects == ()
    same = b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n" + TEXT + b"\r\n--b1--"
    assert "missing_start_boundary" in mime.parse(multipart([TEXT, same])).defects   # the outer ends it at once


def test_conflicting_transfer_encodings():
    part = (b"Content-Type: application/zip; name=a.zip\r\nContent-Transfer-Encoding: base64\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\nUEsDBA==")
    assert "conflicting_transfer_encoding" in mime.parse(multipart([TEXT, part])).defects


def test_invalid_base64_in_attachment_only():
    bad = b"Content-Type: application/zip; name=a.zip\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsD!!BA="
    assert "invalid_encoding" in mime.parse(multipart([TEXT, bad])).defects


def test_limits_depth_parts_header_and_decoded_bytes():
    nested = TEXT
    for i in range(30):
        b = f"n{i}".encode()
        nested = b"Content-Type: multipart/mixed; boundary=\"" + b + b"\"\r\n\r\n--" + b + b"\r\n" + nested + \
                 b"\r\n--" + b + b"--"
    assert mime.parse(multipart([nested])).limit_exceeded == "depth"
    assert mime.parse(multipart([TEXT] * 20), mime.Limits(max_parts=10)).limit_exceeded == "parts"
    big_header = b"X-Junk: " + b"a" * 5000 + b"\r\n"
    assert mime.parse(big_header + TEXT, mime.Limits(max_header_bytes=1000)).limit_exceeded == "header_bytes"
    assert mime.parse(multipart([TEXT] * 3), mime.Limits(max_decoded_bytes=10)).limit_exceeded == "decoded_bytes"


def test_nesting_past_the_stdlib_parsers_recursion_is_the_depth_limit_not_a_crash():
    nested = TEXT
    for i in range(1500):           # ~80 KB: the stdlib parser recurses once per level and gives up near 1000
        b = f"n{i}".encode()
        nested = b"Content-Type: multipart/mixed; boundary=\"" + b + b"\"\r\n\r\n--" + b + b"\r\n" + nested + \
                 b"\r\n--" + b + b"--"
    parsed = mime.parse(b"Subject: deep\r\n" + nested)
    assert parsed.limit_exceeded == "depth" and parsed.subject == "deep" and parsed.parts == ()


def test_message_rfc822_parts_are_walked():
    inner = b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: text/csv; name=d.csv\r\n\r\na,b"
    parsed = mime.parse(multipart([TEXT, inner]))
    [att] = [p for p in parsed.parts if p.filename]
    assert att.filename == "d.csv" and att.nested_in_message and att.payload == b"a,b"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_never_raises_on_arbitrary_bytes(raw):
    parsed = mime.parse(raw)
    assert isinstance(parsed.parts, tuple)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([
    b"--b1\r\n", b"--b1--\r\n", b"Content-Type: multipart/mixed; boundary=b1\r\n", b"\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"QUJD\r\n", b"=?utf-8?q?x?=\r\n", b"Content-Type: text/plain\r\n",
    b"Content-Disposition: attachment; filename*0=a; filename*1=.exe\r\n", b"begin 644 x.exe\r\n",
]), max_size=40))
def test_never_raises_on_mime_shaped_noise(pieces):
    raw = b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n" + b"".join(pieces)
    parsed = mime.parse(raw)
    assert all(isinstance(p.payload, bytes) for p in parsed.parts)


_YENC = b"=ybegin line=128 size=3 name=a.exe\r\nabcdefghijklmnopqrstuvwxyz0123456789\r\n"
_UU = b"begin 644 a.exe\r\nM86)C9&5F9VAI:FML;6YO<'%R<W1U=G=X>7HP,3(S-#4V-S@Y86)C9&5F9VAI\r\n`\r\nend\r\n"


@pytest.mark.parametrize("block", [_YENC, _UU])
def test_files_carved_from_text_count_against_the_decoded_bytes_limit_together(block):
    """Each embedded block was decoded up to the room left, so two could pass the limit together (found by
    the property test): the second one that does not fit stops the walk with the decoded_bytes limit."""
    raw = b"Content-Type: text/plain\r\n\r\nSee below.\r\n" + block + block
    whole = mime.parse(raw)
    carved = sum(len(p.payload) for p in whole.parts[1:])
    assert len(whole.parts) == 3 and whole.limit_exceeded == ""
    limit = len(whole.parts[0].payload) + carved - 1           # one byte short of holding both files
    parsed = mime.parse(raw, mime.Limits(max_decoded_bytes=limit))
    assert parsed.limit_exceeded == "decoded_bytes"
    assert sum(len(p.payload) for p in parsed.parts) <= limit and len(parsed.parts) == 2
