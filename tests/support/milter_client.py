"""The MTA's side of the milter protocol, for tests that drive the gateway's milter byte for byte."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.milter import codec
from gateway.milter.codec import Actions, Protocol

FINAL = {codec.SMFIR_ACCEPT, codec.SMFIR_CONTINUE, codec.SMFIR_DISCARD, codec.SMFIR_REJECT, codec.SMFIR_TEMPFAIL,
         codec.SMFIR_REPLYCODE}
ALL_ACTIONS = (Actions.ADDHDRS | Actions.CHGBODY | Actions.ADDRCPT | Actions.DELRCPT | Actions.CHGHDRS
               | Actions.QUARANTINE | Actions.CHGFROM | Actions.ADDRCPT_PAR | Actions.SETSYMLIST)
# What Postfix 3.7 offers: every step may be skipped or sent without waiting for a reply.
POSTFIX_PROTOCOL = Protocol(0x1FFFFF)


class MilterClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.negotiated: codec.Response | None = None

    @classmethod
    async def connect(cls, port: int) -> MilterClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    @classmethod
    async def connect_unix(cls, path: str) -> MilterClient:
        reader, writer = await asyncio.open_unix_connection(path)
        return cls(reader, writer)

    async def write(self, *packets: bytes) -> None:
        self.writer.write(b"".join(packets))
        await self.writer.drain()

    async def send(self, *commands: codec.Command) -> None:
        await self.write(*(codec.encode(c) for c in commands))

    async def read(self, timeout: float = 10.0) -> codec.Response | None:
        packet = await asyncio.wait_for(codec.read_packet(self.reader), timeout)
        return None if packet is None else codec.decode_response(*packet)

    async def ask(self, command: codec.Command) -> codec.Response | None:
        await self.send(command)
        return await self.read()

    async def negotiate(self, actions: Actions = ALL_ACTIONS, protocol: Protocol = POSTFIX_PROTOCOL) -> codec.Response:
        reply = await self.ask(codec.OptNeg(6, actions, protocol))
        assert reply is not None and reply.command == codec.SMFIR_OPTNEG
        self.negotiated = reply
        return reply

    @property
    def protocol(self) -> Protocol:
        assert self.negotiated
        return Protocol(self.negotiated.fields[2])

    async def step(self, command: codec.Command, no_reply: Protocol) -> codec.Response | None:
        """Send one command; read its reply unless the negotiation said it gets none."""
        await self.send(command)
        if self.protocol & no_reply:
            return None
        return await self.read()

    async def until_final(self, timeout: float = 30.0) -> list[codec.Response]:
        """Responses to end of body: modifications, progress, then one final reply."""
        out = []
        while True:
            reply = await self.read(timeout)
            assert reply is not None, "milter closed the connection"
            out.append(reply)
            if reply.command in FINAL:
                return out

    async def session(self, client: str = "192.0.2.10", helo: str = "client.test") -> None:
        for reply in (await self.step(codec.Connect("client.test", "4", 40000, client), Protocol.NR_CONN),
                      await self.step(codec.Helo(helo), Protocol.NR_HELO)):
            assert reply is None or reply.command == codec.SMFIR_CONTINUE, reply

    async def message(self, raw: bytes, mail_from: str, rcpts: list[str], chunk: int = 65535,
                      queue_id: str = "ABC123") -> list[codec.Response]:
        """One transaction as Postfix sends it; returns the end-of-body responses."""
        await self.send(codec.Macro(codec.SMFIC_MAIL, {"i": queue_id}))
        assert (await self.ask(codec.MailFrom(mail_from, ("BODY=8BITMIME",)))).command == codec.SMFIR_CONTINUE
        for rcpt in rcpts:
            assert (await self.ask(codec.RcptTo(rcpt))).command == codec.SMFIR_CONTINUE
        head, _, body = raw.partition(b"\r\n\r\n")
        fields: list[bytes] = []
        for line in head.split(b"\r\n"):
            if line[:1] in (b" ", b"\t") and fields:
                fields[-1] += b"\n" + line
            else:
                fields.append(line)
        leadspc = bool(self.protocol & Protocol.HDR_LEADSPC)
        for f in fields:
            name, _, value = f.partition(b":")
            if not leadspc:
                value = value.removeprefix(b" ")
            reply = await self.step(codec.Header(name.decode(), value), Protocol.NR_HDR)
            assert reply is None or reply.command == codec.SMFIR_CONTINUE, reply
        reply = await self.step(codec.EndOfHeaders(), Protocol.NR_EOH)
        assert reply is None or reply.command == codec.SMFIR_CONTINUE, reply
        for start in range(0, len(body), chunk):
            reply = await self.ask(codec.Body(body[start:start + chunk]))
            if reply.command != codec.SMFIR_CONTINUE:
                return [reply]
        await self.send(codec.Macro(codec.SMFIC_BODYEOB, {"i": queue_id}), codec.EndOfBody())
        return await self.until_final()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.send(codec.Quit())
        self.writer.close()


def apply_edits(raw: bytes, responses: list[codec.Response]) -> bytes:
    """What an MTA would make of the message after the modifications (ours: header edits only)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    fields: list[list[str]] = []
    for line in head.decode().split("\r\n"):
        if line[:1] in (" ", "\t") and fields:
            fields[-1][1] += "\r\n" + line
        else:
            name, _, value = line.partition(":")
            fields.append([name, value.removeprefix(" ")])
    for r in responses:
        if r.command in (codec.SMFIR_CHGHEADER, codec.SMFIR_INSHEADER, codec.SMFIR_ADDHEADER):
            r = codec.Response(r.command, r.data, [*r.fields[:-1], r.fields[-1].removeprefix(" ")])
        if r.command == codec.SMFIR_CHGHEADER:
            index, name, value = r.fields
            matching = [f for f in fields if f[0].lower() == name.lower()]
            if value:
                matching[index - 1][1] = value.replace("\n", "\r\n")
            else:
                fields.remove(matching[index - 1])
        elif r.command == codec.SMFIR_INSHEADER:
            index, name, value = r.fields
            fields.insert(index, [name, value.replace("\n", "\r\n")])
        elif r.command == codec.SMFIR_ADDHEADER:
            name, value = r.fields
            fields.append([name, value.replace("\n", "\r\n")])
    return "".join(f"{n}: {v}\r\n" for n, v in fields).encode() + b"\r\n" + body
