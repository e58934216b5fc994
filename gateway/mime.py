"""bytes -> ParsedMessage: parsed once, with hard limits, for every detector to share.

We use the standard library's compat32 parser: it is lenient like mail clients are, and about six
times cheaper than email.policy.default (docs/performance.md). What it tolerates silently we record
as `defects` so that the `mime` detector can hold what we cannot read unambiguously.
"""

from __future__ import annotations

import binascii
import email.errors
import email.header
import email.message
import email.parser
import email.policy
import email.utils
import io
import re
from dataclasses import dataclass, field

# The structural defects that make a message ambiguous to read: mail clients disagree on them.
_STRUCTURAL = {
    email.errors.CloseBoundaryNotFoundDefect: "missing_final_boundary",
    email.errors.StartBoundaryNotFoundDefect: "missing_start_boundary",
    email.errors.NoBoundaryInMultipartDefect: "no_boundary",
    email.errors.MultipartInvariantViolationDefect: "multipart_invariant",
}
_ENCODING = (
    email.errors.InvalidBase64CharactersDefect,
    email.errors.InvalidBase64PaddingDefect,
    email.errors.InvalidBase64LengthDefect,
)
TEXT_TYPES = frozenset({"text/plain", "text/html", "text/enriched", "text/rtf"})


@dataclass(frozen=True, slots=True)
class Limits:
    max_depth: int = 20
    max_parts: int = 500
    max_header_bytes: int = 256 * 1024
    max_decoded_bytes: int = 200 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Part:
    """One leaf of the MIME tree, its payload decoded from the transfer encoding."""

    path: str                           # MIME path: "1", "2.1", ...
    content_type: str                   # declared, lower case: "application/pdf"
    filename: str | None                # the name a mail client would show
    filenames: tuple[str, ...]          # every distinct candidate name (filename=, name=, decoded forms)
    disposition: str | None             # "attachment" | "inline" | None
    charset: str | None
    transfer_encoding: str
    payload: bytes
    headers: tuple[tuple[str, str], ...] = ()
    nested_in_message: bool = False     # inside an attached message/rfc822

    @property
    def is_text(self) -> bool:
        return self.content_type in ("text/plain", "text/html") and self.disposition != "attachment" \
            and not self.filename

    @property
    def is_attachment(self) -> bool:
        """A file: named, marked as attachment, or anything that is not body text."""
        return not self.is_text and (bool(self.payload) or bool(self.filename))

    @property
    def label(self) -> str:
        name = f": {self.filename}" if self.filename else ""
        return f"part {self.path}{name}"

    def text(self) -> str:
        """The payload as text, with the declared charset where Python knows it."""
        charset = self.charset or "utf-8"
        try:
            return self.payload.decode(charset, errors="replace")
        except LookupError:
            return self.payload.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    message: email.message.Message      # the root, for headers
    subject: str
    parts: tuple[Part, ...]
    defects: tuple[str, ...] = ()       # reasons the structure is ambiguous: "missing_final_boundary", ...
    header_bytes: int = 0
    decoded_bytes: int = 0
    limit_exceeded: str = ""            # which hard limit stopped the walk, if any
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def text_parts(self) -> tuple[Part, ...]:
        return tuple(p for p in self.parts if p.is_text)

    @property
    def attachments(self) -> tuple[Part, ...]:
        return tuple(p for p in self.parts if p.is_attachment)

    def header(self, name: str) -> str:
        return decode_header_value(self.message.get(name, ""))

    def header_all(self, name: str) -> list[str]:
        return [decode_header_value(v) for v in self.message.get_all(name, [])]


def decode_header_value(value: object) -> str:
    """RFC 2047 encoded words -> text; never raises on attacker input."""
    if value is None:
        return ""
    if isinstance(value, email.header.Header):
        value = str(value)
    text = str(value)
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except (email.errors.HeaderParseError, LookupError, UnicodeError, ValueError, AssertionError):
        return text


def header_block_size(raw: bytes) -> int:
    end = raw.find(b"\r\n\r\n")
    alt = raw.find(b"\n\n")
    ends = [e for e in (end, alt) if e >= 0]
    return min(ends) if ends else len(raw)


def parse(raw: bytes, limits: Limits = Limits()) -> ParsedMessage:
    """Parse raw message bytes into a ParsedMessage; never raises on malformed input."""
    header_bytes = header_block_size(raw)
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    walker = _Walker(limits)
    if header_bytes > limits.max_header_bytes:
        walker.limit_exceeded = "header_bytes"
    else:
        walker.walk(message, "", 0, False, ())
    return ParsedMessage(
        message=message,
        subject=decode_header_value(message.get("Subject", "")),
        parts=tuple(walker.parts),
        defects=tuple(dict.fromkeys(walker.defects)),
        header_bytes=header_bytes,
        decoded_bytes=walker.decoded_bytes,
        limit_exceeded=walker.limit_exceeded,
    )


