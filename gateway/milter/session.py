"""The milter front end: an asyncio server the MTA (Postfix smtpd_milters) connects to.

Per SMTP session the MTA sends connect, helo, envelope, headers and body; at end of body we rebuild
the raw message, hand it to the one message path (gateway/handling.py) as the SMTP front end does,
and translate the outcome: our headers added (and the subject tagged) for deliver/tag, a 5xx or 4xx reply for
reject/tempfail, and for quarantine either our own quarantine plus DISCARD (so review, notices
and release work the same as for the SMTP front end) or Postfix's hold queue (SMFIR_QUARANTINE).

Our own errors answer TEMPFAIL (451): nothing is accepted unscanned. A peer that breaks the
protocol is disconnected; the MTA then applies its milter_default_action (tempfail, as we document).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import os
import socket
from dataclasses import dataclass, field

from gateway import headers
from gateway.actions import TEMPFAIL_INTERNAL
from gateway.config import Settings, milter_address
from gateway.handling import Handled, Handling
from gateway.milter import codec
from gateway.milter.codec import Actions as Act
from gateway.milter.codec import Protocol as Proto
from gateway.model import Action, Envelope, Mail, Verdict

log = logging.getLogger("gateway.milter")

WANTED_ACTIONS = Act.ADDHDRS | Act.CHGHDRS | Act.CHGBODY | Act.QUARANTINE
# Steps we do not need; no replies where we never refuse (saves a round trip per header); the exact
# header text (leading space kept). Each only where the MTA offers it.
WANTED_PROTOCOL = (Proto.NOUNKNOWN | Proto.NODATA | Proto.HDR_LEADSPC | Proto.NR_CONN | Proto.NR_HELO | Proto.NR_HDR
                   | Proto.NR_EOH)
MAX_RECIPIENTS = 1000
TOO_BIG = "552 5.3.4 Message too big for system"
TEMPFAIL_REPLY = TEMPFAIL_INTERNAL


@dataclass
class Transaction:
    mail_from: str = ""
    mail_args: tuple[str, ...] = ()
    rcpt_tos: list[str] = field(default_factory=list)
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    size: int = 0
    too_big: bool = False


class MilterSession:
    """One MTA connection (Postfix opens one per SMTP session)."""

    def __init__(self, server: MilterServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.settings = server.settings
        self.reader, self.writer = reader, writer
        self.actions = Act.NONE
        self.protocol = Proto.NONE
        self.macros: dict[str, str] = {}
        self.client_address = ""
        self.client_name = ""
        self.helo = ""
        self.tx = Transaction()

    async def send(self, *packets: bytes) -> None:
        self.writer.write(b"".join(packets))
        await self.writer.drain()

    async def run(self) -> None:
        milter = self.settings.milter
        while True:
            async with asyncio.timeout(milter.timeout):
                packet = await codec.read_packet(self.reader, codec.MAX_PACKET)
            if packet is None:
                return
            command = codec.decode(*packet)
            if await self.handle(command) is False:
                return

    async def handle(self, command: codec.Command) -> bool | None:
        """Answer one command; False ends the connection."""
        if isinstance(command, codec.OptNeg):
            if command.version < 2:
                raise codec.ProtocolError(f"milter protocol version {command.version} is not supported")
            self.actions = command.actions & WANTED_ACTIONS
            self.protocol = command.protocol & WANTED_PROTOCOL
            if not self.actions & Act.ADDHDRS or not self.actions & Act.CHGHDRS:
                log.warning("the MTA does not allow adding/changing headers: verdict headers will be missing")
            log.debug("milter negotiation: MTA offers version %d actions %#x protocol %#x; we take %#x %#x",
                      command.version, command.actions, command.protocol, self.actions, self.protocol)
            await self.send(codec.optneg(min(command.version, codec.VERSION), self.actions, self.protocol))
        elif isinstance(command, codec.Macro):
            if len(self.macros) < 200:
                self.macros.update(command.macros)
        elif isinstance(command, codec.Connect):
            self.client_name = command.hostname
            self.client_address = command.address if command.family in "46" else ""
            await self.reply_continue(Proto.NR_CONN)
        elif isinstance(command, codec.Helo):
            self.helo = command.name
            await self.reply_continue(Proto.NR_HELO)
        elif isinstance(command, codec.MailFrom):
            self.tx = Transaction(mail_from=command.address, mail_args=command.args)
            await self.reply_continue(Proto.NR_MAIL)
        elif isinstance(command, codec.RcptTo):
            if len(self.tx.rcpt_tos) >= MAX_RECIPIENTS:
                await self.send(codec.replycode("452 4.5.3 Too many recipients"))
                return None
            self.tx.rcpt_tos.append(command.address)
            await self.reply_continue(Proto.NR_RCPT)
        elif isinstance(command, codec.Header):
            self.collect(len(command.name) + len(command.value) + 4)
            if not self.tx.too_big:
                self.tx.headers.append((command.name, command.value))
            await self.reply_continue(Proto.NR_HDR)
        elif isinstance(command, codec.Body | codec.EndOfBody) and command.chunk:
            self.collect(len(command.chunk))
            if not self.tx.too_big:
                self.tx.body += command.chunk
            if isinstance(command, codec.Body):
                await self.body_reply()
        elif isinstance(command, codec.Body | codec.EndOfHeaders | codec.Data | codec.Unknown):
            flag = {codec.Body: Proto.NR_BODY, codec.EndOfHeaders: Proto.NR_EOH, codec.Data: Proto.NR_DATA,
                    codec.Unknown: Proto.NR_UNKN}[type(command)]
            await self.reply_continue(flag)
        elif isinstance(command, codec.Abort):
            self.tx = Transaction()
        elif isinstance(command, codec.QuitNewConnection):
            self.tx, self.macros, self.client_address, self.client_name, self.helo = Transaction(), {}, "", "", ""
        elif isinstance(command, codec.Quit):
            return False
        if isinstance(command, codec.EndOfBody):
            await self.send(*await self.end_of_message())
            self.tx = Transaction()
        return None

    async def reply_continue(self, no_reply: Proto) -> None:
        if not self.protocol & no_reply:
            await self.send(codec.continue_())

    async def body_reply(self) -> None:
        if self.tx.too_big:
            await self.send(codec.replycode(TOO_BIG))
        else:
            await self.reply_continue(Proto.NR_BODY)

    def collect(self, size: int) -> None:
        self.tx.size += size
        if self.tx.size > self.settings.milter.max_message_size and not self.tx.too_big:
            self.tx.too_big = True
            self.tx.headers.clear()
            self.tx.body = bytearray()

    # --- end of message ------------------------------------------------------------------------------
    def raw_message(self) -> bytes:
        """The message as the MTA received it: header fields with CRLF folds, a blank line, the body."""
        separator = b":" if self.protocol & Proto.HDR_LEADSPC else b": "
        lines = []
        for name, value in self.tx.headers:
            value = value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            lines.append(name.encode("utf-8", "surrogateescape") + (separator if value else b":") + value + b"\r\n")
        return b"".join(lines) + b"\r\n" + bytes(self.tx.body)

    def envelope(self) -> Envelope:
        client = self.client_address or self.macros.get("{client_addr}", "")
        helo = self.helo or self.macros.get("s", "")
        return Envelope(mail_from=self.tx.mail_from, rcpt_tos=tuple(self.tx.rcpt_tos), client_address=client,
                        helo=helo, smtp_utf8=any(a.upper() == "SMTPUTF8" for a in self.tx.mail_args))

    async def end_of_message(self) -> list[bytes]:
        if self.tx.too_big:
            return [codec.replycode(TOO_BIG)]
        if not self.tx.rcpt_tos:
            return [codec.replycode(TEMPFAIL_REPLY)]
        handoff = MtaHandoff(self)
        ticker = asyncio.create_task(self.keep_alive())
        try:
            handled = await self.server.handling.handle(self.envelope(), self.raw_message(), handoff,
                                                        queue_id=self.macros.get("i", ""))
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        return handoff.answer(handled)

    async def keep_alive(self) -> None:
        """SMFIR_PROGRESS while the pipeline runs, so the MTA's milter timeout does not expire."""
        interval = self.settings.milter.progress_interval
        while True:
            await asyncio.sleep(interval)
            await self.send(codec.progress())

    def edits(self, original: bytes, relayed: bytes) -> list[bytes]:
        """The header (and, if a finisher changed it, body) modifications that turn `original` into
        `relayed`: deletions and changes by (name, occurrence), bottom-up, then insertions top-down."""
        old_fields, _, old_body = headers.split(original)
        new_fields, _, new_body = headers.split(relayed)
        old_fields = [_crlf(f) for f in old_fields]
        new_fields = [_crlf(f) for f in new_fields]
        occurrence, seen = [], {}
        for f in old_fields:
            name = headers.field_name(f)
            seen[name] = seen.get(name, 0) + 1
            occurrence.append(seen[name])
        changes: list[tuple[int, bytes]] = []
        inserts: list[bytes] = []
        matcher = difflib.SequenceMatcher(None, old_fields, new_fields, autojunk=False)
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op == "equal":
                continue
            same_names = (op == "replace" and i2 - i1 == j2 - j1 and all(
                headers.field_name(old_fields[i]) == headers.field_name(new_fields[j1 + k])
                for k, i in enumerate(range(i1, i2))))
            for k, i in enumerate(range(i1, i2)):
                name, _ = self.split_field(old_fields[i])
                value = self.split_field(new_fields[j1 + k])[1] if same_names else b""
                changes.append((i, codec.change_header(occurrence[i], name, value)))
            if not same_names:
                for j in range(j1, j2):
                    name, value = self.split_field(new_fields[j])
                    if j == len(new_fields) - 1 and i1 == len(old_fields):
                        inserts.append(codec.add_header(name, value))
                    else:
                        inserts.append(codec.insert_header(j, name, value))
        packets = [packet for _, packet in sorted(changes, key=lambda c: -c[0])] + inserts
        if new_body != old_body:
            if not self.actions & Act.CHGBODY:
                raise RuntimeError("a finisher changed the body but the MTA does not allow SMFIF_CHGBODY")
            chunk = 65535
            packets += [codec.replace_body(new_body[k:k + chunk]) for k in range(0, len(new_body), chunk)]
        return packets

    def split_field(self, field_bytes: bytes) -> tuple[str, bytes]:
        """'Name: value\\r\\n\\tmore\\r\\n' -> ('Name', b'value\\n\\tmore'): the MTA takes LF folds."""
        name, _, value = field_bytes.partition(b":")
        value = value.removesuffix(b"\r\n").replace(b"\r\n", b"\n")
        if not self.protocol & Proto.HDR_LEADSPC:
            value = value.removeprefix(b" ")
        return name.strip().decode("ascii", "replace"), value


