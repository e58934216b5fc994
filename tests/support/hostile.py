"""Hostile MIME: messages that hide an attachment from filters with MIME tricks that mail clients still
decode. Built at test time around an EICAR-bearing zip (tests.support.files.eicar(); the string is
never committed), plus variants that hide a dangerous file name.

`variants()` returns every `Variant`: a name (the construct), what it hides ("virus": the zip,
"name": an .exe name on harmless content) and the raw message. The gateway must deliver none of
them: each is held as virus, dangerous_file.*, unscanned.* or malformed.*.
"""

from __future__ import annotations

import base64
import binascii
import quopri
from dataclasses import dataclass

from tests.support import files

FROM = b"From: Mallory <mallory@outside.test>\r\nTo: staff@example.gov\r\n"
CRLF = b"\r\n"


@dataclass(frozen=True)
class Variant:
    name: str           # the construct, e.g. "boundary.prefix_of_outer"
    hides: str          # "virus" (the EICAR zip) | "name" (a dangerous name on harmless content)
    raw: bytes


def payload() -> bytes:
    """The zip every variant hides: one member holding the EICAR test string."""
    return files.zip_of({"readme.txt": files.eicar()})


HARMLESS = b"Quarterly figures attached as discussed.\r\n" * 4


def b64(data: bytes, width: int = 76) -> bytes:
    text = base64.b64encode(data)
    return CRLF.join(text[i:i + width] for i in range(0, len(text), width))


def head(subject: str, extra: bytes = b"") -> bytes:
    return (FROM + b"Subject: " + subject.encode() + CRLF + b"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
            b"Message-ID: <" + subject.encode().replace(b" ", b".") + b"@outside.test>\r\nMIME-Version: 1.0\r\n"
            + extra)


TEXT_PART = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nPlease see the attached invoice.\r\n"


def zip_part(body: bytes | None = None, headers: bytes | None = None) -> bytes:
    if headers is None:
        headers = (b"Content-Type: application/zip; name=\"invoice.zip\"\r\n"
                   b"Content-Disposition: attachment; filename=\"invoice.zip\"\r\n"
                   b"Content-Transfer-Encoding: base64\r\n")
    return headers + CRLF + (b64(payload()) if body is None else body) + CRLF


def mixed(subject: str, parts: list[bytes], boundary: bytes = b"==b1==", ctype: bytes | None = None,
          close: bool = True, preamble: bytes = b"", epilogue: bytes = b"", extra: bytes = b"") -> bytes:
    if ctype is None:
        ctype = b"Content-Type: multipart/mixed; boundary=\"" + boundary + b"\"\r\n"
    body = preamble + b"".join(b"--" + boundary + CRLF + p for p in parts)
    if close:
        body += b"--" + boundary + b"--" + CRLF + epilogue
    return head(subject, extra) + ctype + CRLF + body


def standard(subject: str, attachment: bytes) -> bytes:
    return mixed(subject, [TEXT_PART, attachment])


def named(name_headers: bytes, body: bytes = HARMLESS, encoding: bytes = b"base64") -> bytes:
    data = b64(body) if encoding == b"base64" else body
    return name_headers + b"Content-Transfer-Encoding: " + encoding + CRLF + CRLF + data + CRLF


def yenc(name: str, data: bytes, line: int = 128) -> bytes:
    out = bytearray()
    col = 0
    for byte in data:
        c = (byte + 42) % 256
        if c in (0, 10, 13, 61) or (col == 0 and c in (9, 32, 46)):
            out += bytes((61, (c + 64) % 256))
            col += 2
        else:
            out.append(c)
            col += 1
        if col >= line:
            out += CRLF
            col = 0
    crc = binascii.crc32(data) & 0xFFFFFFFF
    return (f"=ybegin line={line} size={len(data)} name={name}\r\n".encode() + bytes(out) + CRLF +
            f"=yend size={len(data)} crc32={crc:08x}\r\n".encode())


HQX = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"


