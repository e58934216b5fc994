"""Transfer encodings and files embedded in text, decoded the way mail clients decode them.

Content-Transfer-Encoding is read as clients read it (case, folding, quotes and comments ignored);
base64 is decoded leniently but reported as not valid when a strict decoder would refuse it (clients
disagree on such data); uuencode, yEnc and BinHex 4.0 blocks inside text bodies are files of their
own. Every function is bounded by a byte limit and never raises on attacker input except where noted.
"""

from __future__ import annotations

import binascii
import email.message
import io
import quopri
import re

_SLASHES = re.compile(r"[\\/]")

IDENTITY = frozenset({"7bit", "8bit", "binary"})
_UU = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})
_KNOWN = IDENTITY | _UU | {"base64", "quoted-printable"}
_COMMENT = re.compile(r"\([^()]*\)")
_B64_SPACE = b" \t\r\n\x0b\x0c"
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/=]+")


def transfer_encoding(msg: email.message.Message) -> str:
    """The Content-Transfer-Encoding token as clients read it: case, folding, quotes and comments ignored."""
    value = str(msg.get("Content-Transfer-Encoding", "") or "")
    value = _COMMENT.sub(" ", value).replace('"', " ").replace("'", " ").strip().lower()
    token = value.split()[0] if value else "7bit"
    if token not in _KNOWN and token.replace("-", "") in ("7bit", "8bit"):
        return token.replace("-", "")
    return token


def decode_body(body: bytes, encoding: str, limit: int) -> tuple[bytes, bool | None]:
    """(decoded bytes, valid): valid is False when the encoding was broken and decoded leniently, None
    when the encoding is unknown (the bytes are passed through as they are)."""
    if encoding == "base64":
        return decode_base64(body)
    if encoding == "quoted-printable":
        return quopri.decodestring(body), True
    if encoding in _UU:
        files = uuencoded(body, limit)
        return (files[0][1], True) if files else (body, False)
    return body, encoding in IDENTITY or None


def decode_base64(data: bytes) -> tuple[bytes, bool]:
    """Base64 as mail clients decode it: whitespace and missing padding are fine (valid); characters
    outside the alphabet are skipped and padding inside the data starts a new run (not valid)."""
    compact = data.translate(None, _B64_SPACE)
    body = compact.rstrip(b"=")
    if len(body) % 4 != 1 and len(compact) - len(body) <= 2:
        try:
            return binascii.a2b_base64(body + b"=" * (-len(body) % 4), strict_mode=True), True
        except binascii.Error:
            pass
    out = bytearray()
    for run in _B64_JUNK.sub(b"", compact).split(b"="):
        run = run[: len(run) - 1] if len(run) % 4 == 1 else run
        if run:
            out += binascii.a2b_base64(run + b"=" * (-len(run) % 4))
    return bytes(out), False


# --- other readings of a broken or oddly laid out encoding ------------------------------------------

# An "=" that is neither an escape nor a soft line break: "= " before the line end, "=W", "=XX".
_QP_ODD = re.compile(rb"=(?![0-9A-Fa-f]{2}|\r\n|\n|\r|\Z)")
_QP_TOKEN = re.compile(rb"=([0-9A-Fa-f]{2})|=(?:\r\n|\n|\r|\Z)|=([ \t]+)|=([^\r\n=]{0,2})")
_TRAILING_SPACE = re.compile(rb"[ \t]+(?=\r\n|\n|\r|\Z)")
# How clients read an "=" that starts no escape: kept, dropped, dropped with what follows, and "="
# followed by blanks taken as a soft line break wherever it is.
_QP_MODES = ("literal", "drop_equals", "drop_escape", "blank_break")
_LINE_END = re.compile(rb"\r\n|\n|\r")
_MAX_BLOCKS_READ = 4


def encoding_readings(body: bytes, encoding: str) -> list[bytes]:
    """The other decodings of `body` that mail clients take, only where the raw shows a construct they
    read differently (normal mail costs one regex search or a few slices); [] when there is none."""
    if encoding == "quoted-printable":
        return qp_readings(body)
    if encoding == "base64":
        return base64_readings(body)
    return []