class MtaHandoff:
    """The milter hands a message on to the MTA: header (and body) edits, then continue; with
    `quarantine_mode = "postfix-hold"` a quarantine verdict goes on too, into the MTA's hold queue."""

    front = "milter"

    def __init__(self, session: MilterSession) -> None:
        self.session = session
        self.holds = session.settings.milter.quarantine_mode != "store"
        self.packets: list[bytes] = []

    async def pass_on(self, mail: Mail, verdict: Verdict, message: bytes) -> str:
        packets = self.session.edits(mail.raw, message)
        if verdict.action is Action.QUARANTINE:
            if not self.session.actions & Act.QUARANTINE:
                log.error("the MTA did not allow SMFIF_QUARANTINE; deferring %s", mail.id)
                return TEMPFAIL_REPLY
            reason = f"gateway {mail.id}: rule {verdict.rule}: {', '.join(verdict.kinds)}"
            packets.append(codec.quarantine(headers.safe_value(reason, 400)))
            actions = self.session.server.handling.actions
            await actions.notify_hold_queue(mail, verdict, self.session.macros.get("i", ""))
        self.packets = [*packets, codec.continue_()]
        return f"250 2.0.0 Ok: handed back to the MTA as {mail.id}"

    async def drop(self) -> None:
        """Nothing to end: the MTA holds the transaction until our answer."""

    async def failed(self) -> None:
        self.packets = []

    def answer(self, handled: Handled) -> list[bytes]:
        """The end-of-message answer: modifications first, then one final reply. A message held in our
        quarantine is discarded from the MTA's queue (the 250 of a committed hold)."""
        if self.packets and handled.reply.startswith("250"):
            return self.packets
        verdict = handled.verdict
        if verdict is not None and verdict.action is Action.QUARANTINE and handled.reply.startswith("250"):
            return [codec.discard()]
        return [codec.replycode(handled.reply)]


