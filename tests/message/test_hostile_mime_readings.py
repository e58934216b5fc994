"""MIME that mail clients read in more than one way: every reading a common client could take is decoded,
every file any reading yields is scanned, and readings that disagree on the files hold the message as
malformed.

Each hostile variant hides the EICAR zip (stored, so the string sits whole inside it) so that only a
reading other than the one the standard library takes puts the string back together: quoted-printable
soft breaks and escapes written oddly, base64 laid out oddly, two boundary parameters, odd multipart
types. Through a real SMTP session, the session's clamd and the SQLite quarantine: none reaches the
sink; the same structures well formed around a harmless zip do.
"""

from __future__ import annotations

import asyncio
import base64
import quopri
import random

import pytest

from gateway.message import encodings, mime
from gateway.model import Direction
from tests.message.test_hostile_mime import HOLDING, OUTSIDE, WHOLE, offline, send_raw  # noqa: F401 (a fixture)
from tests.support import files
from tests.support.hostile import CRLF, TEXT_PART, Variant, head, mixed, standard, zip_part

ZIP_HEADERS = (b"Content-Type: application/zip; name=\"invoice.zip\"\r\n"
               b"Content-Disposition: attachment; filename=\"invoice.zip\"\r\n")
QP_HEADERS = ZIP_HEADERS + b"Content-Transfer-Encoding: quoted-printable\r\n"
B64_HEADERS = ZIP_HEADERS + b"Content-Transfer-Encoding: base64\r\n"


def hidden() -> bytes:
    return files.zip_of({"readme.txt": files.eicar()})


def harmless() -> bytes:
    return files.zip_of({"readme.txt": b"Quarterly figures, as discussed on the phone.\r\n" * 3})


def qp_encode(data: bytes, width: int = 70) -> bytes:
    """Quoted-printable as a careful encoder writes it: every byte outside printable ASCII escaped."""
    out = bytearray()
    col = 0
    for byte in data:
        piece = bytes([byte]) if 33 <= byte <= 126 and byte != 61 else b"=%02X" % byte
        if col + len(piece) > width:
            out += b"=\r\n"
            col = 0
        out += piece
        col += len(piece)
    return bytes(out)


def qp_with_eicar(written: bytes) -> bytes:
    """The EICAR zip as quoted-printable, with the EICAR string written as `written` (odd soft breaks
    or escapes) on lines of its own."""
    data, eicar = hidden(), files.eicar()
    at = data.index(eicar)
    return (qp_encode(data[:at]) + b"=\r\n" + written + b"=\r\n" + qp_encode(data[at + len(eicar):]))


def b64_per_line(data: bytes, sizes: tuple[int, ...] = (20, 37, 43, 50)) -> bytes:
    """Each line encoded on its own without padding (lines not multiples of 4): clients that decode
    line by line get the file, a decoder that joins the lines first gets noise."""
    lines, at, n = [], 0, 0
    while at < len(data):
        size = sizes[n % len(sizes)]
        lines.append(base64.b64encode(data[at:at + size]).rstrip(b"="))
        at += size
        n += 1
    return CRLF.join(lines)


def b64_lines(data: bytes, end: bytes = CRLF, width: int = 76) -> bytes:
    text = base64.b64encode(data)
    return end.join(text[i:i + width] for i in range(0, len(text), width))


def two_boundaries(subject: str, zipped: bytes, ctype: bytes) -> bytes:
    """A decoy multipart (boundary "decoy") whose only part holds, as text, a second multipart (boundary
    "real") with the zip: which one a client sees depends on the boundary parameter it takes."""
    real = (b"--real\r\n" + TEXT_PART + b"--real\r\n" + zip_part(b64_lines(zipped), B64_HEADERS) +
            b"--real--\r\n")
    body = b"--decoy\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + real + b"--decoy--\r\n"
    return head(subject) + ctype + CRLF + body