def qp_readings(body: bytes) -> list[bytes]:
    """Quoted-printable with an "=" that is no escape: RFC 2045 trailing blanks dropped (so "= " at a
    line end is a soft break, which the standard library keeps as text) and each way of reading it."""
    if not _QP_ODD.search(body):
        return []
    stripped = _TRAILING_SPACE.sub(b"", body)
    return [_qp(stripped, mode) for mode in _QP_MODES]


def _qp(body: bytes, mode: str) -> bytes:
    def token(m: re.Match[bytes]) -> bytes:
        if m.group(1) is not None:
            return bytes.fromhex(m.group(1).decode("ascii"))
        rest = m.group(2) if m.group(2) is not None else m.group(3)
        if rest is None or (mode == "blank_break" and m.group(2) is not None):
            return b""                                  # a soft line break
        if mode == "literal" or mode == "blank_break":
            return b"=" + rest
        return rest if mode == "drop_equals" else b""
    return _QP_TOKEN.sub(token, body)


def _regular_base64(body: bytes) -> bool:
    """Lines of one length, a multiple of 4, with one kind of line end, and a shorter last line: what
    every encoder writes and every client reads alike. Checked with slices and counts over the body
    (no copy of it, no loop over its lines)."""
    start, end = 0, len(body)
    while start < end and body[start] in _B64_SPACE:
        start += 1
    while end > start and body[end - 1] in _B64_SPACE:
        end -= 1
    first = _LINE_END.search(body, start, end)
    if first is None:
        return True
    width, sep = first.start() - start, first.group()
    if width == 0 or width % 4:
        return False
    step = width + len(sep)
    full = (end - start) // step
    for i in range(len(sep)):
        if body[start + width + i:start + full * step:step] != sep[i:i + 1] * full:
            return False
    # No other line end inside the lines (a stray CR within a line is whitespace to every decoder).
    return body.count(sep[-1:], start, end) == full and end - start - full * step <= width


def base64_readings(body: bytes) -> list[bytes]:
    """Base64 laid out oddly: lines that are not multiples of 4 (decoded line by line by some clients),
    or blocks separated by blank lines (junk, a blank line, then data: some clients read one block)."""
    if _regular_base64(body):
        return []
    text = body.strip(_B64_SPACE)
    # Lines end at LF ("\r\r\n" is one line end, as clients read it); at CR only where there is no LF.
    lines = [line.strip(_B64_SPACE) for line in text.split(b"\n" if b"\n" in text else b"\r")]
    readings = [b"".join(_b64_line(line) for line in lines)]
    blocks: list[list[bytes]] = [[]]
    for line in lines:
        if line:
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    blocks = [b for b in blocks if b]
    if len(blocks) > 1:
        for block in blocks[:_MAX_BLOCKS_READ - 1] + blocks[-1:]:
            readings.append(decode_base64(b"".join(block))[0])
    return readings


def _b64_line(line: bytes) -> bytes:
    run = _B64_JUNK.sub(b"", line).rstrip(b"=")
    run = run[: len(run) - 1] if len(run) % 4 == 1 else run
    try:
        return binascii.a2b_base64(run + b"=" * (-len(run) % 4)) if run else b""
    except binascii.Error:
        return b""


_UU_BEGIN = re.compile(rb"^begin [0-7]{3,4} ([^\r\n]{1,255})\r?$", re.MULTILINE)
_UU_MAX_FILES = 20