class _Walker:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.parts: list[Part] = []
        self.defects: list[str] = []
        self.decoded_bytes = 0
        self.limit_exceeded = ""

    def walk(self, msg: email.message.Message, path: str, depth: int, nested: bool,
             boundaries: tuple[str, ...]) -> None:
        if self.limit_exceeded:
            return
        if depth > self.limits.max_depth:
            self.limit_exceeded = "depth"
            return
        self._check_headers(msg)
        for defect in msg.defects:
            reason = _STRUCTURAL.get(type(defect))
            if reason:
                self.defects.append(reason)
        if msg.is_multipart():
            boundary = msg.get_boundary() or ""
            if boundary and any(b.startswith(boundary) or boundary.startswith(b) for b in boundaries):
                self.defects.append("ambiguous_boundary")
            children = msg.get_payload()
            if not isinstance(children, list):
                return
            is_message = msg.get_content_maintype() == "message"
            for i, child in enumerate(children, 1):
                if not isinstance(child, email.message.Message):
                    continue
                child_path = path if is_message else (f"{path}.{i}" if path else str(i))
                self.walk(child, child_path, depth + 1, nested or is_message,
                          boundaries + ((boundary,) if boundary else ()))
            return
        self._leaf(msg, path or "1", nested)

    def _check_headers(self, msg: email.message.Message) -> None:
        for name in ("Content-Type", "Content-Transfer-Encoding", "Content-Disposition"):
            values = msg.get_all(name) or []
            if len({str(v).strip().lower() for v in values}) > 1:
                self.defects.append(f"conflicting_{name.lower().replace('content-', '').replace('-', '_')}")

    def _leaf(self, msg: email.message.Message, path: str, nested: bool) -> None:
        if len(self.parts) >= self.limits.max_parts:
            self.limit_exceeded = "parts"
            return
        try:
            payload = msg.get_payload(decode=True) or b""
        except Exception:   # a lenient parser's decoder on hostile input: treat as undecodable
            payload = b""
            self.defects.append("undecodable")
        if not isinstance(payload, bytes):
            payload = str(payload).encode("utf-8", "surrogateescape")
        self.decoded_bytes += len(payload)
        if self.decoded_bytes > self.limits.max_decoded_bytes:
            self.limit_exceeded = "decoded_bytes"
            return
        names = filename_candidates(msg)
        ctype = msg.get_content_type()
        disposition = msg.get_content_disposition()
        part = Part(
            path=path,
            content_type=ctype,
            filename=names[0] if names else None,
            filenames=names,
            disposition=disposition,
            charset=msg.get_content_charset(),
            transfer_encoding=str(msg.get("Content-Transfer-Encoding", "7bit")).strip().lower(),
            payload=payload,
            headers=tuple((k, str(v)) for k, v in msg.items()),
            nested_in_message=nested,
        )
        if part.is_attachment and any(isinstance(d, _ENCODING) for d in msg.defects):
            self.defects.append("invalid_encoding")
        self.parts.append(part)
        if ctype.startswith("text/") and b"begin " in payload:
            self._uuencoded(part)

    def _uuencoded(self, text_part: Part) -> None:
        """Files uuencoded inside a text body are attachments too: mail clients show them as such."""
        room = self.limits.max_decoded_bytes - self.decoded_bytes
        for n, (name, content) in enumerate(uuencoded(text_part.payload, room), 1):
            if len(self.parts) >= self.limits.max_parts:
                self.limit_exceeded = "parts"
                return
            self.decoded_bytes += len(content)
            self.parts.append(Part(
                path=f"{text_part.path}.uu{n}", content_type="application/octet-stream", filename=name,
                filenames=(name,), disposition="attachment", charset=None, transfer_encoding="x-uuencode",
                payload=content, nested_in_message=text_part.nested_in_message))


_SLASHES = re.compile(r"[\\/]")
_FILENAME_SOURCES = (("content-disposition", "filename"), ("content-type", "name"))


def filename_candidates(msg: email.message.Message) -> tuple[str, ...]:
    """Every name a mail client might show for this part, best first: filename= then name=.

    Every instance counts, as different clients pick different ones: duplicated headers, duplicated
    parameters, RFC 2231 continuations and charsets (joined by the parser), and RFC 2047 encoded
    words (which Outlook and Gmail honour inside parameters, decoded here). Directory parts are dropped.
    """
    found: list[str] = []
    for header, param in _FILENAME_SOURCES:
        for value in _param_values(msg, header, param):
            try:
                text = email.utils.collapse_rfc2231_value(value)
            except (LookupError, UnicodeError, TypeError, ValueError):
                text = value[2] if isinstance(value, tuple) else str(value)
            text = decode_header_value(text) if "=?" in text else text
            text = _SLASHES.split(text.strip())[-1].strip()
            if text and text not in found:
                found.append(text)
    return tuple(found)


def _param_values(msg: email.message.Message, header: str, param: str) -> list[object]:
    """The values of `param` in every instance of `header`, duplicates included, in order."""
    values: list[object] = []
    for instance in msg.get_all(header) or []:
        single = email.message.Message()
        single[header] = str(instance)
        try:
            params = single.get_params(header=header) or []
        except Exception:     # the parser's parameter decoder on hostile input
            continue
        values += [v for k, v in params[1:] if k.lower() == param and v is not None]
    return values


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
