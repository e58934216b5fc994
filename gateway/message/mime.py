"""bytes -> ParsedMessage: parsed once, with hard limits, for every detector to share.

We use the standard library's compat32 parser: it is lenient like mail clients are, and about six
times cheaper than email.policy.default (docs/performance.md). What it tolerates silently we record
as `defects` so that the `mime` detector can hold what we cannot read unambiguously. Transfer
encodings and files embedded in text are decoded as mail clients do (gateway.message.encodings); constructs
that clients read differently from us are defects (docs/architecture.md, "Hostile MIME").
"""

from __future__ import annotations

import dataclasses
import email.errors
import email.header
import email.message
import email.parser
import email.policy
import email.utils
import re
from dataclasses import dataclass

from gateway import headers
from gateway.message.encodings import (
    IDENTITY,
    decode_body,
    embedded_blocks,
    encoding_readings,
    transfer_encoding,
    uuencoded,
)

# The structural defects that make a message ambiguous to read: mail clients disagree on them.
_STRUCTURAL = {
    email.errors.CloseBoundaryNotFoundDefect: "missing_final_boundary",
    email.errors.StartBoundaryNotFoundDefect: "missing_start_boundary",
    email.errors.NoBoundaryInMultipartDefect: "no_boundary",
    email.errors.MultipartInvariantViolationDefect: "multipart_invariant",
}
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
    reading: str = ""                   # "" for our reading; else another one a mail client may take

    @property
    def is_text(self) -> bool:
        """Body text: plain or HTML, not marked or named as a file, and not binary (a zip declared as
        text/plain is a file that clients offer to save)."""
        return self.content_type in ("text/plain", "text/html") and self.disposition != "attachment" \
            and not self.filename and (b"\0" not in self.payload[:4096]
                                       or (self.charset or "").lower().startswith(("utf-16", "utf-32")))

    @property
    def is_attachment(self) -> bool:
        """A file: named, marked as attachment, or anything that is not body text."""
        return not self.is_text and (bool(self.payload) or bool(self.filename))

    @property
    def label(self) -> str:
        name = f": {self.filename}" if self.filename else ""
        reading = f" ({self.reading})" if self.reading else ""
        return f"part {self.path}{reading}{name}"

    def text(self) -> str:
        """The payload as text, with the declared charset where Python knows it."""
        charset = self.charset or "utf-8"
        try:
            return self.payload.decode(charset, errors="replace")
        except (LookupError, ValueError):      # unknown charset, or one with a NUL in its name (fuzzer)
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
    """RFC 2047 encoded words -> text, as one line; never raises on attacker input. Every encoded word
    is decoded, an unknown charset as UTF-8 or Latin-1 (passed through undecoded, it would be decoded
    later, line breaks and all, wherever the text is written into a header), and CR, LF and other
    control characters become spaces."""
    if value is None:
        return ""
    text = headers.unescape_8bit(_FOLD.sub("", str(value)))      # a Header's str() is its decoded text
    if "=?" in text:
        text = headers.decode_words(text)
    return _CONTROL.sub(" ", text)