def binhex(name: str, data: bytes) -> bytes:
    """A BinHex 4.0 block (RLE escape + 6-bit encoding), as the Mac mail clients wrote it."""
    def crc(buf: bytes) -> bytes:
        return binascii.crc_hqx(buf, 0).to_bytes(2, "big")
    fname = name.encode()
    header = bytes([len(fname)]) + fname + b"\0" + b"BINA" + b"????" + b"\0\0" + len(data).to_bytes(4, "big") + \
        (0).to_bytes(4, "big")
    blob = header + crc(header) + data + crc(data) + crc(b"")
    blob = blob.replace(b"\x90", b"\x90\x00")          # the run-length marker, escaped
    bits = int.from_bytes(blob, "big") << (-len(blob) * 8 % 6)
    count = (len(blob) * 8 + 5) // 6
    encoded = bytes(HQX[(bits >> (6 * (count - 1 - i))) & 63] for i in range(count))
    lines = [encoded[i:i + 64] for i in range(0, len(encoded), 64)]
    return b"(This file must be converted with BinHex 4.0)\r\n\r\n:" + CRLF.join(lines) + b":\r\n"


def qp(data: bytes) -> bytes:
    return quopri.encodestring(data).replace(b"\n", CRLF)


def _junk_b64(every: int, junk: bytes) -> bytes:
    text = base64.b64encode(payload())
    chunks = [text[i:i + every] for i in range(0, len(text), every)]
    return CRLF.join(junk.join(chunks[i:i + 8]) for i in range(0, len(chunks), 8))


