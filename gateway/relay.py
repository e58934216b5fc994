"""The next hop: an SMTP client (aiosmtplib) that relays with the original envelope.

`NextHop` keeps one connection for a client session and opens the next-hop transaction at the
client's MAIL, passing the next hop's RCPT replies through as they happen (like Postfix's
before-queue proxy): a recipient the next hop refuses is refused to the client, at once and only
that one. `deliver` is the one-shot path for mail released from the quarantine and for notices.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field

import aiosmtplib

from gateway import observability
from gateway.config import RelaySettings, split_host_port

log = logging.getLogger("gateway.relay")


@dataclass(frozen=True)
class Reply:
    code: int
    message: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        return f"{self.code} {self.message}"


UNAVAILABLE = Reply(451, "4.4.1 Next hop unavailable, please try again later")
# aiosmtpd accepts some addresses that aiosmtplib will not put on a command line (ValueError: blanks,
# quotes or angle brackets left over after parsing, '<!"@x>'): refused, as a malformed address.
UNSENDABLE = Reply(553, "5.1.3 Error: malformed address")


class NextHop:
    def __init__(self, settings: RelaySettings, local_hostname: str | None = None) -> None:
        self.settings = settings
        self.host, self.port = split_host_port(settings.next_hop)
        self.local_hostname = local_hostname
        self.client: aiosmtplib.SMTP | None = None
        self.in_transaction = False

    async def _connect(self) -> None:
        client = aiosmtplib.SMTP(hostname=self.host, port=self.port, timeout=self.settings.timeout,
                                 start_tls=False, local_hostname=self.local_hostname)
        await client.connect()
        await client.ehlo()
        mode = self.settings.starttls
        if mode != "off" and client.supports_extension("starttls"):
            context = ssl.create_default_context()
            if not self.settings.tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            await client.starttls(tls_context=context)
        elif mode == "required":
            client.close()
            raise aiosmtplib.SMTPException("next hop does not offer STARTTLS, which [relay] starttls requires")
        self.client = client

    async def begin(self, mail_from: str, *, eight_bit: bool = False, smtp_utf8: bool = False) -> Reply:
        """Open a transaction: connect (or reuse the connection) and send MAIL FROM."""
        await self.reset()
        mail_from = "" if mail_from == "<>" else mail_from     # the null sender, as aiosmtpd hands it on
        for attempt in (1, 2):          # a kept connection may have been closed by the next hop meanwhile
            try:
                if self.client is None or not self.client.is_connected:
                    await self._connect()
                assert self.client
                options = []
                if eight_bit and self.client.supports_extension("8bitmime"):
                    options.append("BODY=8BITMIME")
                if smtp_utf8 and self.client.supports_extension("smtputf8"):
                    options.append("SMTPUTF8")
                try:
                    response = await self.client.mail(mail_from, options=options)
                except ValueError:      # the address alone (not the connection): see UNSENDABLE
                    return UNSENDABLE
                self.in_transaction = True
                return Reply(response.code, response.message)
            except aiosmtplib.SMTPResponseException as e:
                return _reply(e)
            except (aiosmtplib.SMTPException, OSError) as e:
                await self.close()
                if attempt == 2:
                    log.warning("next hop %s:%s unavailable: %s", self.host, self.port, e)
                    observability.next_hop_error("connect")
        return UNAVAILABLE

    async def rcpt(self, address: str) -> Reply:
        assert self.client and self.in_transaction
        try:
            response = await self.client.rcpt(address)
            return Reply(response.code, response.message)
        except aiosmtplib.SMTPResponseException as e:
            return _reply(e)
        except ValueError:
            return UNSENDABLE
        except (aiosmtplib.SMTPException, OSError) as e:
            log.warning("next hop failed at RCPT: %s", e)
            observability.next_hop_error("rcpt")
            await self.close()
            return UNAVAILABLE

    async def data(self, message: bytes) -> Reply:
        assert self.client and self.in_transaction
        self.in_transaction = False
        try:
            response = await send_data(self.client, message)
            return Reply(response.code, response.message)
        except aiosmtplib.SMTPResponseException as e:
            if e.code < 400:
                await self.close()
                return UNAVAILABLE
            return _reply(e)
        except (aiosmtplib.SMTPException, OSError) as e:
            log.warning("next hop failed at DATA: %s", e)
            observability.next_hop_error("data")
            await self.close()
            return UNAVAILABLE

    async def reset(self) -> None:
        if self.in_transaction and self.client is not None:
            self.in_transaction = False
            try:
                await self.client.rset()
            except (aiosmtplib.SMTPException, OSError):
                await self.close()

    async def close(self) -> None:
        self.in_transaction = False
        client, self.client = self.client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()


def encode_data(message: bytes) -> tuple[bytes, bytes]:
    """What aiosmtplib sends for DATA (bare CR and LF made CRLF, dot-stuffing, the final ".CRLF"),
    computed with bytes methods: its regex substitutions cost ~40 ms per MB. Returned as (content,
    end) so that a large message is not copied once more to append the end."""
    if not (message.count(b"\r\n") == message.count(b"\n") == message.count(b"\r")):
        message = aiosmtplib.protocol.LINE_ENDINGS_REGEX.sub(b"\r\n", message)
    stuffed = message.replace(b"\n.", b"\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed, b".\r\n" if stuffed.endswith(b"\r\n") else b"\r\n.\r\n"


async def send_data(client: aiosmtplib.SMTP, message: bytes) -> aiosmtplib.SMTPResponse:
    """client.data(message), with the encoding of `encode_data`; falls back to client.data when this
    aiosmtplib's protocol does not have the internals used here."""
    protocol = client.protocol
    lock = getattr(protocol, "_command_lock", None)
    if lock is None or not hasattr(protocol, "_response_pending") or not hasattr(protocol, "read_response"):
        return await client.data(message)
    content, end = encode_data(message)
    del message
    try:
        async with lock:
            protocol._response_pending = True
            protocol.write(b"DATA\r\n")
            start = await protocol.read_response(timeout=client.timeout)
            if start.code != 354:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            protocol._response_pending = True
            if len(content) < 1 << 20:
                protocol.write(content + end)       # one send for a small message
            else:
                protocol.write(content)             # no copy of a large one
                protocol.write(end)
            del content
            response = await protocol.read_response(timeout=client.timeout)
            if response.code != 250:
                raise aiosmtplib.SMTPDataError(response.code, response.message)
            return response
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        client.close()
        raise


def _reply(e: aiosmtplib.SMTPResponseException) -> Reply:
    return Reply(e.code, e.message)


@dataclass
class Delivery:
    """The outcome of a one-shot delivery: the transaction reply and each recipient's reply."""

    reply: Reply
    recipients: dict[str, Reply] = field(default_factory=dict)

    @property
    def accepted(self) -> list[str]:
        return [r for r, reply in self.recipients.items() if reply.ok]

    @property
    def ok(self) -> bool:
        return self.reply.ok and bool(self.accepted)


async def deliver(settings: RelaySettings, mail_from: str, rcpt_tos: list[str] | tuple[str, ...],
                  message: bytes) -> Delivery:
    """Deliver one message to the next hop; the caller decides what a failure means."""
    hop = NextHop(settings)
    try:
        reply = await hop.begin(mail_from, eight_bit=True)
        if not reply.ok:
            return Delivery(reply)
        results = {r: await hop.rcpt(r) for r in rcpt_tos}
        if not any(x.ok for x in results.values()):
            worst = max(results.values(), key=lambda x: x.code)
            return Delivery(worst, results)
        return Delivery(await hop.data(message), results)
    finally:
        await hop.close()
