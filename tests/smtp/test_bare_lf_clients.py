"""Clients that end lines with a bare LF (Python's smtplib sending bytes does): their lines are lines, as
Postfix reads them, and arrive with CRLF; an end-of-data look-alike is still held as smuggling."""

from __future__ import annotations

import asyncio
import smtplib

from tests.support.peers import RawClient


def _smtplib_send(port: int, message: bytes) -> dict:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        return client.sendmail("alice@example.gov", ["bob@example.org"], message)


async def test_smtplib_bare_lf_message_of_50_kb_arrives_intact(gw, sink):
    lines = [b"From: alice@example.gov", b"To: bob@example.org", b"Subject: weekly figures", b""]
    lines += [b"row %05d: " % i + b"figures and more figures " * 2 + b"." * (i % 3) for i in range(800)]
    lines += [b".a line that starts with a dot", b"..two dots", b"the end"]
    message = b"\n".join(lines)
    assert len(message) > 50_000 and b"\r" not in message
    refused = await asyncio.to_thread(_smtplib_send, gw.port, message)
    assert refused == {}
    [got] = await sink.wait_for(1)
    assert got.data.endswith(message.replace(b"\n", b"\r\n") + b"\r\n")
    assert b"\r\n.a line that starts with a dot\r\n..two dots\r\nthe end\r\n" in got.data
    assert await gw.store.list() == []


async def test_bare_lf_end_of_data_look_alike_in_a_long_bare_lf_message_is_held(gw, sink):
    body = b"\n".join(b"line %04d of a bare-LF message" % i for i in range(100))
    payload = (b"From: alice@example.gov\nTo: bob@example.org\nSubject: first\n\n" + body
               + b"\n.\nMAIL FROM:<evil@example.gov>\nRCPT TO:<victim@example.org>\nDATA\nSubject: smuggled\n")
    client = await RawClient.connect(gw.port)
    try:
        await client.cmd("EHLO client.test")
        await client.cmd("MAIL FROM:<alice@example.gov>")
        await client.cmd("RCPT TO:<bob@example.org>")
        code, text = await client.send_data(payload)
        assert code == 250, text
        assert (await client.cmd("NOOP"))[0] == 250
    finally:
        await client.close()
    await asyncio.sleep(0.05)
    assert sink.messages == []
    [held] = await gw.store.list()
    assert "malformed.smtp_smuggling" in held.kinds