def variants() -> list[Variant]:
    zb = b64(payload())
    raw_zip = payload()
    v: list[Variant] = []

    def add(name: str, raw: bytes, hides: str = "virus") -> None:
        v.append(Variant(name, hides, raw))

    # --- control: the plain case -------------------------------------------------------------------
    add("control.plain_base64_zip", standard("plain", zip_part()))

    # --- boundaries -------------------------------------------------------------------------------------
    add("boundary.quoted_with_spaces", mixed("bspace", [TEXT_PART, zip_part()], boundary=b"a b  c"))
    add("boundary.trailing_space_in_param", mixed(
        "btrail", [TEXT_PART, zip_part()], boundary=b"b1",
        ctype=b"Content-Type: multipart/mixed; boundary=\"b1 \"\r\n"))
    add("boundary.unquoted_special", mixed(
        "bunq", [TEXT_PART, zip_part()], boundary=b"=_b1?x",
        ctype=b"Content-Type: multipart/mixed; boundary==_b1?x\r\n"))
    add("boundary.duplicate_param_first_is_decoy", mixed(
        "bdup1", [TEXT_PART, zip_part()], boundary=b"real",
        ctype=b"Content-Type: multipart/mixed; boundary=\"decoy\"; boundary=\"real\"\r\n"))
    add("boundary.duplicate_param_last_is_decoy", mixed(
        "bdup2", [TEXT_PART, zip_part()], boundary=b"real",
        ctype=b"Content-Type: multipart/mixed; boundary=\"real\"; boundary=\"decoy\"\r\n"))
    add("boundary.case_of_param_name", mixed(
        "bcase", [TEXT_PART, zip_part()], boundary=b"b1",
        ctype=b"Content-Type: MULTIPART/Mixed; BOUNDARY=\"b1\"\r\n"))
    add("boundary.rfc2231_split", mixed(
        "b2231", [TEXT_PART, zip_part()], boundary=b"splitbound",
        ctype=b"Content-Type: multipart/mixed;\r\n boundary*0=\"split\";\r\n boundary*1=\"bound\"\r\n"))
    add("boundary.rfc2231_charset", mixed(
        "b2231c", [TEXT_PART, zip_part()], boundary=b"cs b",
        ctype=b"Content-Type: multipart/mixed; boundary*=us-ascii''cs%20b\r\n"))
    add("boundary.encoded_word_param", mixed(
        "bew", [TEXT_PART, zip_part()], boundary=b"b1",
        ctype=b"Content-Type: multipart/mixed; boundary=\"=?us-ascii?Q?b1?=\"\r\n"))
    add("boundary.rfc2231_split_language", mixed(
        "b2231l", [TEXT_PART, zip_part()], boundary=b"split",
        ctype=b"Content-Type: multipart/mixed;\r\n boundary*0*=us-ascii'en'sp;\r\n boundary*1=\"lit\"\r\n"))
    add("boundary.duplicate_param_case", mixed(
        "bdup3", [TEXT_PART, zip_part()], boundary=b"real",
        ctype=b"Content-Type: multipart/mixed; Boundary=\"decoy\"; boundary=\"real\"\r\n"))
    add("boundary.plain_and_rfc2231_disagree", mixed(
        "b2231dup", [TEXT_PART, zip_part()], boundary=b"real",
        ctype=b"Content-Type: multipart/mixed; boundary=\"decoy\"; boundary*=us-ascii''real\r\n"))
    add("boundary.comment_in_content_type", mixed(
        "bcomment", [TEXT_PART, zip_part()], boundary=b"b1",
        ctype=b"Content-Type: multipart/mixed (see below); boundary=(the boundary) \"b1\"\r\n"))
    add("boundary.garbage_after_quoted", mixed(
        "bgarb", [TEXT_PART, zip_part()], boundary=b"b1",
        ctype=b"Content-Type: multipart/mixed; boundary=\"b1\"junk\r\n"))
    inner = (b"Content-Type: multipart/mixed; boundary=\"==b1==x\"\r\n\r\n--==b1==x\r\n" + zip_part() +
             b"--==b1==x--\r\n")
    add("boundary.inner_has_outer_as_prefix", mixed("bprefix", [TEXT_PART, inner]))
    inner = (b"Content-Type: multipart/mixed; boundary=\"==b\"\r\n\r\n--==b\r\n" + TEXT_PART + b"--==b\r\n" +
             zip_part() + b"--==b--\r\n")
    add("boundary.inner_is_prefix_of_outer", mixed("bprefix2", [TEXT_PART, inner], boundary=b"==b1=="))
    inner = (b"Content-Type: multipart/mixed; boundary=\"==b1==\"\r\n\r\n--==b1==\r\n" + TEXT_PART +
             b"--==b1==\r\n" + zip_part() + b"--==b1==--\r\n")
    add("boundary.nested_same", mixed("bsame", [TEXT_PART, inner]))
    add("boundary.delimiter_trailing_junk", head("bjunk") +
        b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n" + TEXT_PART +
        b"--b1 junk\r\n" + zip_part() + b"--b1--\r\n")
    add("boundary.delimiter_trailing_whitespace", head("bws") +
        b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1 \t\r\n" + TEXT_PART +
        b"--b1  \r\n" + zip_part() + b"--b1--  \r\n")
    add("boundary.missing_close", mixed("noclose", [TEXT_PART, zip_part()], close=False))
    inner = b"Content-Type: multipart/mixed; boundary=\"in\"\r\n\r\n--in\r\n" + zip_part()
    add("boundary.missing_close_nested", mixed("noclose2", [TEXT_PART, inner]))
    inner = (b"Content-Type: multipart/mixed; boundary=\"in\"\r\n\r\n--in\r\n" + TEXT_PART + b"--in\r\n" +
             zip_part(zb[:120]))
    add("boundary.missing_close_nested_then_sibling", mixed("noclose3", [inner, zip_part(zb[120:], headers=b"")]))
    inner = (b"Content-Type: multipart/mixed; boundary=\"==b1==x\"\r\n\r\n--==b1==x\r\n" + TEXT_PART +
             b"--==b1==x--\r\n" + zip_part())
    add("boundary.prefix_inner_epilogue_is_a_part", mixed("bprefix3", [TEXT_PART, inner]))
    add("boundary.junk_before_first", mixed(
        "preamble", [TEXT_PART, zip_part()],
        preamble=b"This is a multi-part message in MIME format.\r\nContent-Type: text/plain\r\n\r\n" + zb[:200] +
        b"\r\n\r\n"))
    add("boundary.parts_after_close", mixed(
        "epilogue", [TEXT_PART], epilogue=b"--==b1==\r\n" + zip_part() + b"--==b1==--\r\n"))
    add("boundary.epilogue_new_multipart", mixed(
        "epilogue2", [TEXT_PART], epilogue=b"Content-Type: multipart/mixed; boundary=\"e\"\r\n\r\n--e\r\n" +
        zip_part() + b"--e--\r\n"))
    add("boundary.no_boundary_param", head("nob") + b"Content-Type: multipart/mixed\r\n\r\n--b1\r\n" + TEXT_PART +
        b"--b1\r\n" + zip_part() + b"--b1--\r\n")
    add("boundary.leading_whitespace_delimiter", head("blead") +
        b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n" + TEXT_PART +
        b" --b1\r\n" + zip_part() + b"--b1--\r\n")

    # --- transfer encodings ----------------------------------------------------------------------------
    add("base64.junk_interleaved", standard("b64junk", zip_part(_junk_b64(4, b"!*"))))
    add("base64.whitespace_inside", standard("b64ws", zip_part(_junk_b64(6, b" \t"))))
    add("base64.missing_padding", standard("b64pad", zip_part(zb.rstrip(b"="))))
    add("base64.padding_in_middle", standard("b64mid", zip_part(
        base64.b64encode(raw_zip[:10]) + b"==\r\n" + b64(raw_zip[10:]))))
    add("base64.extra_padding", standard("b64extra", zip_part(zb + b"====\r\n===")))
    add("base64.one_long_line", standard("b64long", zip_part(base64.b64encode(raw_zip))))
    add("base64.garbage_after_end", standard("b64tail", zip_part(zb + b"\r\n-- \r\nsent from my phone\r\n")))
    add("base64.trailing_lf_only", standard("b64lf", zip_part(zb.replace(CRLF, b"\n"))))
    add("cte.uppercase_and_spaces", standard("cteup", zip_part(headers=(
        b"Content-Type: application/zip; name=\"invoice.zip\"\r\nContent-Transfer-Encoding:   BASE64  \r\n"))))
    add("cte.quoted", standard("cteq", zip_part(headers=(
        b"Content-Type: application/zip; name=\"invoice.zip\"\r\nContent-Transfer-Encoding: \"base64\"\r\n"))))
    add("cte.comment", standard("ctec", zip_part(headers=(
        b"Content-Type: application/zip; name=\"invoice.zip\"\r\nContent-Transfer-Encoding: base64 (binary)\r\n"))))
    add("cte.unknown_token", standard("cteu", zip_part(headers=(
        b"Content-Type: application/zip; name=\"invoice.zip\"\r\nContent-Transfer-Encoding: base-64\r\n"))))
    add("cte.duplicate_conflicting", standard("ctedup", zip_part(headers=(
        b"Content-Type: application/zip; name=\"invoice.zip\"\r\nContent-Transfer-Encoding: 7bit\r\n"
        b"Content-Transfer-Encoding: base64\r\n"))))
    add("cte.duplicate_case_whitespace", standard("ctedup2", zip_part(headers=(
        b"Content-Type: application/zip; name=\"invoice.zip\"\r\ncontent-transfer-encoding: quoted-printable\r\n"
        b"CONTENT-TRANSFER-ENCODING:base64\r\n"))))
    add("cte.x_uuencode", standard("cteuu", zip_part(
        b"begin 644 invoice.zip\r\n" + b"".join(binascii.b2a_uu(raw_zip[i:i + 45]).replace(b"\n", CRLF)
                                                 for i in range(0, len(raw_zip), 45)) + b"`\r\nend",
        headers=b"Content-Type: application/zip; name=\"invoice.zip\"\r\nContent-Transfer-Encoding: x-uuencode\r\n")))
    add("qp.zip_quoted_printable", standard("qp", zip_part(qp(raw_zip), headers=(
        b"Content-Type: application/zip; name=\"invoice.zip\"\r\nContent-Transfer-Encoding: quoted-printable\r\n"))))
    add("qp.broken_escapes_lowercase", standard("qpbad", zip_part(
        qp(raw_zip).replace(b"=0A", b"=0a") + b"=ZZ=\r\n=3", headers=(
            b"Content-Type: application/zip; name=\"invoice.zip\"\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n"))))
    add("cte.base64_on_multipart", head("b64mp") + b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n--b1\r\n" + TEXT_PART + b"--b1\r\n" + zip_part() + b"--b1--\r\n")

    # --- headers -----------------------------------------------------------------------------------------
    add("header.duplicate_content_type", standard("ctdup", zip_part(headers=(
        b"Content-Type: text/plain\r\nContent-Type: application/zip; name=\"invoice.zip\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n"))))
    add("header.space_before_colon_cte", standard("hspace", zip_part(headers=(
        b"Content-Type: application/zip; name=\"invoice.zip\"\r\nContent-Transfer-Encoding : base64\r\n"))))
    add("header.space_before_colon_ct", standard("hspace2", zip_part(headers=(
        b"Content-Type : application/zip; name=\"invoice.zip\"\r\nContent-Transfer-Encoding: base64\r\n"))))
    add("header.tab_before_colon", standard("htab", zip_part(headers=(
        b"Content-Type: application/zip; name=\"invoice.zip\"\r\nContent-Transfer-Encoding\t: base64\r\n"))))
    add("header.garbage_line_inside", standard("hgarbline", zip_part(headers=(
        b"Content-Type: application/zip; name=\"invoice.zip\"\r\nthis line is no header\r\n"
        b"Content-Transfer-Encoding: base64\r\n"))))
    add("header.lf_cr_inside", standard("hlfcr", zip_part(headers=(
        b"Content-Type: application/zip; name=\"invoice.zip\"\n\rContent-Transfer-Encoding: base64\r\n"))))
    add("header.first_line_folded", standard("hfirstfold", zip_part(headers=(
        b" Content-Type: application/zip; name=\"invoice.zip\"\r\nContent-Transfer-Encoding: base64\r\n"))))
    add("header.name_case", standard("hcase", zip_part(headers=(
        b"CONTENT-TYPE: APPLICATION/ZIP; NAME=\"invoice.zip\"\r\ncontent-transfer-encoding: Base64\r\n"))))
    add("header.folded_values", standard("hfold", zip_part(headers=(
        b"Content-Type:\r\n application/zip;\r\n\tname=\"invoice.zip\"\r\nContent-Transfer-Encoding:\r\n base64\r\n"))))
    add("header.whitespace_only_line", standard("hwsline", zip_part(headers=(
        b"Content-Type: application/zip; name=\"invoice.zip\"\r\n \r\nContent-Transfer-Encoding: base64\r\n"))))
    add("header.no_content_type_disposition_only", standard("hnoct", zip_part(headers=(
        b"Content-Disposition: attachment; filename=\"invoice.zip\"\r\nContent-Transfer-Encoding: base64\r\n"))))
    add("header.declared_text", standard("htext", zip_part(headers=(
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n"))))
    add("header.garbage_content_type", standard("hgarb", zip_part(headers=(
        b"Content-Type: application; name=invoice.zip\r\nContent-Transfer-Encoding: base64\r\n"))))
    add("header.nul_in_header", standard("hnul", zip_part(headers=(
        b"Content-Type: application/zip; name=\"invo\0ice.zip\"\r\nContent-Transfer-Encoding: base64\r\n"))))
    add("header.top_level_duplicate_content_type", head("topdup", b"Content-Type: text/plain\r\n") +
        b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n" + TEXT_PART + b"--b1\r\n" + zip_part() +
        b"--b1--\r\n")
    add("header.top_level_lookalike_before_content_type", head("toplook", b"X-Mailer : Mallory 1.0\r\n") +
        b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n" + TEXT_PART + b"--b1\r\n" + zip_part() +
        b"--b1--\r\n")
    add("header.top_level_attachment_only", head("toponly") + zip_part())
    add("header.no_blank_line_before_body", standard("hnoblank", b"Content-Type: application/zip; name=invoice.zip\r\n"
                                                     b"Content-Transfer-Encoding: base64\r\n" + zb + CRLF))
    add("header.very_long_line", standard("hlong", zip_part(headers=(
        b"Content-Type: application/zip; x-pad=\"" + b"a" * 900 + b"\";\r\n x-pad2=\"" + b"b" * 900 +
        b"\"; name=\"invoice.zip\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n"))))
    add("header.inline_text_with_zip_name", standard("hinline", zip_part(headers=(
        b"Content-Type: text/plain\r\nContent-Disposition: inline; filename=\"invoice.zip\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n"))))

    # --- line endings -------------------------------------------------------------------------------------
    m = standard("lf", zip_part())
    add("lines.bare_lf", m.replace(CRLF, b"\n"))
    add("lines.bare_cr", m.replace(CRLF, b"\r"))
    lines = m.split(CRLF)
    add("lines.mixed", b"".join(line + (b"\n", b"\r\n", b"\r\n")[i % 3] for i, line in enumerate(lines)))

    # --- encodings inside text parts -------------------------------------------------------------------
    uu = b"".join(binascii.b2a_uu(raw_zip[i:i + 45]).replace(b"\n", CRLF) for i in range(0, len(raw_zip), 45))
    add("text.uuencode", standard("uu", b"Content-Type: text/plain\r\n\r\nHere:\r\n\r\nbegin 644 invoice.zip\r\n" +
                                  uu + b"`\r\nend\r\n"))
    add("text.uuencode_in_html", standard("uuhtml", b"Content-Type: text/html\r\n\r\n<pre>\r\nbegin 600 invoice.zip\r\n"
                                          + uu + b"`\r\nend\r\n</pre>\r\n"))
    add("text.yenc", standard("yenc", b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\nFile:\r\n" +
                              yenc("invoice.zip", raw_zip)))
    add("text.binhex", standard("binhex", b"Content-Type: text/plain\r\n\r\n" + binhex("invoice.zip", raw_zip)))
    add("text.body_only_uuencode", head("uubody") + b"Content-Type: text/plain\r\n\r\nbegin 644 invoice.zip\r\n" + uu +
        b"`\r\nend\r\n")
    add("text.application_binhex", standard("binhexpart", b"Content-Type: application/mac-binhex40; "
                                            b"name=\"invoice.hqx\"\r\n\r\n" + binhex("invoice.zip", raw_zip)))

    # --- messages in messages -----------------------------------------------------------------------------
    inner_msg = mixed("inner", [TEXT_PART, zip_part()], boundary=b"==inner==")
    add("message.rfc822", standard("rfc822", b"Content-Type: message/rfc822\r\n\r\n" + inner_msg))
    add("message.rfc822_base64", standard("rfc822b64", b"Content-Type: message/rfc822\r\n"
                                          b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(inner_msg) + CRLF))
    middle = mixed("middle", [TEXT_PART, b"Content-Type: message/rfc822\r\n\r\n" + inner_msg], boundary=b"==mid==")
    add("message.rfc822_nested_twice", standard("rfc822x2", b"Content-Type: message/rfc822\r\n\r\n" + middle))
    half = len(inner_msg) // 2
    add("message.partial_1_of_2", head("partial1") + b"Content-Type: message/partial; id=\"p1@outside.test\"; "
        b"number=1; total=2\r\n\r\n" + inner_msg[:half])
    add("message.partial_2_of_2", head("partial2") + b"Content-Type: message/partial; id=\"p1@outside.test\"; "
        b"number=2; total=2\r\n\r\n" + inner_msg[half:])
    add("message.partial_whole", head("partial3") + b"Content-Type: message/partial; id=\"p2@outside.test\"; "
        b"number=1; total=1\r\n\r\n" + inner_msg)
    add("message.rfc822_quoted_printable", standard("rfc822qp", b"Content-Type: message/rfc822\r\n"
                                                    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" +
                                                    qp(inner_msg) + CRLF))
    add("message.partial_nested", standard("partial4", b"Content-Type: message/partial; id=\"p3@outside.test\"; "
                                           b"number=1; total=1\r\n\r\n" + inner_msg))
    add("message.multipart_signed", mixed("signed", [
        b"Content-Type: multipart/mixed; boundary=\"sg-in\"\r\n\r\n--sg-in\r\n" + TEXT_PART + b"--sg-in\r\n" +
        zip_part() + b"--sg-in--\r\n",
        b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwEAAA==\r\n"],
        ctype=b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; "
              b"boundary=\"==b1==\"\r\n"))
    add("message.external_body_plus_zip", mixed("extbody", [
        b"Content-Type: message/external-body; access-type=URL; URL=\"http://outside.test/x.zip\"\r\n\r\n"
        b"Content-Type: application/zip\r\n\r\n", zip_part()]))
    digest = (b"Content-Type: multipart/digest; boundary=\"dg\"\r\n\r\n--dg\r\n\r\n" + inner_msg + b"\r\n--dg--\r\n")
    add("message.digest_default_rfc822", mixed("digest", [TEXT_PART, digest]))
    alt = (b"Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n--alt\r\n" + TEXT_PART + b"--alt\r\n" +
           zip_part() + b"--alt--\r\n")
    add("message.zip_in_alternative", mixed("alt", [alt]))
    deep = zip_part()
    for i in range(12):
        deep = (f"Content-Type: multipart/mixed; boundary=\"deep-{i}-x\"\r\n\r\n--deep-{i}-x\r\n".encode() + deep +
                f"--deep-{i}-x--\r\n".encode())
    add("message.deep_nesting", mixed("deep", [TEXT_PART, deep]))

    # --- dangerous names hidden -----------------------------------------------------------------------------
    def name_variant(name: str, headers: bytes, encoding: bytes = b"base64") -> None:
        add(name, standard(name, named(headers, encoding=encoding)), hides="name")

    name_variant("name.rfc2231_split_exe", b"Content-Type: application/octet-stream\r\n"
                 b"Content-Disposition: attachment;\r\n filename*0=\"invoice.pd\";\r\n filename*1=\"f.exe\"\r\n")
    name_variant("name.rfc2231_encoded_exe", b"Content-Type: application/octet-stream\r\n"
                 b"Content-Disposition: attachment; filename*=utf-8''invoice%2Eexe\r\n")
    name_variant("name.rfc2231_split_encoded", b"Content-Type: application/octet-stream\r\n"
                 b"Content-Disposition: attachment;\r\n filename*0*=utf-8''invoice%2E;\r\n filename*1=\"e\";\r\n"
                 b" filename*2*=%78%65\r\n")
    name_variant("name.rfc2231_out_of_order", b"Content-Type: application/octet-stream\r\n"
                 b"Content-Disposition: attachment;\r\n filename*1=\".exe\";\r\n filename*0=\"invoice\"\r\n")
    name_variant("name.encoded_word_b", b"Content-Type: application/octet-stream\r\n"
                 b"Content-Disposition: attachment; filename=\"=?utf-8?B?aW52b2ljZS5leGU=?=\"\r\n")
    name_variant("name.encoded_word_q_unquoted", b"Content-Type: application/octet-stream; "
                 b"name==?iso-8859-1?Q?invoice=2Eexe?=\r\nContent-Disposition: attachment\r\n")
    name_variant("name.encoded_word_split", b"Content-Type: application/octet-stream\r\n"
                 b"Content-Disposition: attachment; filename=\"=?utf-8?Q?invoice?= =?utf-8?Q?=2Eexe?=\"\r\n")
    name_variant("name.name_vs_filename", b"Content-Type: application/octet-stream; name=\"invoice.exe\"\r\n"
                 b"Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n")
    name_variant("name.duplicate_filename_param", b"Content-Type: application/octet-stream\r\n"
                 b"Content-Disposition: attachment; filename=\"invoice.pdf\"; filename=\"invoice.exe\"\r\n")
    name_variant("name.duplicate_disposition", b"Content-Type: application/octet-stream\r\n"
                 b"Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n"
                 b"Content-Disposition: attachment; filename=\"invoice.exe\"\r\n")
    name_variant("name.trailing_dot_space", b"Content-Type: application/octet-stream\r\n"
                 b"Content-Disposition: attachment; filename=\"invoice.exe. \"\r\n")
    name_variant("name.path_prefix", b"Content-Type: application/octet-stream\r\n"
                 b"Content-Disposition: attachment; filename=\"C:\\\\docs\\\\invoice.pdf\\\\..\\\\run.exe\"\r\n")
    name_variant("name.unquoted_with_spaces", b"Content-Type: application/octet-stream\r\n"
                 b"Content-Disposition: attachment; filename=invoice .pdf .exe\r\n")
    name_variant("name.rtl_override", b"Content-Type: application/octet-stream\r\n"
                 b"Content-Disposition: attachment; filename*=utf-8''invoice%E2%80%AEfdp.exe\r\n")
    name_variant("name.case_of_param", b"Content-Type: application/octet-stream\r\n"
                 b"Content-Disposition: ATTACHMENT; FILENAME=\"INVOICE.EXE\"\r\n")
    name_variant("name.space_before_colon_disposition", b"Content-Type: application/octet-stream\r\n"
                 b"Content-Disposition : attachment; filename=\"invoice.exe\"\r\n")
    name_variant("name.rfc2231_in_content_type", b"Content-Type: application/octet-stream;\r\n"
                 b" name*0=\"inv\";\r\n name*1=\"oice.exe\"\r\n")
    name_variant("name.encoded_word_inside_rfc2231", b"Content-Type: application/octet-stream\r\n"
                 b"Content-Disposition: attachment; filename*=utf-8''%3D%3Futf-8%3FB%3FaW52b2ljZS5leGU%3D%3F%3D\r\n")
    name_variant("name.plain_and_rfc2231_disagree", b"Content-Type: application/octet-stream\r\n"
                 b"Content-Disposition: attachment; filename=\"invoice.pdf\"; filename*=utf-8''invoice.exe\r\n")
    name_variant("name.nul_before_safe_extension", b"Content-Type: application/octet-stream\r\n"
                 b"Content-Disposition: attachment; filename*=utf-8''invoice.exe%00.pdf\r\n")
    name_variant("name.qp_encoded_content", b"Content-Type: application/octet-stream; name=\"invoice.exe\"\r\n",
                 encoding=b"quoted-printable")
    add("name.uuencode_exe_in_text", standard("uuexe", b"Content-Type: text/plain\r\n\r\nbegin 644 invoice.exe\r\n" +
                                              b"".join(binascii.b2a_uu(HARMLESS[i:i + 45]).replace(b"\n", CRLF)
                                                       for i in range(0, len(HARMLESS), 45)) + b"`\r\nend\r\n"),
        hides="name")
    add("name.yenc_exe_in_text", standard("yencexe", b"Content-Type: text/plain\r\n\r\n" +
                                          yenc("invoice.exe", HARMLESS)), hides="name")
    add("name.binhex_exe_in_text", standard("binhexexe", b"Content-Type: text/plain\r\n\r\n" +
                                            binhex("invoice.exe", HARMLESS)), hides="name")
    return v


def control_messages() -> list[tuple[str, bytes]]:
    """Ordinary well-formed mail with harmless quirks, which the gateway must deliver."""
    pdf = files.pdf()
    out = [
        ("plain text", head("hello") + b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello, lunch at noon?\r\n"),
        ("pdf attachment", mixed("report", [TEXT_PART, named(
            b"Content-Type: application/pdf; name=\"report.pdf\"\r\n"
            b"Content-Disposition: attachment; filename=\"report.pdf\"\r\n", body=pdf)])),
        ("rfc2231 accented name", mixed("resume", [TEXT_PART, named(
            b"Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n"
            b" filename*0*=utf-8''r%C3%A9sum;\r\n filename*1*=%C3%A9.pdf\r\n", body=pdf)])),
        ("encoded-word name", mixed("ew", [TEXT_PART, named(
            b"Content-Type: application/pdf; name=\"=?utf-8?Q?Pr=C3=BCfung.pdf?=\"\r\n"
            b"Content-Disposition: attachment; filename=\"=?utf-8?Q?Pr=C3=BCfung.pdf?=\"\r\n", body=pdf)])),
        ("alternative html", mixed("alt", [TEXT_PART, b"Content-Type: text/html\r\n\r\n<p>Hi</p>\r\n"],
                                   ctype=b"Content-Type: multipart/alternative; boundary=\"==b1==\"\r\n")),
        ("preamble text", mixed("pre", [TEXT_PART], preamble=b"This is a multi-part message in MIME format.\r\n\r\n")),
        ("epilogue text", mixed("epi", [TEXT_PART], epilogue=b"\r\nEnd of message.\r\n")),
        ("bare lf", mixed("lf", [TEXT_PART, named(b"Content-Type: text/csv; name=\"d.csv\"\r\n",
                                                  body=b"a,b\r\n1,2\r\n")]).replace(CRLF, b"\n")),
        ("unwrapped base64", mixed("long", [TEXT_PART, b"Content-Type: application/pdf; name=\"r.pdf\"\r\n"
                                            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(pdf) +
                                            CRLF])),
        ("quoted-printable text", head("qp") + b"Content-Type: text/plain; charset=iso-8859-1\r\n"
         b"Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=E9 at 10, soft=\r\nbreak.\r\n"),
        ("forwarded message", mixed("fwd", [TEXT_PART, b"Content-Type: message/rfc822\r\n\r\n" +
                                            head("orig") + b"Content-Type: text/plain\r\n\r\nOriginal.\r\n"])),
        ("space before a header colon", head("xodd", b"X-Mailer : Old Mailer 2.1\r\n") +
         b"Content-Type: text/plain; charset=us-ascii\r\n\r\nA harmless quirk of an old mailer.\r\n"),
        ("bounce with an encoded delivery-status", mixed("dsn", [
            TEXT_PART, b"Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
            b64(b"Reporting-MTA: dns; mx.outside.test\r\n\r\nFinal-Recipient: rfc822; x@outside.test\r\n"
                b"Action: failed\r\nStatus: 5.1.1\r\n") + CRLF],
            ctype=b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"==b1==\"\r\n")),
        ("upper-case headers", head("upper") + b"CONTENT-TYPE: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
         b"CONTENT-TRANSFER-ENCODING: 7BIT\r\n\r\nShouting headers.\r\n"),
        ("zip of a document", mixed("zip", [TEXT_PART, named(
            b"Content-Type: application/zip; name=\"docs.zip\"\r\n", body=files.zip_of({"a.pdf": pdf}))])),
        ("uuencode-like text", head("uutext") + b"Content-Type: text/plain\r\n\r\nbegin 644 is a mode; nothing "
         b"follows.\r\nThe yEnc =ybegin talk and (This file must be converted with BinHex 4.0) are quoted here.\r\n"),
    ]
    return out
