"""Edit a message's top-level header block on the raw bytes, so the body stays byte-identical.

Used to add our X-Gateway-* headers, remove look-alikes that arrive from outside, and prefix the
subject. Values that come from messages (file names, details) are made single-line and RFC 2047
encoded here, so nothing an attacker writes can inject a header.
"""

from __future__ import annotations

import email.header
import re

_FIELD_START = re.compile(rb"^[^\s:]+[ \t]*:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


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


def encode_field(name: str, value: str) -> bytes:
    """A header field 'Name: value' folded at 78 columns, RFC 2047 encoded where not ASCII."""
    value = safe_value(value)
    if value.isascii() and len(name) + 2 + len(value) <= 78:     # fits one line: the email package's result
        return f"{name}: {value}\r\n".encode("ascii")
    charset = "us-ascii" if value.isascii() else "utf-8"
    encoded = email.header.Header(value, charset=charset, header_name=name, maxlinelen=78).encode(linesep="\r\n")
    return f"{name}: {encoded}\r\n".encode("ascii")


def rewrite(raw: bytes, *, remove: frozenset[str] = frozenset(), add: list[tuple[str, str]] | None = None,
            subject_prefix: str = "") -> bytes:
    """Remove fields named in `remove` (lower case), prepend `add`, prefix the Subject."""
    fields, sep, body = split(raw)
    kept = [f for f in fields if field_name(f) not in remove]
    if subject_prefix:
        kept = _prefix_subject(kept, subject_prefix)
    added = [encode_field(name, value) for name, value in (add or [])]
    if not sep:
        sep = b"\r\n"
    return b"".join(added + kept) + sep + body


def _prefix_subject(fields: list[bytes], prefix: str) -> list[bytes]:
    prefix = safe_value(prefix, 200)
    encoded = prefix if prefix.isascii() else email.header.Header(prefix, "utf-8").encode()
    out, done = [], False
    for f in fields:
        if not done and field_name(f) == "subject":
            name, _, value = f.partition(b":")
            if not value.lstrip().startswith(encoded.encode()):
                f = name + b": " + encoded.encode() + b" " + value.lstrip(b" \t")
            done = True
        out.append(f)
    if not done:
        out.append(encode_field("Subject", prefix))
    return out
