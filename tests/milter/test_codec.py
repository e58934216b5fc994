"""The milter codec: every message type from its wire bytes, split and coalesced reads, responses,
and malformed or oversize packets rejected with ProtocolError (never another exception)."""

from __future__ import annotations

import asyncio
import struct

import pytest

from gateway.milter import codec
from gateway.milter.codec import Actions, Protocol, ProtocolError


def packet(command: bytes, data: bytes = b"") -> bytes:
    """Built by hand (not with codec.frame), so the tests check the wire format, not the encoder."""
    return struct.pack(">I", len(data) + 1) + command + data


# (wire bytes as libmilter / Postfix send them, the decoded command)
WIRE = [
    (packet(b"O", bytes.fromhex("00000006 000001ff 001fffff")),
     codec.OptNeg(6, Actions(0x1FF), Protocol(0x1FFFFF))),
    (packet(b"D", b"C" + b"j\0mta.example.gov\0{daemon_name}\0smtpd\0"),
     codec.Macro(b"C", {"j": "mta.example.gov", "{daemon_name}": "smtpd"})),
    (packet(b"D", b"E"), codec.Macro(b"E", {})),
    (packet(b"C", b"client.example.org\0" + b"4" + b"\x9c\x40" + b"192.0.2.7\0"),
     codec.Connect("client.example.org", "4", 40000, "192.0.2.7")),
    (packet(b"C", b"v6.example.org\0" + b"6" + b"\x00\x19" + b"2001:db8::1\0"),
     codec.Connect("v6.example.org", "6", 25, "2001:db8::1")),
    (packet(b"C", b"localhost\0" + b"L" + b"\x00\x00" + b"/run/sock\0"),
     codec.Connect("localhost", "L", 0, "/run/sock")),
    (packet(b"C", b"unknown\0U"), codec.Connect("unknown", "U")),
    (packet(b"H", b"client.test\0"), codec.Helo("client.test")),
    (packet(b"M", b"<alice@example.gov>\0BODY=8BITMIME\0SIZE=100\0"),
     codec.MailFrom("alice@example.gov", ("BODY=8BITMIME", "SIZE=100"))),
    (packet(b"M", b"<>\0"), codec.MailFrom("")),
    (packet(b"R", b"<bob@example.org>\0"), codec.RcptTo("bob@example.org")),
    (packet(b"L", b"Subject\0 Hello\n\tworld\0"), codec.Header("Subject", b" Hello\n\tworld")),
    (packet(b"L", b"X-Empty\0\0"), codec.Header("X-Empty", b"")),
    (packet(b"N"), codec.EndOfHeaders()),
    (packet(b"B", b"line 1\r\nline 2\r\n"), codec.Body(b"line 1\r\nline 2\r\n")),
    (packet(b"B"), codec.Body(b"")),
    (packet(b"E"), codec.EndOfBody()),
    (packet(b"A"), codec.Abort()),
    (packet(b"Q"), codec.Quit()),
    (packet(b"K"), codec.QuitNewConnection()),
    (packet(b"T"), codec.Data()),
    (packet(b"U", b"XCLIENT foo\0"), codec.Unknown(b"XCLIENT foo")),
]


@pytest.mark.parametrize(("wire", "expected"), WIRE, ids=[repr(w[4:5]) + str(i) for i, (w, _) in enumerate(WIRE)])
def test_every_command_decodes_from_its_wire_bytes(wire, expected):
    assert codec.Decoder().feed(wire) == [expected]
    assert codec.encode(expected) == wire          # and the MTA-side encoder writes the same bytes


def test_every_command_type_is_covered():
    covered = {w[4:5] for w, _ in WIRE}
    commands = {v for k, v in vars(codec).items() if k.startswith("SMFIC_")}
    assert covered == commands


def test_split_reads_byte_by_byte_and_coalesced_reads_give_the_same_commands():
    stream = b"".join(w for w, _ in WIRE)
    expected = [c for _, c in WIRE]
    decoder = codec.Decoder()
    got = []
    for i in range(len(stream)):
        got += decoder.feed(stream[i:i + 1])
    assert got == expected
    assert codec.Decoder().feed(stream) == expected
    # uneven pieces across packet boundaries
    decoder, got = codec.Decoder(), []
    for i in range(0, len(stream), 7):
        got += decoder.feed(stream[i:i + 7])
    assert got == expected and not decoder.buffer


async def test_stream_reader_split_and_coalesced():
    stream = b"".join(w for w, _ in WIRE)
    reader = asyncio.StreamReader()

    async def trickle():
        for i in range(0, len(stream), 3):
            reader.feed_data(stream[i:i + 3])
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(trickle())
    got = []
    while (p := await codec.read_packet(reader)) is not None:
        got.append(codec.decode(*p))
    await feeder
    assert got == [c for _, c in WIRE]

    coalesced = asyncio.StreamReader()
    coalesced.feed_data(stream)
    coalesced.feed_eof()
    got = []
    while (p := await codec.read_packet(coalesced)) is not None:
        got.append(codec.decode(*p))
    assert got == [c for _, c in WIRE]


