"""The milter protocol, version 6 (Sendmail's libmilter wire format, as Postfix speaks it): framing,
the MTA's commands decoded into typed values, and our responses encoded.

A packet is a 4-byte big-endian length, then the command byte, then `length - 1` bytes of data.
Everything the MTA sends is checked: a length over the limit, a truncated field or an unknown
command raises `ProtocolError`, which the session answers by closing the connection (the MTA then
applies its `milter_default_action`, which we document as `tempfail`).
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from enum import IntFlag

VERSION = 6
MAX_PACKET = 1024 * 1024 + 1024    # the largest body chunk Postfix or Sendmail sends is 1 MiB (SMFIP_MDS_1M)
HEADER = struct.Struct("!I")


class ProtocolError(Exception):
    """The peer broke the protocol; the connection cannot continue."""


# --- commands from the MTA (SMFIC_*) -----------------------------------------------------------------
SMFIC_ABORT = b"A"
SMFIC_BODY = b"B"
SMFIC_CONNECT = b"C"
SMFIC_MACRO = b"D"
SMFIC_BODYEOB = b"E"
SMFIC_HELO = b"H"
SMFIC_QUIT_NC = b"K"
SMFIC_HEADER = b"L"
SMFIC_MAIL = b"M"
SMFIC_EOH = b"N"
SMFIC_OPTNEG = b"O"
SMFIC_QUIT = b"Q"
SMFIC_RCPT = b"R"
SMFIC_DATA = b"T"
SMFIC_UNKNOWN = b"U"

# --- responses to the MTA (SMFIR_*) ------------------------------------------------------------------
SMFIR_ADDRCPT = b"+"
SMFIR_DELRCPT = b"-"
SMFIR_ADDRCPT_PAR = b"2"
SMFIR_SHUTDOWN = b"4"
SMFIR_ACCEPT = b"a"
SMFIR_REPLBODY = b"b"
SMFIR_CONTINUE = b"c"
SMFIR_DISCARD = b"d"
SMFIR_CHGFROM = b"e"
SMFIR_CONN_FAIL = b"f"
SMFIR_ADDHEADER = b"h"
SMFIR_INSHEADER = b"i"
SMFIR_SETSYMLIST = b"l"
SMFIR_CHGHEADER = b"m"
SMFIR_PROGRESS = b"p"
SMFIR_QUARANTINE = b"q"
SMFIR_REJECT = b"r"
SMFIR_SKIP = b"s"
SMFIR_TEMPFAIL = b"t"
SMFIR_REPLYCODE = b"y"
SMFIR_OPTNEG = b"O"


class Actions(IntFlag):
    """SMFIF_*: what the filter may do to a message at end of body."""

    NONE = 0
    ADDHDRS = 0x01
    CHGBODY = 0x02
    ADDRCPT = 0x04
    DELRCPT = 0x08
    CHGHDRS = 0x10
    QUARANTINE = 0x20
    CHGFROM = 0x40
    ADDRCPT_PAR = 0x80
    SETSYMLIST = 0x100


class Protocol(IntFlag):
    """SMFIP_*: steps the MTA may skip or send without waiting for a reply."""

    NONE = 0
    NOCONNECT = 0x01
    NOHELO = 0x02
    NOMAIL = 0x04
    NORCPT = 0x08
    NOBODY = 0x10
    NOHDRS = 0x20
    NOEOH = 0x40
    NR_HDR = 0x80
    NOUNKNOWN = 0x100
    NODATA = 0x200
    SKIP = 0x400
    RCPT_REJ = 0x800
    NR_CONN = 0x1000
    NR_HELO = 0x2000
    NR_MAIL = 0x4000
    NR_RCPT = 0x8000
    NR_DATA = 0x10000
    NR_UNKN = 0x20000
    NR_EOH = 0x40000
    NR_BODY = 0x80000
    HDR_LEADSPC = 0x100000
    MDS_256K = 0x10000000
    MDS_1M = 0x20000000


# --- decoded commands --------------------------------------------------------------------------------
@dataclass(frozen=True)
class OptNeg:
    version: int
    actions: Actions
    protocol: Protocol


@dataclass(frozen=True)
class Macro:
    stage: bytes                       # the command the macros belong to, e.g. b"C"
    macros: dict[str, str]


@dataclass(frozen=True)
class Connect:
    hostname: str
    family: str                        # "4", "6", "L" (unix socket) or "U" (unknown)
    port: int = 0
    address: str = ""


@dataclass(frozen=True)
class Helo:
    name: str


@dataclass(frozen=True)
class MailFrom:
    address: str                       # without the angle brackets; "" for the null sender
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class RcptTo:
    address: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Header:
    name: str
    value: bytes                       # raw bytes: headers may carry 8-bit text


@dataclass(frozen=True)
class EndOfHeaders:
    pass


@dataclass(frozen=True)
class Body:
    chunk: bytes


@dataclass(frozen=True)
class EndOfBody:
    chunk: bytes = b""                 # the protocol allows a last chunk here; Postfix sends none


@dataclass(frozen=True)
class Abort:
    pass


@dataclass(frozen=True)
class Quit:
    pass


@dataclass(frozen=True)
class QuitNewConnection:
    pass


@dataclass(frozen=True)
class Data:
    pass


@dataclass(frozen=True)
class Unknown:
    command: bytes


Command = (OptNeg | Macro | Connect | Helo | MailFrom | RcptTo | Header | EndOfHeaders | Body | EndOfBody
           | Abort | Quit | QuitNewConnection | Data | Unknown)


def _strings(data: bytes, what: str, minimum: int = 1) -> list[bytes]:
    """NUL-terminated strings; the data must end with a NUL."""
    if not data.endswith(b"\0"):
        raise ProtocolError(f"{what}: string not NUL-terminated")
    parts = data[:-1].split(b"\0")
    if len(parts) < minimum:
        raise ProtocolError(f"{what}: expected {minimum} strings, got {len(parts)}")
    return parts


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def _address(value: bytes) -> str:
    text = _text(value).strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text


def decode(command: bytes, data: bytes) -> Command:
    """One packet's command byte and data -> a typed command; ProtocolError if malformed."""
    if command == SMFIC_OPTNEG:
        if len(data) < 12:
            raise ProtocolError("OPTNEG: shorter than 12 bytes")
        version, actions, protocol = struct.unpack("!III", data[:12])
        return OptNeg(version, Actions(actions), Protocol(protocol))
    if command == SMFIC_MACRO:
        if not data:
            raise ProtocolError("MACRO: no command code")
        stage, rest = data[:1], data[1:]
        names = _strings(rest, "MACRO", 0) if rest else []
        if len(names) % 2:
            raise ProtocolError("MACRO: a name without a value")
        return Macro(stage, {_text(names[i]): _text(names[i + 1]) for i in range(0, len(names), 2)})
    if command == SMFIC_CONNECT:
        end = data.find(b"\0")
        if end < 0 or len(data) < end + 2:
            raise ProtocolError("CONNECT: truncated")
        hostname, family = _text(data[:end]), chr(data[end + 1])
        rest = data[end + 2:]
        if family == "U":
            return Connect(hostname, family)
        if family not in "46L":
            raise ProtocolError(f"CONNECT: unknown address family {family!r}")
        if len(rest) < 3:
            raise ProtocolError("CONNECT: truncated address")
        (port,) = struct.unpack("!H", rest[:2])
        (address,) = _strings(rest[2:], "CONNECT address")[:1]
        return Connect(hostname, family, port, _text(address))
    if command == SMFIC_HELO:
        return Helo(_text(_strings(data, "HELO")[0]))
    if command in (SMFIC_MAIL, SMFIC_RCPT):
        parts = _strings(data, "MAIL" if command == SMFIC_MAIL else "RCPT")
        address, args = _address(parts[0]), tuple(_text(p) for p in parts[1:])
        return MailFrom(address, args) if command == SMFIC_MAIL else RcptTo(address, args)
    if command == SMFIC_HEADER:
        parts = _strings(data, "HEADER", 2)
        if len(parts) != 2 or not parts[0]:
            raise ProtocolError("HEADER: expected a name and a value")
        return Header(_text(parts[0]), parts[1])
    if command == SMFIC_BODY:
        return Body(data)
    if command == SMFIC_BODYEOB:
        return EndOfBody(data)
    if command == SMFIC_UNKNOWN:
        return Unknown(data.rstrip(b"\0"))
    simple = {SMFIC_EOH: EndOfHeaders, SMFIC_ABORT: Abort, SMFIC_QUIT: Quit, SMFIC_QUIT_NC: QuitNewConnection,
              SMFIC_DATA: Data}
    if command in simple:
        return simple[command]()
    raise ProtocolError(f"unknown command {command!r}")