def odd_type(subject: str, zipped: bytes, type_: bytes) -> bytes:
    return mixed(subject, [TEXT_PART, zip_part(b64_lines(zipped), B64_HEADERS)],
                 ctype=b"Content-Type: " + type_ + b"; boundary=\"==b1==\"\r\n")


def variants() -> list[Variant]:
    e = files.eicar()
    at_a = e.index(b"EICAR") + 3            # the A of EICAR
    at_h = e.index(b"$H+H") + 1             # the first H of the tail
    v: list[Variant] = []

    def qp_variant(name: str, written: bytes) -> None:
        v.append(Variant(f"qp.{name}", "virus", standard(name, zip_part(qp_with_eicar(written), QP_HEADERS))))

    qp_variant("space_after_soft_break", e[:20] + b"= \r\n" + e[20:])
    qp_variant("tab_after_soft_break", e[:20] + b"=\t\r\n" + e[20:])
    qp_variant("spaces_then_escape", e[:at_a] + b"=  =41=\r\n" + e[at_a + 1:])
    qp_variant("space_then_escape", e[:at_a] + b"= =41=\r\n" + e[at_a + 1:])
    qp_variant("tab_then_escape", e[:at_a] + b"=\t=41=\r\n" + e[at_a + 1:])
    qp_variant("non_hex_w", e[:30] + b"=W=\r\n" + e[30:])
    qp_variant("non_hex_xx", e[:30] + b"=XX" + e[30:])
    qp_variant("non_hex_h", e[:at_h] + b"=H" + e[at_h + 1:])

    def b64_variant(name: str, body: bytes) -> None:
        v.append(Variant(f"base64.{name}", "virus", standard(name, zip_part(body, B64_HEADERS))))

    b64_variant("cr_line_ends", b64_lines(hidden(), b"\r"))
    b64_variant("cr_line_ends_not_multiple_of_4", b64_per_line(hidden()).replace(CRLF, b"\r"))
    b64_variant("lines_not_multiple_of_4", b64_per_line(hidden()))
    b64_variant("junk_blank_line_then_data", b"Thisisnotbase64justletters\r\n\r\n" + b64_lines(hidden()))
    b64_variant("junk_blank_lines_then_data", b"QUFB\r\nabc\r\n\r\n\r\n" + b64_lines(hidden()))

    def boundary_variant(name: str, ctype: bytes) -> None:
        v.append(Variant(f"boundary.{name}", "virus", two_boundaries(name, hidden(), ctype)))

    boundary_variant("plain_decoy_rfc2231_real",
                     b"Content-Type: multipart/mixed; boundary=\"decoy\"; boundary*=us-ascii''real\r\n")
    boundary_variant("rfc2231_real_plain_decoy",
                     b"Content-Type: multipart/mixed; boundary*=us-ascii''real; boundary=\"decoy\"\r\n")
    boundary_variant("rfc2231_decoy_plain_real",
                     b"Content-Type: multipart/mixed; boundary*=us-ascii''decoy; boundary=\"real\"\r\n")
    boundary_variant("plain_real_rfc2231_decoy",
                     b"Content-Type: multipart/mixed; boundary=\"real\"; boundary*=us-ascii''decoy\r\n")
    boundary_variant("rfc2231_continued_real",
                     b"Content-Type: multipart/mixed; boundary=\"decoy\";\r\n boundary*0=\"re\";\r\n"
                     b" boundary*1=\"al\"\r\n")

    def type_variant(name: str, type_: bytes) -> None:
        v.append(Variant(f"multipart.{name}", "virus", odd_type(name, hidden(), type_)))
    # Odd types around a zip the standard library can read: the readings must agree.
    for name, type_ in TYPES:
        type_variant(name, type_)
    return v


TYPES = [("space_before_subtype", b"multipart/ mixed"), ("space_before_slash", b"multipart /mixed"),
         ("spaces_around_slash", b"multipart / mixed"), ("x_subtype", b"multipart/x-whatever"),
         ("x_type", b"x-multipart/mixed"), ("tab_before_subtype", b"multipart/\tmixed"),
         ("comment_before_subtype", b"multipart/(c) mixed")]


