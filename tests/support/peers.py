"""Real neighbours for the tests: a recording SMTP sink (the next hop) that can be told to fail,
and small SMTP clients that speak the protocol byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class Sink:
    """The next hop. `mode`: accept | tempfail | permfail | hang | close (at DATA);
    `refuse`: recipients answered 550 at RCPT; `mail_reply`: a reply for MAIL instead of 250."""

    port: int = 0
    messages: list[Received] = field(default_factory=list)
    mode: str = "accept"
    refuse: set[str] = field(default_factory=set)
    mail_reply: str | None = None
    server: asyncio.base_events.Server | None = None
    tls_context: object = None

    async def handle_MAIL(self, server, session, envelope, address, options):
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address in self.refuse:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.mode == "tempfail":
            return "451 4.3.0 Sink says try later"
        if self.mode == "permfail":
            return "554 5.6.0 Sink rejects this"
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "close":
            server.transport.close()
            return "421 closing"
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK sink"

    async def start(self) -> Sink:
        loop = asyncio.get_running_loop()
        self.port = self.port or free_port()
        self.server = await loop.create_server(
            lambda: SMTP(self, enable_SMTPUTF8=True, hostname="sink", tls_context=self.tls_context,
                         data_size_limit=None),
            "127.0.0.1", self.port, reuse_address=True)
        return self

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
            self.server = None

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(self.messages) < count and loop.time() < end:
            await asyncio.sleep(0.02)
        return self.messages


class RawClient:
    """An SMTP client that sends exactly the bytes it is given, for protocol-level tests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1", source: str | None = None) -> RawClient:
        reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0) if source else None)
        client = cls(reader, writer)
        await client.reply()
        return client

    async def reply(self, timeout: float = 30.0) -> tuple[int, str]:
        lines = []
        while True:
            try:
                line = await asyncio.wait_for(self.reader.readline(), timeout)
            except ConnectionResetError:
                return (0, "connection reset")
            if not line:
                return (0, "connection closed")
            lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            if len(line) < 4 or line[3:4] != b"-":
                break
        return int(lines[-1][:3]), "\n".join(lines)

    async def cmd(self, line: str | bytes) -> tuple[int, str]:
        self.writer.write((line.encode() if isinstance(line, str) else line) + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def send_data(self, payload: bytes) -> tuple[int, str]:
        """DATA, then the payload exactly as given, then CRLF.CRLF."""
        code, text = await self.cmd("DATA")
        assert code == 354, text
        self.writer.write(payload + b"\r\n.\r\n")
        await self.writer.drain()
        return await self.reply()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(b"QUIT\r\n")
            await self.writer.drain()
        self.writer.close()


async def send(port: int, mail_from: str, rcpts: list[str], message: bytes, *,
               source: str | None = None, helo: str = "client.test") -> tuple[int, str, dict[str, tuple[int, str]]]:
    """One transaction: returns the DATA (or first failing) reply and each RCPT reply."""
    client = await RawClient.connect(port, source=source)
    try:
        await client.cmd(f"EHLO {helo}")
        code, text = await client.cmd(f"MAIL FROM:<{mail_from}>")
        if code != 250:
            return code, text, {}
        rcpt_replies = {r: await client.cmd(f"RCPT TO:<{r}>") for r in rcpts}
        if not any(c == 250 for c, _ in rcpt_replies.values()):
            return 554, "no valid recipients", rcpt_replies
        body = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        body = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in body.split(b"\r\n"))
        code, text = await client.send_data(body.removesuffix(b"\r\n"))
        return code, text, rcpt_replies
    finally:
        await client.close()


def make_message(subject: str = "Hello", body: str = "Just a note.\n", sender: str = "alice@example.gov",
                 to: str = "bob@example.org", extra_headers: str = "") -> bytes:
    text = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
            f"Message-ID: <test-{abs(hash((subject, body)))}@example.gov>\r\nMIME-Version: 1.0\r\n"
            f"{extra_headers}Content-Type: text/plain; charset=utf-8\r\n\r\n{body}")
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


async def start_gateway_process(tmp_path, port: int, config: str):
    """`gateway run` as a real process with this gateway.toml text, once it listens on `port`.
    Its log goes to tmp_path/gateway.log (quoted when it does not start)."""
    import sys
    from pathlib import Path

    cfg, log = tmp_path / "gateway.toml", tmp_path / "gateway.log"
    cfg.write_text(config)
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "run", "--config", str(cfg),
            cwd=Path(__file__).resolve().parents[2], stdout=asyncio.subprocess.DEVNULL, stderr=out)
    for _ in range(800):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return proc
        except OSError:
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
    if proc.returncode is None:
        proc.kill()
    raise AssertionError("gateway process did not start: " + log.read_text()[-2000:])