_FOLD = re.compile(r"\r?\n(?=[ \t])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def header_block_size(raw: bytes) -> int:
    end = raw.find(b"\r\n\r\n")
    alt = raw.find(b"\n\n")
    ends = [e for e in (end, alt) if e >= 0]
    return min(ends) if ends else len(raw)


def parse(raw: bytes, limits: Limits = Limits(), *, second_reading: bool = False) -> ParsedMessage:
    """Parse raw message bytes into a ParsedMessage; never raises on malformed input."""
    header_bytes = header_block_size(raw)
    walker = _Walker(limits)
    try:
        message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    except RecursionError:
        # The stdlib parser recurses once per nesting level: about a thousand nested multiparts (60 KB)
        # exhaust the stack. Far past max_depth: the headers alone, and the depth limit is what is held.
        message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw, headersonly=True)
        walker.limit_exceeded = "depth"
    if not walker.limit_exceeded and header_bytes > limits.max_header_bytes:
        walker.limit_exceeded = "header_bytes"
    if not walker.limit_exceeded:
        try:
            walker.walk(message, "", 0, False, ())
            if walker.boundaries and boundary_lookalikes(raw, walker.boundaries):
                walker.defects.append("boundary_lookalike")
            if walker.header_lookalikes and not second_reading and _header_fix_reveals_files(raw, limits, walker):
                walker.defects.append("header_syntax")
            if walker.rewrites and not second_reading:
                _structure_readings(raw, limits, walker)
        except Exception:   # a bug of ours on hostile input: what we could not walk is held, never passed
            walker.defects.append("undecodable")
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
        self.boundaries: list[str] = []
        self.header_lookalikes = False
        self.rewrites: list[tuple[bytes, bytes]] = []     # Content-Type values another reading rewrites

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
        if msg.get_content_maintype() == "message":
            if msg.get_content_subtype() == "partial":
                self.defects.append("partial")              # a fragment: it cannot be scanned whole
            if transfer_encoding(msg) not in IDENTITY and msg.get_content_subtype() not in _REPORT_TYPES:
                self.defects.append("encoded_message")      # RFC 2046 forbids it; clients disagree on it
        if msg.is_multipart():
            boundary = msg.get_boundary() or ""
            self._other_boundaries(msg, boundary)
            if boundary and _ambiguous_boundary(msg, boundary, boundaries):
                self.defects.append("ambiguous_boundary")
            if boundary:
                self.boundaries.append(boundary)
                if msg.epilogue and _epilogue_parts(msg.epilogue, boundary):
                    self.defects.append("epilogue_parts")
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
        ctype = msg.get_content_type()
        encoding = transfer_encoding(msg)
        body = _raw_body(msg)
        self._odd_multipart(msg)
        broken = _broken_header_block(msg, body)
        if broken == "lookalike":
            self.header_lookalikes = True               # "X-Name : v": decided in parse() by a second reading
        elif broken:
            self.defects.append("header_syntax")        # "Content-Type : x": Thunderbird reads it, we would not
        try:
            payload, valid = decode_body(body, encoding, self.limits.max_decoded_bytes)
        except Exception:   # a decoder on hostile input: treat as undecodable
            payload, valid = b"", False
            self.defects.append("undecodable")
        self.decoded_bytes += len(payload)
        if self.decoded_bytes > self.limits.max_decoded_bytes:
            self.limit_exceeded = "decoded_bytes"
            return
        names = filename_candidates(msg)
        disposition = msg.get_content_disposition()
        part = Part(
            path=path,
            content_type=ctype,
            filename=names[0] if names else None,
            filenames=names,
            disposition=disposition,
            charset=msg.get_content_charset(),
            transfer_encoding=encoding,
            payload=payload,
            headers=tuple((k, str(v)) for k, v in msg.items()),
            nested_in_message=nested,
        )
        if part.is_attachment and not valid:
            self.defects.append("unknown_encoding" if valid is None else "invalid_encoding")
        self.parts.append(part)
        if encoding in ("base64", "quoted-printable"):
            self._other_readings(part, body)
        if ctype.startswith("text/"):
            if b"begin " in payload:
                self._uuencoded(part)
            if b"=ybegin " in payload or b"BinHex" in payload:
                self._embedded(part)

    def _other_readings(self, part: Part, body: bytes) -> None:
        """The decodings other clients take of an oddly written encoding: when they yield a different
        file, each is a part of its own (every detector sees it) and the message is ambiguous."""
        others = [p for p in dict.fromkeys(encoding_readings(body, part.transfer_encoding)) if p != part.payload]
        variants = [dataclasses.replace(part, path=f"{part.path}.r{n}", payload=p, reading="another reading")
                    for n, p in enumerate(others, 1)]
        if not part.is_attachment and not any(v.is_attachment for v in variants):
            return          # text read in several ways (a stray "=" in prose): no file hides there
        if not variants:
            return
        self.defects.append("ambiguous_encoding")
        for variant in variants:
            if not self._room_for(variant.payload):
                return
            self.parts.append(variant)

    def _other_boundaries(self, msg: email.message.Message, boundary: str) -> None:
        """Two boundary parameters (plain and RFC 2231, or repeated) that disagree: clients take either."""
        candidates = []
        for value in _param_values(msg, "Content-Type", "boundary"):
            try:
                text = email.utils.collapse_rfc2231_value(value)
            except (LookupError, UnicodeError, TypeError, ValueError):
                continue
            if text and text != boundary and text not in candidates:
                candidates.append(text)
        if not candidates:
            return
        original = str(msg.get("Content-Type", ""))
        ctype = msg.get_content_type()
        for other in candidates[:_MAX_REWRITES]:
            quoted = other.replace("\\", "\\\\").replace('"', '\\"')
            self.rewrites.append((_boundary_bytes(original), _boundary_bytes(f'{ctype}; boundary="{quoted}"')))

    def _odd_multipart(self, msg: email.message.Message) -> None:
        """A multipart type written oddly ("multipart /mixed", "x-multipart/mixed") that the standard
        library reads as one leaf: clients that tidy the type read parts in it."""
        original = str(msg.get("Content-Type", "") or "")
        if "multipart" not in original[:100].lower():
            return
        token, sep, params = original.partition(";")
        clean = _TYPE_NOISE.sub("", token).lower()
        major, _, minor = clean.partition("/")
        if not major.endswith("multipart") or "boundary" not in params.lower():
            return
        tidy = f"multipart/{minor or 'mixed'}{sep}{params}"
        self.rewrites.append((_boundary_bytes(original), _boundary_bytes(tidy)))

    def _embedded(self, text_part: Part) -> None:
        """yEnc and BinHex 4.0 blocks in a text body are files too (news readers and old Mac clients decode them)."""
        room = self.limits.max_decoded_bytes - self.decoded_bytes
        found, broken = embedded_blocks(text_part.payload, room)
        if broken:
            self.defects.append("encoded_block")
        for n, (kind, name, content) in enumerate(found, 1):
            if not self._room_for(content):
                return
            self.parts.append(Part(
                path=f"{text_part.path}.{kind}{n}", content_type="application/octet-stream", filename=name,
                filenames=(name,), disposition="attachment", charset=None, transfer_encoding=f"x-{kind}",
                payload=content, nested_in_message=text_part.nested_in_message))

    def _room_for(self, content: bytes) -> bool:
        """Whether one more file carved from a text body fits the limits (each block is decoded up to
        the room left, so two blocks could pass it together); if not, the limit that stops the walk."""
        if len(self.parts) >= self.limits.max_parts:
            self.limit_exceeded = "parts"
            return False
        if self.decoded_bytes + len(content) > self.limits.max_decoded_bytes:
            self.limit_exceeded = "decoded_bytes"
            return False
        self.decoded_bytes += len(content)
        return True

    def _uuencoded(self, text_part: Part) -> None:
        """Files uuencoded inside a text body are attachments too: mail clients show them as such."""
        room = self.limits.max_decoded_bytes - self.decoded_bytes
        for n, (name, content) in enumerate(uuencoded(text_part.payload, room), 1):
            if not self._room_for(content):
                return
            self.parts.append(Part(
                path=f"{text_part.path}.uu{n}", content_type="application/octet-stream", filename=name,
                filenames=(name,), disposition="attachment", charset=None, transfer_encoding="x-uuencode",
                payload=content, nested_in_message=text_part.nested_in_message))