def _crlf(field_bytes: bytes) -> bytes:
    return field_bytes.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class MilterServer:
    """The listener: inet (host:port) or a unix socket; bounded connections; drains on close."""

    def __init__(self, settings: Settings, handling: Handling) -> None:
        self.settings = settings
        self.handling = handling
        self.server: asyncio.base_events.Server | None = None
        self.sessions: set[MilterSession] = set()

    @property
    def active(self) -> int:
        return len(self.sessions)

    async def start(self, sock: socket.socket | None = None) -> None:
        milter = self.settings.milter
        address = milter_address(milter.listen)
        if sock is not None:
            self.server = await asyncio.start_server(self.serve, sock=sock)
        elif isinstance(address, str):
            with contextlib.suppress(FileNotFoundError):
                if os.path.exists(address) and not os.path.isdir(address):
                    os.unlink(address)          # a stale socket from a previous run
            self.server = await asyncio.start_unix_server(self.serve, path=address)
            os.chmod(address, int(milter.socket_mode, 8))
        else:
            host, port = address
            self.server = await asyncio.start_server(self.serve, host, port, reuse_address=True)
        log.info("milter listening on %s", milter.listen)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active >= self.settings.milter.max_connections:
            log.warning("milter connection refused: %d connections already", self.active)
            writer.close()
            return
        session = MilterSession(self, reader, writer)
        self.sessions.add(session)
        try:
            await session.run()
        except codec.ProtocolError as e:
            log.warning("milter protocol error from the MTA, closing: %s", e)
        except TimeoutError:
            log.info("milter connection idle for %gs, closing", self.settings.milter.timeout)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("milter session failed")
        finally:
            self.sessions.discard(session)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    async def close(self, deadline: float = 5.0) -> None:
        """Stop accepting and end the connections left (idle ones; `drain` waited for busy ones)."""
        self.stop_accepting()
        for session in list(self.sessions):
            session.writer.close()
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while self.sessions and loop.time() < end:
            await asyncio.sleep(0.01)
