"""bytes -> ParsedMessage: parsed once, with hard limits, for every detector to share.

We use the standard library's compat32 parser: it is lenient like mail clients are, and about six
times cheaper than email.policy.default (docs/performance.md). What it tolerates silently we record
as `defects` so that the `mime` detector can hold what we cannot read unambiguously.
"""

from __future__ import annotations

import email.errors
import email.header
import email.message
import email.parser
import email.policy
import email.utils
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


_SLASHES = re.compile(r"[\\/]")


def filename_candidates(msg: email.message.Message) -> tuple[str, ...]:
    """Every name a mail client might show for this part, best first: filename= then name=.

    RFC 2231 continuations and charsets are joined by the parser; RFC 2047 encoded words (which
    Outlook and Gmail honour inside parameters) are decoded here. Directory parts are dropped.
    """
    found: list[str] = []
    for header, param in (("content-disposition", "filename"), ("content-type", "name")):
        try:
            value = msg.get_param(param, header=header)
        except Exception:
            value = None
        if value is None:
            continue
        try:
            text = email.utils.collapse_rfc2231_value(value)
        except (LookupError, UnicodeError, TypeError, ValueError):
            text = value[2] if isinstance(value, tuple) else str(value)
        text = decode_header_value(text) if "=?" in text else text
        text = _SLASHES.split(text.strip())[-1].strip()
        if text and text not in found:
            found.append(text)
    return tuple(found)