_SLASHES = re.compile(r"[\\/]")
_TYPE_NOISE = re.compile(r"\([^()]*\)|\s+")
_MAX_REWRITES = 4
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
            text = headers.decode_words(text) if "=?" in text else text     # control characters kept: judged
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


# --- structures that mail clients read differently from us -------------------------------------------

# message/* types that are header blocks, not messages: an encoding hides no parts there.
_REPORT_TYPES = frozenset({"delivery-status", "disposition-notification", "global-delivery-status",
                           "global-disposition-notification", "global-headers", "external-body"})
_HEADER_LOOKALIKE = re.compile(rb"[!-9;-~]{1,76}[ \t]+:")
_CONTENT_HEADER = re.compile(rb"^content-[a-z-]{0,40}[ \t]*:", re.I | re.M)


def _broken_header_block(msg: email.message.Message, body: bytes) -> str:
    """Whether the part's header block ended early, at a line clients may read as a header, so that
    what we took as the body would be decoded differently by a client:
    "content": a Content-* header right at the start of the body ("Content-Type : x", or one after a
    lone CR or LF), or a line that is no header followed by Content-* headers;
    "lookalike": another "Name : value" line (a harmless quirk unless it hides Content-* headers,
    which parse() checks by reading the message again with such lines repaired); "" otherwise."""
    head = body[:2000]
    if _CONTENT_HEADER.match(head):
        return "content"
    if not any(isinstance(d, email.errors.MissingHeaderBodySeparatorDefect) for d in msg.defects):
        return ""
    block = re.split(rb"\r?\n[ \t]*\r?\n", head, maxsplit=1)[0]
    if _HEADER_LOOKALIKE.match(block):
        return "lookalike"
    return "content" if _CONTENT_HEADER.search(block) else ""


_LOOKALIKE_LINE = re.compile(rb"^([!-9;-~]{1,76})[ \t]+:", re.MULTILINE)


def _header_fix_reveals_files(raw: bytes, limits: Limits, walker: _Walker) -> bool:
    """Read the message as Thunderbird does ("Name : value" is a header) and compare: a file that only
    that reading finds, or a file it decodes differently, is one our scan would miss."""
    repaired = parse(_LOOKALIKE_LINE.sub(rb"\1:", raw), limits, second_reading=True)
    ours = {p.payload for p in walker.parts if p.is_attachment}
    return any(p.payload not in ours for p in repaired.attachments) or bool(repaired.defects)


