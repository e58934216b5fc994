"""Edit a message's top-level header block on the raw bytes, so the body stays byte-identical.

Used to add our X-Gateway-* headers, remove look-alikes that arrive from outside, and prefix the
subject. Values that come from messages (file names, details, the subject) are decoded, made
single-line and RFC 2047 encoded by us here, so nothing an attacker writes can inject a header: no
CR, LF or encoded word of theirs is ever written (an encoded word would be decoded again, line
breaks and all, by whatever reads or rewrites the field: the CVE-2024-6923 class).
"""

from __future__ import annotations

import base64
import binascii
import email.header
import email.parser
import email.policy
import re
from collections.abc import Mapping

_FIELD_START = re.compile(rb"^[^\s:]+[ \t]*:")
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators (str.splitlines() breaks there)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# An RFC 2047 encoded word as lenient readers take it (the email package's is more lenient than the RFC)
_ENCODED_WORD = re.compile(r"=\?([^?\s]{0,80})\?([qQbB])\?([^?]*)\?=")     # linear: no "?" inside
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_FOLD = re.compile(r"\r?\n(?=[ \t])")


def split(raw: bytes) -> tuple[list[bytes], bytes, bytes]:
    """raw -> (header fields, each with its folded lines and line endings; separator; body)."""
    match = re.search(rb"\r?\n\r?\n", raw)
    if match:
        head, sep, body = raw[:match.start()], raw[match.start():match.end()], raw[match.end():]
    else:
        head, sep, body = raw, b"", b""
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    if fields and not fields[-1].endswith(b"\n"):
        fields[-1] += b"\r\n" if b"\r\n" in sep or not sep else b"\n"
        sep = sep[len(b"\r\n"):] if sep.startswith(b"\r\n") else sep[1:]
    return fields, sep, body


def field_name(field: bytes) -> str:
    match = _FIELD_START.match(field)
    return match.group(0)[:-1].strip().decode("ascii", "replace").lower() if match else ""


def safe_value(text: str, limit: int = 2000) -> str:
    """One line of at most `limit` characters, control characters replaced by spaces."""
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _word_bytes(encoding: str, payload: str) -> bytes:
    data = payload.encode("utf-8", "surrogateescape")
    if encoding in "qQ":
        return _QP_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data.replace(b"_", b" "))
    data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    data = data[: len(data) - len(data) % 4] if len(data) % 4 == 1 else data + b"=" * (-len(data) % 4)
    try:
        return base64.b64decode(data)
    except (binascii.Error, ValueError):
        return b""


def _text_of(data: bytes, charset: str) -> str:
    """Bytes in a declared charset; an unknown or unusable one is read as UTF-8, else Latin-1."""
    charset = charset.split("*", 1)[0].strip()     # RFC 2231 language suffix: "utf-8*en"
    try:
        return data.decode(charset, "replace")     # bytes.decode refuses non-text codecs (base64, rot13)
    except Exception:       # unknown names, names with NULs, codecs that fail on hostile bytes
        pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def decode_words(text: str) -> str:
    """RFC 2047 encoded words -> text, whatever the charset (unknown ones too); never raises, and never
    leaves a word encoded for a later reader to decode. Whitespace between adjacent words is dropped."""
    out: list[str] = []
    pos = 0
    for match in _ENCODED_WORD.finditer(text):
        between = text[pos:match.start()]
        if not (out and pos and not between.strip(" \t\r\n")):
            out.append(between)
        out.append(_text_of(_word_bytes(match.group(2), match.group(3)), match.group(1)))
        pos = match.end()
    out.append(text[pos:])
    return "".join(out)


def unescape_8bit(text: str) -> str:
    """A header value of the compat32 parser (8-bit bytes as surrogate escapes) -> text: UTF-8, else Latin-1."""
    if not _SURROGATE.search(text):
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return _SURROGATE.sub("\ufffd", text)


def header_text(text: str, limit: int = 2000) -> str:
    """Text (from a message or a template) made fit to be written as a header value: encoded words
    decoded, folds undone, control characters and line breaks replaced by spaces, whitespace runs
    collapsed, and no "=?" left that could start an encoded word for the next reader; one line of
    at most `limit` characters. The email package or encode_field then encodes it as it must."""
    text = _SURROGATE.sub("\ufffd", unescape_8bit(str(text)))
    for _ in range(5):              # an encoded word may decode to another one
        if "=?" not in text:
            break
        text = decode_words(_FOLD.sub("", text))
    text = " ".join(_CONTROL.sub(" ", text).split())
    text = text.replace("=?", "= ?")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def encode_field(name: str, value: str) -> bytes:
    """A header field 'Name: value' folded at 78 columns, RFC 2047 encoded where not ASCII."""
    value = header_text(value)
    if value.isascii() and len(name) + 2 + len(value) <= 78:     # fits one line: the email package's result
        return f"{name}: {value}\r\n".encode("ascii")
    charset = "us-ascii" if value.isascii() else "utf-8"
    encoded = email.header.Header(value, charset=charset, header_name=name, maxlinelen=78).encode(linesep="\r\n")
    return f"{name}: {encoded}\r\n".encode("ascii")