MALFORMED = {
    "zero length": struct.pack(">I", 0),
    "unknown command": packet(b"Z", b"x"),
    "short optneg": packet(b"O", b"\0\0\0\6"),
    "connect without NUL": packet(b"C", b"host"),
    "connect bad family": packet(b"C", b"host\0X\0\0addr\0"),
    "connect truncated port": packet(b"C", b"host\x004\x00"),
    "connect address not terminated": packet(b"C", b"host\x004\x00\x19192.0.2.1"),
    "helo not terminated": packet(b"H", b"client"),
    "mail empty": packet(b"M"),
    "rcpt not terminated": packet(b"R", b"<bob@example.org>"),
    "header one string": packet(b"L", b"Subject\0"),
    "header three strings": packet(b"L", b"Subject\0a\0b\0"),
    "header empty name": packet(b"L", b"\0value\0"),
    "macro without stage": packet(b"D"),
    "macro name without value": packet(b"D", b"Cj\0"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_packets_are_rejected_cleanly(name):
    with pytest.raises(ProtocolError):
        codec.Decoder().feed(MALFORMED[name])


def test_oversize_packet_is_rejected_from_its_length_alone():
    decoder = codec.Decoder(max_length=1000)
    with pytest.raises(ProtocolError, match="exceeds"):
        decoder.feed(struct.pack(">I", 1001))          # no need to receive the 1001 bytes first
    assert codec.Decoder(max_length=1000).feed(packet(b"B", b"x" * 998)) == [codec.Body(b"x" * 998)]


async def test_stream_reader_rejects_oversize_and_truncated_packets():
    reader = asyncio.StreamReader()
    reader.feed_data(struct.pack(">I", codec.MAX_PACKET + 1))
    with pytest.raises(ProtocolError, match="exceeds"):
        await codec.read_packet(reader)

    for stream in (b"\0\0", packet(b"H", b"client.test\0")[:-3]):
        reader = asyncio.StreamReader()
        reader.feed_data(stream)
        reader.feed_eof()
        with pytest.raises(ProtocolError, match="connection closed"):
            await codec.read_packet(reader)


def test_responses_on_the_wire():
    assert codec.continue_() == packet(b"c")
    assert codec.accept() == packet(b"a")
    assert codec.discard() == packet(b"d")
    assert codec.reject() == packet(b"r")
    assert codec.tempfail() == packet(b"t")
    assert codec.progress() == packet(b"p")
    assert codec.replycode("550 5.7.1 No 100% sure") == packet(b"y", b"550 5.7.1 No 100%% sure\0")
    assert codec.add_header("X-Gateway-Id", "abc") == packet(b"h", b"X-Gateway-Id\0abc\0")
    assert codec.insert_header(0, "X-A", " v") == packet(b"i", b"\0\0\0\0X-A\0 v\0")
    assert codec.change_header(2, "Subject", "") == packet(b"m", b"\0\0\0\2Subject\0\0")
    assert codec.quarantine("held by rule x") == packet(b"q", b"held by rule x\0")
    assert codec.replace_body(b"new\r\n") == packet(b"b", b"new\r\n")
    assert codec.add_recipient("a@b") == packet(b"+", b"<a@b>\0")
    assert codec.delete_recipient("a@b") == packet(b"-", b"<a@b>\0")
    assert codec.optneg(6, Actions.ADDHDRS | Actions.CHGHDRS, Protocol.NOUNKNOWN) == packet(
        b"O", bytes.fromhex("00000006 00000011 00000100"))
    assert codec.optneg(6, Actions.SETSYMLIST, Protocol.NONE, {codec.SMFIC_BODYEOB: "i"}) == packet(
        b"O", bytes.fromhex("00000006 00000100 00000000 00000005") + b"i\0")


def test_responses_decode_back():
    r = codec.decode_response(b"i", codec.insert_header(3, "X-A", "v")[5:])
    assert r.fields == [3, "X-A", "v"]
    assert codec.decode_response(b"m", codec.change_header(1, "Subject", "")[5:]).fields == [1, "Subject", ""]
    assert codec.decode_response(b"y", codec.replycode("451 4.3.0 later")[5:]).fields == ["451 4.3.0 later"]
    assert codec.decode_response(b"O", codec.optneg(6, Actions.ADDHDRS, Protocol.NONE)[5:]).fields == [6, 1, 0]
    with pytest.raises(ProtocolError):
        codec.decode_response(b"i", b"\0\0")


@pytest.mark.parametrize("bad", ["250 ok", "55 short", "5xx 5.7.1 x", "550-5.7.1 multi", "", "4501"])
def test_replycode_accepts_only_4xx_5xx_replies(bad):
    with pytest.raises(ValueError):
        codec.replycode(bad)


def test_nul_never_goes_out_inside_a_string():
    with pytest.raises(ValueError):
        codec.add_header("X-A", "a\0b")
    with pytest.raises(ValueError):
        codec.replycode("550 5.7.1 a\0b")


def test_non_utf8_header_bytes_survive():
    raw = packet(b"L", b"Subject\0 caf\xe9\0")
    assert codec.Decoder().feed(raw) == [codec.Header("Subject", b" caf\xe9")]
    assert codec.Decoder().feed(packet(b"H", b"h\xffst\0"))[0].name.encode("utf-8", "surrogateescape") == b"h\xffst"


def test_random_packets_only_ever_raise_protocol_error():
    import random

    rng = random.Random(8)
    commands = [v for k, v in vars(codec).items() if k.startswith("SMFIC_")] + [b"Z", b"\0"]
    decoded = 0
    for _ in range(5000):
        data = bytes(rng.choice(b"\0\0<>@abc46LU\x19\xff") for _ in range(rng.randrange(0, 24)))
        try:
            codec.Decoder().feed(packet(rng.choice(commands), data))
            decoded += 1
        except ProtocolError:
            pass
    assert decoded > 1000          # the generator does produce valid packets too