def controls() -> list[tuple[str, bytes]]:
    """The same structures, well formed (or odd in ways every reading agrees on), around a harmless zip."""
    z = harmless()
    out = [
        ("qp zip", standard("qpc", zip_part(qp_encode(z), QP_HEADERS))),
        ("qp text with stray equals signs", head("qpt") + b"Content-Type: text/plain; charset=us-ascii\r\n"
         b"Content-Transfer-Encoding: quoted-printable\r\n\r\nIf a = b and b =c then a=Wb, see x=y&z=1 = \r\n"
         b"and 50% =  half.=\r\n\r\n"),
        ("qp html with unencoded link", head("qph") + b"Content-Type: text/html; charset=utf-8\r\n"
         b"Content-Transfer-Encoding: quoted-printable\r\n\r\n<a href=\"https://x.test/?a=1&id=XYZ\">x</a>=\r\n"
         b"<p>caf=C3=A9</p>\r\n"),
        ("base64 crlf", standard("b64c", zip_part(b64_lines(z), B64_HEADERS))),
        ("base64 lf", standard("b64lf", zip_part(b64_lines(z, b"\n"), B64_HEADERS))),
        ("base64 72 columns", standard("b64w", zip_part(b64_lines(z, width=72), B64_HEADERS))),
        ("base64 trailing blank lines", standard("b64t", zip_part(b64_lines(z) + b"\r\n\r\n\r\n", B64_HEADERS))),
        ("one boundary, plain and rfc2231 equal", two_boundaries(
            "bsame", z, b"Content-Type: multipart/mixed; boundary=\"real\"; boundary*=us-ascii''real\r\n")),
        ("multipart/x-whatever", odd_type("xw", z, b"multipart/x-whatever")),
        ("multipart/ mixed", odd_type("sp", z, b"multipart/ mixed")),
    ]
    return out


VARIANTS = variants()


def test_every_class_is_generated_and_the_string_is_never_whole():
    groups = {v.name.split(".")[0] for v in VARIANTS}
    assert groups == {"qp", "base64", "boundary", "multipart"}
    assert len(VARIANTS) >= 20
    assert all(files.eicar() not in v.raw for v in VARIANTS)


async def test_no_reading_hides_the_zip(gw, sink):
    """Every variant is held (virus found in some reading, or malformed), none reaches the sink."""
    seen: set[str] = set()
    missed = []
    for variant in VARIANTS:
        code, text = await send_raw(gw.port, variant.raw)
        new = [item for item in await gw.store.list() if item.id not in seen]
        seen.update(item.id for item in new)
        kinds = {f.kind for item in new for f in item.findings}
        if code < 400 and not (len(new) == 1 and any(k.startswith(HOLDING) for k in kinds)):
            missed.append((variant.name, code, sorted(kinds)))
    await asyncio.sleep(0.05)
    assert missed == [], "\n".join(map(str, missed))
    assert sink.messages == []


async def test_well_formed_controls_are_delivered(gw, sink):
    made = controls()
    for name, raw in made:
        code, text = await send_raw(gw.port, raw)
        assert code == 250, f"{name}: {code} {text}"
    await sink.wait_for(len(made))
    assert [(i.subject, i.kinds) for i in await gw.store.list()] == []
    assert len(sink.messages) == len(made)


async def test_our_parser_alone_holds_every_variant(offline):  # noqa: F811
    """Without clamd's own MIME parser (scan_whole_message off), each variant is still held: clamd finds
    the virus in the file of another reading, or the readings disagree (malformed)."""
    pipeline = offline(whole=False)
    missed = []
    for variant in VARIANTS:
        inspection = await pipeline.inspect(OUTSIDE, variant.raw, direction=Direction.INBOUND)
        findings = inspection.verdict.findings
        assert all(f.part != WHOLE for f in findings)
        viruses = [f for f in findings if f.kind == "virus"]
        if inspection.verdict.action.value != "quarantine" or not viruses:
            missed.append((variant.name, inspection.verdict.rule, sorted({f.kind for f in findings})))
    assert missed == [], "\n".join(map(str, missed))