_OUR_CHARSETS = frozenset({"utf-8", "us-ascii"})
_RAW_WORD = re.compile(rb"=\?([^?\s]*)\?[qQbB]\?")


def check_field(field: bytes) -> None:
    """A field we wrote, as bytes: one field (continuation lines start with white space and are not
    blank), no CR or LF but its folds, and no encoded word but the UTF-8 ones our encoders make.
    Raises ValueError: a notice or a relayed message is never written otherwise."""
    body = field[:-2] if field.endswith(b"\r\n") else field
    lines = body.split(b"\r\n")
    if not _FIELD_START.match(lines[0]) or any(b"\r" in line or b"\n" in line for line in lines):
        raise ValueError(f"header field with a line break: {field[:200]!r}")
    if any(not line[:1].isspace() or not line.strip() for line in lines[1:]):
        raise ValueError(f"header field with a bad continuation line: {field[:200]!r}")
    for match in _RAW_WORD.finditer(body):
        if match.group(1).decode("ascii", "replace").lower() not in _OUR_CHARSETS:
            raise ValueError(f"header field with a foreign encoded word: {field[:200]!r}")


def check_written(raw: bytes, expected: Mapping[str, str],
                  allowed: frozenset[str] = frozenset({"mime-version", "content-type",
                                                       "content-transfer-encoding"})) -> None:
    """The header block of a message we generated, read back as a recipient's software reads it: each
    field well formed (check_field), exactly the fields we set (each once) and `allowed` ones, each
    with the value we meant and no line break or encoded word in it. Raises ValueError otherwise."""
    fields, _, _ = split(raw)
    for f in fields:
        check_field(f)
    message = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
    names = [n.lower() for n in message]
    want = {n.lower() for n in expected}
    if len(names) != len(set(names)) or set(names) != want | (set(names) & allowed):
        raise ValueError(f"the written header fields are {names}, not {sorted(want)}")
    for name, value in expected.items():
        got = str(message[name])
        # white space aside: the email package of Python 3.11 moves some between the words it encodes
        if _CONTROL.search(got) or _ENCODED_WORD.search(got) or "".join(got.split()) != "".join(str(value).split()):
            raise ValueError(f"the written {name} field reads {got[:200]!r}, not {str(value)[:200]!r}")


def rewrite(raw: bytes, *, remove: frozenset[str] = frozenset(), add: list[tuple[str, str]] | None = None,
            subject_prefix: str = "") -> bytes:
    """Remove fields named in `remove` (lower case), prepend `add`, prefix the Subject. Every other
    field passes byte for byte; the ones we write are checked (check_field)."""
    fields, sep, body = split(raw)
    kept = [f for f in fields if field_name(f) not in remove]
    if subject_prefix:
        kept = _prefix_subject(kept, subject_prefix)
    added = [encode_field(name, value) for name, value in (add or [])]
    for f in added:
        check_field(f)
    if not sep:
        sep = b"\r\n"
    return b"".join(added + kept) + sep + body


# A subject we may keep as the sender wrote it behind our prefix: no encoded word, no control
# character but folds, and valid UTF-8 (8-bit subjects of SMTPUTF8 mail).
_PLAIN_VALUE = re.compile(rb"(?:[^\x00-\x1f\x7f]|\t|\r?\n(?=[ \t]))*\r?\n?")


def _prefixed(field_bytes: bytes, prefix: str) -> bytes:
    if not prefix:
        return field_bytes
    name, _, value = field_bytes.partition(b":")
    encoded = prefix if prefix.isascii() else email.header.Header(prefix, "utf-8").encode()
    plain = b"=?" not in value and _PLAIN_VALUE.fullmatch(value) is not None
    if plain:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            plain = False
    if plain:
        if value.lstrip().startswith(encoded.encode()):
            return field_bytes
        return name + b": " + encoded.encode() + b" " + value.lstrip(b" \t")
    # encoded words or control characters: decoded and written again by us, never passed on raw
    current = header_text(value.decode("utf-8", "surrogateescape"))
    written = encode_field("Subject", current if current.startswith(prefix) else f"{prefix} {current}")
    check_field(written)
    # ends as the sender's field ended, so the lines after it (and where the body starts) stay as they were
    ending = next((e for e in (b"\r\n", b"\n", b"\r") if field_bytes.endswith(e)), b"")
    return written.removesuffix(b"\r\n") + ending


def _prefix_subject(fields: list[bytes], prefix: str) -> list[bytes]:
    prefix = header_text(prefix, 200)
    out, done = [], False
    for f in fields:
        if not done and field_name(f) == "subject":
            f = _prefixed(f, prefix)
            done = True
        out.append(f)
    if not done:
        out.append(encode_field("Subject", prefix))
    return out