def uuencoded(text: bytes, limit: int) -> list[tuple[str, bytes]]:
    """(name, content) of each uuencoded block in a text body, at most `limit` bytes in all."""
    found: list[tuple[str, bytes]] = []
    total = 0
    for match in _UU_BEGIN.finditer(text):
        if len(found) >= _UU_MAX_FILES or total > limit:
            break
        out = bytearray()
        for raw_line in io.BytesIO(text[match.end():]):
            line = raw_line.rstrip(b"\r\n ")
            if line in (b"end", b"`", b""):
                if line == b"end":
                    break
                continue
            try:
                out += binascii.a2b_uu(line)
            except binascii.Error:      # encoders that pad lines oddly: decode the declared length only
                try:
                    out += binascii.a2b_uu(line[:(((line[0] - 32) & 63) * 4 + 5) // 3])
                except binascii.Error:
                    break
            if total + len(out) > limit:
                break
        total += len(out)
        name = match.group(1).decode("utf-8", "replace").strip()
        found.append((_SLASHES.split(name)[-1].strip() or "uuencoded", bytes(out)))
    return found


# --- yEnc and BinHex blocks inside text --------------------------------------------------------------

_YBEGIN = re.compile(rb"^=ybegin ([^\r\n]{0,1000})\r?$", re.MULTILINE)
_YEND = re.compile(rb"^=yend[^\r\n]*\r?$", re.MULTILINE)
_YDEC = bytes((i - 42) % 256 for i in range(256))
_BINHEX = re.compile(rb"\(This file must be converted with BinHex[^\r\n]*")
_HQX = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"
_HQX_VALUE = {c: i for i, c in enumerate(_HQX)}
_MAX_BLOCKS = 20


def embedded_blocks(text: bytes, limit: int) -> tuple[list[tuple[str, str, bytes]], bool]:
    """([(kind, name, content)], broken) for the yEnc and BinHex 4.0 blocks of a text body."""
    found: list[tuple[str, str, bytes]] = []
    broken = False
    for match in _YBEGIN.finditer(text):
        if len(found) >= _MAX_BLOCKS:
            break
        params = match.group(1).decode("latin-1").rstrip("\r")
        name = params.partition(" name=")[2].strip() or "yenc"
        end = _YEND.search(text, match.end())
        content = _ydecode(text[match.end():end.start() if end else len(text)], limit)
        broken |= end is None
        found.append(("yenc", _SLASHES.split(name)[-1].strip() or "yenc", content))
    for match in _BINHEX.finditer(text):
        if len(found) >= _MAX_BLOCKS:
            break
        decoded = _binhex(text, match.end(), limit)
        if decoded is None:
            broken = True
        elif decoded[0]:
            found.append(("binhex", *decoded))
    return found, broken


def _ydecode(block: bytes, limit: int) -> bytes:
    out = bytearray()
    for line in block.splitlines():
        if line.startswith((b"=ypart", b"=ybegin")):
            continue
        pieces = line.split(b"=")
        out += pieces[0].translate(_YDEC)
        for piece in pieces[1:]:
            if piece:
                out.append((piece[0] - 106) % 256)
                out += piece[1:].translate(_YDEC)
        if len(out) > limit:
            break
    return bytes(out[:limit])


def _binhex(text: bytes, start: int, limit: int) -> tuple[str, bytes] | None:
    """(name, data fork) of a BinHex 4.0 block starting after its banner, or None when it is broken."""
    begin = start
    while begin < len(text) and text[begin] in b" \t\r\n":
        begin += 1
    if text[begin:begin + 1] != b":":
        return "", b""                      # the banner quoted in prose, no block after it
    end = text.find(b":", begin + 1)
    if end < 0:
        return None
    bits = bytearray()
    acc = nbits = 0
    for c in text[begin + 1:end]:
        if c in b" \t\r\n":
            continue
        value = _HQX_VALUE.get(c)
        if value is None:
            return None
        acc = (acc << 6) | value
        nbits += 6
        if nbits >= 8:
            nbits -= 8
            bits.append((acc >> nbits) & 0xFF)
            acc &= (1 << nbits) - 1
        if len(bits) > limit + 4096:
            return None
    out = bytearray()
    i = 0
    while i < len(bits):                    # run-length decoding: 0x90 n repeats the previous byte
        b = bits[i]
        if b == 0x90 and i + 1 < len(bits):
            count = bits[i + 1]
            if count == 0:
                out.append(0x90)
            elif out:
                out += bytes([out[-1]]) * (count - 1)
            i += 2
            continue
        out.append(b)
        i += 1
    if not out or len(out) < out[0] + 22 or not out[0]:
        return None
    n = out[0]
    name = out[1:1 + n].decode("mac_roman", "replace")
    size = int.from_bytes(out[n + 12:n + 16], "big")
    data = bytes(out[n + 22:n + 22 + size])
    if len(data) != size:
        return None
    return _SLASHES.split(name)[-1].strip() or "binhex", data