def encode(command: Command) -> bytes:
    """The MTA's side: a typed command -> one packet (for tests and diagnostic clients)."""
    if isinstance(command, OptNeg):
        return frame(SMFIC_OPTNEG, struct.pack("!III", command.version, int(command.actions), int(command.protocol)))
    if isinstance(command, Macro):
        return frame(SMFIC_MACRO, command.stage + b"".join(_z(k) + _z(v) for k, v in command.macros.items()))
    if isinstance(command, Connect):
        data = _z(command.hostname) + command.family.encode("ascii")
        if command.family != "U":
            data += struct.pack("!H", command.port) + _z(command.address)
        return frame(SMFIC_CONNECT, data)
    if isinstance(command, Helo):
        return frame(SMFIC_HELO, _z(command.name))
    if isinstance(command, MailFrom | RcptTo):
        code = SMFIC_MAIL if isinstance(command, MailFrom) else SMFIC_RCPT
        return frame(code, _z(f"<{command.address}>") + b"".join(_z(a) for a in command.args))
    if isinstance(command, Header):
        return frame(SMFIC_HEADER, _z(command.name) + _z(command.value))
    if isinstance(command, Body):
        return frame(SMFIC_BODY, command.chunk)
    if isinstance(command, EndOfBody):
        return frame(SMFIC_BODYEOB, command.chunk)
    if isinstance(command, Unknown):
        return frame(SMFIC_UNKNOWN, _z(command.command))
    codes = {EndOfHeaders: SMFIC_EOH, Abort: SMFIC_ABORT, Quit: SMFIC_QUIT, QuitNewConnection: SMFIC_QUIT_NC,
             Data: SMFIC_DATA}
    return frame(codes[type(command)])


