"""The SMTP front end (aiosmtpd): relay rules at RCPT, DATA -> the one message path (gateway/handling.py).

The next-hop transaction opens at MAIL and each RCPT is passed through to it, so the client learns
exactly which recipients the next hop refused. Any internal error answers 451, never 5xx, and
never shows internal details.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections import Counter

from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from gateway import observability
from gateway.actions import TEMPFAIL_INTERNAL, client_reply
from gateway.config import Settings
from gateway.handling import Handling
from gateway.model import Envelope, Mail, Verdict
from gateway.relay import NextHop
from gateway.smtp.dataread import ByteBudget, DataState, Spool, read_data

log = logging.getLogger("gateway.smtp")

# aiosmtpd's own replies that lack enhanced status codes (RFC 3463).
_REWRITES = {
    "552 Error: Too much mail data": "552 5.3.4 Message too big for system",
    "552 Error: message size exceeds fixed maximum message size": "552 5.3.4 Message too big for system",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)",
}


# The plain address of nearly every MAIL and RCPT: "<dot-atom@host.name>", then parameters. aiosmtpd
# parses every address with the email package's full RFC 5322 grammar (about 80 us each); this takes
# the common shape at regex speed with the same result, and leaves everything else to aiosmtpd.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>")

_DATA_REPLIES = {
    DataState.TOO_LONG: "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)",
    DataState.TOO_MUCH: "552 5.3.4 Message too big for system",
    DataState.FAILED: TEMPFAIL_INTERNAL,
}


class GatewaySession(Session):
    next_hop: NextHop | None = None
    xforward: dict[str, str] | None = None      # the original client as Postfix's XFORWARD reported it


class ConnectionLimiter:
    """Total and per-client-address connection limits, shared by all sessions of one listener."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total, self.per_client = total, per_client
        self.by_client: Counter[str] = Counter()
        self.sessions: set[GatewaySMTP] = set()      # live sessions, for draining
        self.draining = False

    def admit(self, client: str) -> bool:
        if sum(self.by_client.values()) >= self.total or self.by_client[client] >= self.per_client:
            return False
        self.by_client[client] += 1
        return True

    def release(self, client: str) -> None:
        self.by_client[client] -= 1
        if self.by_client[client] <= 0:
            del self.by_client[client]

    @property
    def active(self) -> int:
        return sum(self.by_client.values())

    def drain(self) -> None:
        """Shutting down: sessions between transactions are closed with 421 now, the others after
        their transaction's reply."""
        self.draining = True
        for session in list(self.sessions):
            session.close_if_idle()


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP with connection limits, a DATA deadline and enhanced status codes."""

    def __init__(self, handler: Handler, limiter: ConnectionLimiter, data_timeout: float, *,
                 budget: ByteBudget | None = None, data_reader: str = "chunked", spool_threshold: int = 1 << 20,
                 spool_dir: str = "", **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self.limiter = limiter
        self.data_timeout = data_timeout
        self.budget = budget or ByteBudget(1 << 62)
        self.data_reader = data_reader
        self.spool_threshold = spool_threshold
        self.spool_dir = spool_dir

    def _create_session(self) -> Session:
        return GatewaySession(self.loop)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """(address, the rest of the command) as aiosmtpd's own, faster for the plain shape (above)."""
        match = _PLAIN_ADDRESS.match(arg)
        if match is not None:
            rest = arg[match.end():].lstrip(" \t")      # the blanks aiosmtpd's parser skips (its CFWS) ...
            local = match.group(1).rpartition("@")[0]
            if not (rest.startswith("(") or (self.local_part_limit and len(local) > self.local_part_limit)):
                return match.group(1), rest              # ... unless a comment follows, or the limit answers
        try:
            return super()._getaddr(arg)
        except Exception:           # the email package's parser breaks on some input ('(<@>)"': IndexError)
            return None, None       # aiosmtpd answers 553 5.1.3 (malformed), not our 451 for an internal error

    async def push(self, status) -> None:
        if isinstance(status, str):
            status = _REWRITES.get(status, status)
        await super().push(status)

    async def _handle_client(self) -> None:
        client = self.session.peer[0] if self.session and self.session.peer else ""
        if not self.limiter.admit(client):
            await self.push("421 4.7.0 Too many connections, please try again later")
            self.transport.close()
            return
        self.limiter.sessions.add(self)
        try:
            if self.limiter.draining:
                self.close_if_idle()
            else:
                await super()._handle_client()
        finally:
            self.limiter.sessions.discard(self)
            self.limiter.release(client)
            hop = getattr(self.session, "next_hop", None)
            if hop is not None:
                await hop.close()

    async def smtp_XFORWARD(self, arg: str) -> None:
        """Postfix's XFORWARD (www.postfix.org/XFORWARD_README.html): in the content_filter mode, the
        original client's address and HELO, so direction and sender checks see the real client.
        Believed only from [smtp] xforward_hosts; the relay check at RCPT still uses the real peer."""
        peer = self.session.peer[0] if self.session and self.session.peer else ""
        if not xforward_trusted(self.event_handler.settings, peer):
            await self.push("550 5.7.0 Error: insufficient authorization")
            return
        if self.envelope.mail_from is not None:
            await self.push("503 5.5.1 Error: XFORWARD not allowed within a transaction")
            return
        try:
            attributes = parse_xforward(arg or "")
        except ValueError as e:
            await self.push(f"501 5.5.4 Syntax: {e}")
            return
        self.session.xforward = {**(self.session.xforward or {}), **attributes}
        await self.push("250 2.0.0 Ok")
    in_data = False

    def close_if_idle(self) -> None:
        """421 and close unless a transaction is under way (MAIL given, or DATA being handled)."""
        if self.in_data or (self.envelope is not None and self.envelope.mail_from is not None):
            return
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"421 4.3.2 Service shutting down, please try again later\r\n")
            self.transport.close()

    async def smtp_DATA(self, arg: str) -> None:
        self.in_data = True
        try:
            await self._timed_DATA(arg)
        finally:
            self.in_data = False
        if self.limiter.draining:
            self.close_if_idle()

    async def _timed_DATA(self, arg: str) -> None:
        try:
            async with asyncio.timeout(self.data_timeout):
                if self.data_reader == "lines":
                    await super().smtp_DATA(arg)        # aiosmtpd's own reader, one line at a time
                else:
                    await self._chunked_DATA(arg)
        except TimeoutError:
            await self.push("421 4.4.2 DATA timeout, closing connection")
            self.transport.close()

    async def _chunked_DATA(self, arg: str) -> None:
        """aiosmtpd's smtp_DATA with the payload read in chunks into a spool (gateway/smtp/dataread.py)."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        spool = Spool(self.spool_threshold, self.spool_dir)
        try:
            try:
                state = await read_data(self._reader, spool, size_limit=self.data_size_limit,
                                        max_line=self.line_length_limit - 2)
            except asyncio.CancelledError:
                self._writer.close()        # the connection was lost during DATA
                raise
            except asyncio.IncompleteReadError:
                self._writer.close()
                return
            if state is not DataState.NOMINAL:
                self._set_post_data_state()
                await self.push(_DATA_REPLIES[state])
                return
            if spool.on_disk:
                observability.spooled()
            held = await self.budget.acquire(spool.size)
            try:
                raw = spool.getvalue()
                spool.close()
                self.envelope.content = self.envelope.original_content = raw
                self.envelope.smuggling = spool.smuggling       # seen before the line ends were normalised
                del raw
                status = await self._call_handler_hook("DATA")
            finally:
                self.budget.release(held)
        finally:
            spool.close()
        self._set_post_data_state()
        await self.push(status)


def sender_routed(address: str) -> bool:
    """An address with sender-specified routing: a source route, or %, ! or @ in the local part."""
    local = address.rpartition("@")[0]
    return address.startswith("@") or any(c in local for c in "%!@")


XFORWARD_NAMES = frozenset({"NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE"})


def xforward_trusted(settings: Settings, client: str) -> bool:
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n, strict=False) for n in settings.smtp.xforward_hosts)


def parse_xforward(arg: str) -> dict[str, str]:
    """'ADDR=192.0.2.1 HELO=client.example' -> attributes, xtext decoded; [UNAVAILABLE] values dropped."""
    attributes = {}
    for item in arg.split():
        name, sep, value = item.partition("=")
        name = name.upper()
        if not sep or name not in XFORWARD_NAMES:
            raise ValueError(f"bad XFORWARD attribute {item[:40]!r}")
        value = re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)
        if value.upper() in ("[UNAVAILABLE]", "[TEMPUNAVAIL]") or not value or len(value) > 255:
            continue
        if name == "ADDR":
            value = value.removeprefix("IPv6:").removeprefix("ipv6:")
            try:
                value = str(ipaddress.ip_address(value))
            except ValueError:
                raise ValueError(f"bad XFORWARD address {value[:40]!r}") from None
        attributes[name] = value
    if not attributes and not arg.strip():
        raise ValueError("XFORWARD attribute=value ...")
    return attributes


class NextHopHandoff:
    """The SMTP front end hands a message on to the next hop, in the transaction opened at MAIL."""

    front = "smtp"
    holds = False

    def __init__(self, hop: NextHop | None) -> None:
        self.hop = hop

    async def pass_on(self, mail: Mail, verdict: Verdict, message: bytes) -> str:
        if self.hop is None:
            raise RuntimeError("no next-hop transaction for this message")
        return client_reply(await self.hop.data(message), mail.id)

    async def drop(self) -> None:
        if self.hop is not None:
            await self.hop.reset()

    async def failed(self) -> None:
        if self.hop is not None:
            await self.hop.close()


class Handler:
    def __init__(self, settings: Settings, handling: Handling) -> None:
        self.settings = settings
        self.handling = handling

    async def handle_EHLO(self, server: SMTP, session: GatewaySession, envelope: SmtpEnvelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        session.xforward = None
        if xforward_trusted(self.settings, session.peer[0] if session.peer else ""):
            responses.insert(len(responses) - 1, "250-XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE")
        return responses

    async def handle_MAIL(self, server: SMTP, session: GatewaySession, envelope: SmtpEnvelope,
                          address: str, mail_options: list[str]) -> str:
        limiter = getattr(server, "limiter", None)
        if limiter is not None and limiter.draining:
            return "421 4.3.2 Service shutting down, please try again later"
        if self.settings.smtp.require_tls and not session.ssl:
            return "530 5.7.0 Must issue a STARTTLS command first"
        if session.next_hop is None:
            session.next_hop = NextHop(self.settings.relay, self.settings.smtp.hostname or None)
        eight_bit = "BODY=8BITMIME" in (o.upper() for o in mail_options)
        reply = await session.next_hop.begin(address, eight_bit=eight_bit, smtp_utf8=envelope.smtp_utf8)
        if not reply.ok:
            return str(reply) if reply.permanent else "451 4.4.1 Next hop unavailable, please try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: SMTP, session: GatewaySession, envelope: SmtpEnvelope,
                          address: str, rcpt_options: list[str]) -> str:
        client = session.peer[0] if session.peer else ""
        if any(ord(c) < 32 or ord(c) == 127 for c in address):     # "user@x\0.example.gov" looks local
            return "553 5.1.3 Error: malformed address"
        if not self.settings.is_internal_client(client):
            if not self.settings.is_local(address):
                return "550 5.7.1 Relaying denied"
            if sender_routed(address):
                # user%remote@local, remote!user@local, "user@remote"@local: the next hop might honour the route
                # and relay outside for us (Postfix's allow_untrusted_routing = no does the same).
                return "550 5.7.1 Relaying denied (sender-specified routing)"
        hop = session.next_hop
        if hop is None or not hop.in_transaction:
            return "451 4.4.1 Next hop unavailable, please try again later"
        reply = await hop.rcpt(address)
        if reply.ok:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            return "250 2.1.5 Ok"
        return str(reply)

    async def handle_RSET(self, server: SMTP, session: GatewaySession, envelope: SmtpEnvelope) -> str:
        session.xforward = None
        if session.next_hop is not None:
            await session.next_hop.reset()
        return "250 2.0.0 Ok"

    async def handle_DATA(self, server: SMTP, session: GatewaySession, envelope: SmtpEnvelope) -> str:
        forwarded, session.xforward = session.xforward or {}, None       # XFORWARD lasts one transaction
        mail_envelope = Envelope(
            mail_from=envelope.mail_from or "", rcpt_tos=tuple(envelope.rcpt_tos),
            client_address=forwarded.get("ADDR") or (session.peer[0] if session.peer else ""),
            helo=forwarded.get("HELO") or session.host_name or "", smtp_utf8=envelope.smtp_utf8,
            smuggling=getattr(envelope, "smuggling", False))
        handled = await self.handling.handle(mail_envelope, envelope.original_content or b"",
                                             NextHopHandoff(session.next_hop))
        return handled.reply

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %r", error)
        return TEMPFAIL_INTERNAL