@pytest.mark.parametrize(("name", "kind"), [("qp.space_after_soft_break", "malformed.ambiguous_encoding"),
                                            ("base64.junk_blank_line_then_data", "malformed.ambiguous_encoding"),
                                            ("boundary.plain_decoy_rfc2231_real", "malformed.ambiguous_mime"),
                                            ("multipart.space_before_slash", "malformed.ambiguous_mime")])
async def test_disagreement_is_held_as_malformed_with_the_virus_on_the_other_reading(offline, name, kind):  # noqa: F811
    [variant] = [v for v in VARIANTS if v.name == name]
    inspection = await offline(whole=False).inspect(OUTSIDE, variant.raw, direction=Direction.INBOUND)
    assert inspection.verdict.action.value == "quarantine"
    [finding] = [f for f in inspection.verdict.findings if f.kind == kind]
    assert finding.detector == "mime" and "every reading was checked" in finding.detail
    viruses = [f for f in inspection.verdict.findings if f.kind == "virus"]
    assert viruses and all("(another reading)" in f.part for f in viruses), viruses


AGREE = {"base64.cr_line_ends"}       # read alike by every client, and by us


@pytest.mark.parametrize("name", [v.name for v in VARIANTS if not v.name.startswith("multipart.") and
                                  v.name not in AGREE])
def test_disagreeing_readings_are_malformed_and_every_reading_is_a_part(name):
    """The parser itself: the file of the reading a client takes is among the parts, and the message
    carries an ambiguity defect."""
    [variant] = [v for v in VARIANTS if v.name == name]
    parsed = mime.parse(variant.raw)
    assert any(files.eicar() in p.payload for p in parsed.attachments), [p.label for p in parsed.parts]
    assert {"ambiguous_encoding", "ambiguous_mime"} & set(parsed.defects), parsed.defects


@pytest.mark.parametrize("name", [n for n, _ in TYPES])
def test_odd_multipart_types_still_yield_the_file(name):
    [variant] = [v for v in VARIANTS if v.name == f"multipart.{name}"]
    parsed = mime.parse(variant.raw)
    assert any(files.eicar() in p.payload for p in parsed.attachments), [p.label for p in parsed.parts]


def test_normal_mail_takes_no_second_reading():
    for name, raw in controls():
        parsed = mime.parse(raw)
        assert not {"ambiguous_encoding", "ambiguous_mime"} & set(parsed.defects), name
        assert all(p.reading == "" for p in parsed.parts), name



def test_what_encoders_write_takes_no_second_reading():
    """Base64 as encoders lay it out (any width a multiple of 4, CRLF, LF or CR, a trailing line end or
    none) and quoted-printable as encoders write it, of random content: no other reading is taken."""
    rng = random.Random(16)
    for _ in range(200):
        data = rng.randbytes(rng.randrange(0, 3000))
        width = 4 * rng.randrange(1, 30)
        end = rng.choice((b"\r\n", b"\n", b"\r"))
        body = b64_lines(data, end, width) + rng.choice((b"", end, end * 2))
        assert encodings.base64_readings(body) == [], (width, end)
        assert encodings.decode_base64(body) == (data, True)
        qp = quopri.encodestring(data).replace(b"\n", end)
        assert encodings.qp_readings(qp) == [] and encodings.qp_readings(qp_encode(data)) == []


def test_odd_layouts_are_noticed():
    data = bytes(range(256)) * 3
    regular = b64_lines(data)
    for irregular in (regular[:40] + CRLF + regular[40:], regular.replace(CRLF, b"\r\r\n")):
        readings = encodings.base64_readings(irregular)      # noticed, and every reading agrees
        assert readings and all(r == data for r in readings)
    assert data in encodings.base64_readings(b64_per_line(data))
    assert data in encodings.base64_readings(b"abc\r\n\r\n" + regular)