# --- framing -----------------------------------------------------------------------------------------
def frame(command: bytes, data: bytes = b"") -> bytes:
    return HEADER.pack(len(data) + 1) + command + data


async def read_packet(reader: asyncio.StreamReader, max_length: int = MAX_PACKET) -> tuple[bytes, bytes] | None:
    """(command, data) of the next packet; None at a clean end of stream between packets."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise ProtocolError("connection closed inside a packet length") from None
    (length,) = HEADER.unpack(head)
    if length < 1:
        raise ProtocolError("packet of length 0")
    if length > max_length:
        raise ProtocolError(f"packet of {length} bytes exceeds the {max_length} byte limit")
    try:
        packet = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed inside a packet") from None
    return packet[:1], packet[1:]


class Decoder:
    """Incremental framing for callers that get bytes in arbitrary pieces (split or coalesced)."""

    def __init__(self, max_length: int = MAX_PACKET) -> None:
        self.buffer = bytearray()
        self.max_length = max_length

    def feed(self, data: bytes) -> list[Command]:
        self.buffer += data
        out: list[Command] = []
        while len(self.buffer) >= 4:
            (length,) = HEADER.unpack_from(self.buffer)
            if length < 1:
                raise ProtocolError("packet of length 0")
            if length > self.max_length:
                raise ProtocolError(f"packet of {length} bytes exceeds the {self.max_length} byte limit")
            if len(self.buffer) < 4 + length:
                break
            packet = bytes(self.buffer[4:4 + length])
            del self.buffer[:4 + length]
            out.append(decode(packet[:1], packet[1:]))
        return out


# --- responses ---------------------------------------------------------------------------------------
def _z(value: str | bytes) -> bytes:
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if b"\0" in raw:
        raise ValueError("NUL inside a milter string")
    return raw + b"\0"


def optneg(version: int, actions: Actions, protocol: Protocol,
           macros: dict[bytes, str] | None = None) -> bytes:
    """Our answer to OPTNEG; `macros` maps a stage (SMFIC_* as an index, see SYMLIST_STAGES) to a
    space-separated macro list the MTA should send at that stage (SMFIF_SETSYMLIST)."""
    data = struct.pack("!III", version, int(actions), int(protocol))
    for stage, names in (macros or {}).items():
        data += struct.pack("!I", SYMLIST_STAGES[stage]) + _z(names)
    return frame(SMFIR_OPTNEG, data)


# The stage numbers SMFIR_SETSYMLIST uses (SMFIM_*).
SYMLIST_STAGES = {SMFIC_CONNECT: 0, SMFIC_HELO: 1, SMFIC_MAIL: 2, SMFIC_RCPT: 3, SMFIC_DATA: 4,
                  SMFIC_BODYEOB: 5, SMFIC_EOH: 6}


def continue_() -> bytes:
    return frame(SMFIR_CONTINUE)


def accept() -> bytes:
    return frame(SMFIR_ACCEPT)


def discard() -> bytes:
    return frame(SMFIR_DISCARD)


def reject() -> bytes:
    return frame(SMFIR_REJECT)


def tempfail() -> bytes:
    return frame(SMFIR_TEMPFAIL)


def progress() -> bytes:
    return frame(SMFIR_PROGRESS)


def replycode(reply: str) -> bytes:
    """'550 5.7.1 text' or '451 4.7.1 text': the MTA sends it to the SMTP client. A '%' in the text
    would be taken as a format by Sendmail, so it is doubled."""
    if len(reply) < 4 or reply[0] not in "45" or not reply[:3].isdigit() or reply[3] != " ":
        raise ValueError(f"not a 4xx/5xx reply: {reply!r}")
    return frame(SMFIR_REPLYCODE, _z(reply.replace("%", "%%")))


def add_header(name: str, value: str | bytes) -> bytes:
    return frame(SMFIR_ADDHEADER, _z(name) + _z(value))


def insert_header(index: int, name: str, value: str | bytes) -> bytes:
    return frame(SMFIR_INSHEADER, struct.pack("!I", index) + _z(name) + _z(value))


def change_header(index: int, name: str, value: str | bytes) -> bytes:
    """Change the `index`-th (from 1) header called `name`; an empty value deletes it."""
    return frame(SMFIR_CHGHEADER, struct.pack("!I", index) + _z(name) + _z(value))


def quarantine(reason: str) -> bytes:
    return frame(SMFIR_QUARANTINE, _z(reason))


def replace_body(chunk: bytes) -> bytes:
    return frame(SMFIR_REPLBODY, chunk)


def add_recipient(address: str) -> bytes:
    return frame(SMFIR_ADDRCPT, _z(f"<{address}>"))


def delete_recipient(address: str) -> bytes:
    return frame(SMFIR_DELRCPT, _z(f"<{address}>"))


@dataclass
class Response:
    """A decoded response (for tests and for a client that speaks the MTA's side)."""

    command: bytes
    data: bytes = b""
    fields: list = field(default_factory=list)


def decode_response(command: bytes, data: bytes) -> Response:
    if command == SMFIR_OPTNEG:
        if len(data) < 12:
            raise ProtocolError("OPTNEG reply: shorter than 12 bytes")
        return Response(command, data, list(struct.unpack("!III", data[:12])))
    if command in (SMFIR_INSHEADER, SMFIR_CHGHEADER):
        if len(data) < 4:
            raise ProtocolError("header reply: truncated")
        (index,) = struct.unpack("!I", data[:4])
        return Response(command, data, [index, *(_text(p) for p in _strings(data[4:], "header reply", 2))])
    if command in (SMFIR_ADDHEADER, SMFIR_REPLYCODE, SMFIR_QUARANTINE, SMFIR_ADDRCPT, SMFIR_DELRCPT):
        return Response(command, data, [_text(p) for p in _strings(data, "reply")])
    return Response(command, data)