def _structure_readings(raw: bytes, limits: Limits, walker: _Walker) -> None:
    """Read the message again with each Content-Type as another client reads it (the other boundary
    parameter, the multipart type tidied): a reading with other files makes the message ambiguous, and
    the files only it yields are parts of their own, for every detector to see."""
    ours = {p.payload for p in walker.parts if p.is_attachment}
    primary = {p.payload for p in walker.parts if p.is_attachment and not p.reading}
    for n, (original, other) in enumerate(dict.fromkeys(walker.rewrites[:_MAX_REWRITES]), 1):
        if not original or original not in raw:
            continue
        reading = parse(raw.replace(original, other), limits, second_reading=True)
        if {p.payload for p in reading.attachments if not p.reading} == primary:
            continue        # the same files either way (a tidier type, a repeated boundary): no ambiguity
        walker.defects.append("ambiguous_mime")
        new = [p for p in reading.attachments if p.payload not in ours]
        for part in new:
            if not walker._room_for(part.payload):
                return
            ours.add(part.payload)
            walker.parts.append(dataclasses.replace(part, path=f"r{n}.{part.path}", reading="another reading"))


def _raw_body(msg: email.message.Message) -> bytes:
    """The body as it arrived: compat32 keeps the bytes parser's input as text with surrogate escapes
    (get_payload() would replace 8-bit bytes)."""
    payload = getattr(msg, "_payload", None)
    if isinstance(payload, bytes):
        return payload
    if not isinstance(payload, str):
        return b""
    try:
        return payload.encode("ascii", "surrogateescape")
    except UnicodeError:
        return payload.encode("utf-8", "surrogateescape")


def _ambiguous_boundary(msg: email.message.Message, boundary: str, enclosing: tuple[str, ...]) -> bool:
    """A nested boundary that clients may confuse with an enclosing one. RFC 2046 lets a client match a
    boundary as a prefix of the line, so an inner boundary that extends an outer one ("b1" -> "b1x")
    splits the outer multipart at the inner delimiters; that reading gives the same parts only when
    the inner multipart has nothing before its first and after its last delimiter."""
    for outer in enclosing:
        if outer.startswith(boundary):
            return True
        if boundary.startswith(outer) and ((msg.preamble or "").strip() or (msg.epilogue or "").strip()):
            return True
    return False


_EPILOGUE_HEADER = re.compile(r"^[ \t]*content-(?:type|transfer-encoding|disposition)[ \t]*:", re.I | re.M)


def _epilogue_parts(epilogue: str, boundary: str) -> bool:
    """Text after the closing boundary that holds MIME parts: some clients show them."""
    delimiter = "--" + boundary
    if delimiter in epilogue and any(line.lstrip(" \t").startswith(delimiter) for line in epilogue.splitlines()):
        return True
    return _EPILOGUE_HEADER.search(epilogue) is not None


_DASH_LINE = re.compile(rb"\n([ \t]*)--([^\r\n]*)")     # a literal first: the regex engine skips to each LF


def _boundary_bytes(boundary: str) -> bytes:
    try:
        return boundary.encode("utf-8", "surrogateescape")     # the bytes parser's 8-bit characters
    except UnicodeEncodeError:
        return boundary.encode("utf-8", "surrogatepass")


def boundary_lookalikes(raw: bytes, boundaries: list[str]) -> bool:
    """A line that starts like a delimiter but is not one ("--b1 junk", " --b1"): RFC 2046 lets clients
    match the boundary as a prefix of the line, so they split the message where we do not.
    One pass over the lines that start with "--" (few in real mail), a set lookup per boundary length."""
    known = {_boundary_bytes(b) for b in boundaries}
    firsts = {b[:1] for b in known}
    lengths = sorted({len(b) for b in known})
    for match in _DASH_LINE.finditer(b"\n" + raw if raw[:1] in (b" ", b"\t", b"-") else raw):
        rest = match.group(2)
        if rest[:1] not in firsts or not any(rest[:n] in known for n in lengths):
            continue        # "-->", "-- ", "-----Original Message-----": not about our boundaries
        tail = rest.rstrip(b" \t")
        if not match.group(1) and (tail in known or (tail.endswith(b"--") and tail[:-2] in known)):
            continue        # a delimiter of this or of a nested multipart (ambiguous_boundary judges those)
        return True
    return False
