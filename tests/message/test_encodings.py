"""Transfer encodings and embedded blocks decoded as mail clients decode them (gateway.message.encodings)."""

from __future__ import annotations

import base64
import email

import pytest

from gateway.message import encodings
from tests.support import hostile

DATA = bytes(range(256)) * 3


@pytest.mark.parametrize(("text", "valid"), [
    (base64.encodebytes(DATA), True),                                   # wrapped lines
    (base64.b64encode(DATA).rstrip(b"="), True),                        # missing padding
    (b"  \t".join(base64.encodebytes(DATA).split(b"\n")), True),        # whitespace anywhere
    (base64.b64encode(DATA)[:40] + b"!!*" + base64.b64encode(DATA)[40:], False),    # junk skipped
])
def test_base64_lenient_with_a_validity_verdict(text, valid):
    assert encodings.decode_base64(text) == (DATA, valid)


def test_base64_padding_inside_starts_a_new_run_and_trailing_text_is_invalid():
    joined = base64.b64encode(b"ab") + b"\r\n" + base64.b64encode(b"cdef")
    assert encodings.decode_base64(joined) == (b"abcdef", False)
    decoded, valid = encodings.decode_base64(base64.b64encode(DATA) + b"\r\n-- \r\nsig")
    assert decoded.startswith(DATA) and not valid


@pytest.mark.parametrize(("header", "token"), [
    ("base64", "base64"), ("  BASE64  ", "base64"), ('"base64"', "base64"), ("base64 (binary)", "base64"),
    ("\r\n base64", "base64"), ("8-bit", "8bit"), ("", "7bit"), ("base-64", "base-64"),
])
def test_transfer_encoding_token(header, token):
    msg = email.message_from_string(f"Content-Transfer-Encoding: {header}\n\nx" if header else "\nx")
    assert encodings.transfer_encoding(msg) == token


def test_unknown_encoding_passes_bytes_through_as_not_known():
    assert encodings.decode_body(b"abc", "base-64", 100) == (b"abc", None)
    assert encodings.decode_body(b"abc", "8bit", 100) == (b"abc", True)


def test_yenc_and_binhex_blocks_round_trip_with_their_names():
    text = b"Hello\r\n" + hostile.yenc("a.exe", DATA) + b"\r\nand\r\n" + hostile.binhex("b.bin", DATA[:300])
    found, broken = encodings.embedded_blocks(text, 10_000)
    assert not broken
    assert found == [("yenc", "a.exe", DATA), ("binhex", "b.bin", DATA[:300])]


def test_blocks_are_bounded_and_broken_ones_reported():
    found, _ = encodings.embedded_blocks(hostile.yenc("a.exe", DATA), 100)
    assert len(found[0][2]) == 100
    _, broken = encodings.embedded_blocks(b"(This file must be converted with BinHex 4.0)\r\n:!!~~\r\n", 1000)
    assert broken
    found, broken = encodings.embedded_blocks(b"see (This file must be converted with BinHex 4.0) above", 1000)
    assert (found, broken) == ([], False)       # the banner quoted in prose
