"""XFORWARD on the SMTP front end (Postfix's content_filter mode tells the gateway the original client):
believed only from [smtp] xforward_hosts, lasts one transaction, feeds direction and the held record."""

from __future__ import annotations

from gateway.smtp.server import parse_xforward
from tests.milter.test_session import MALFORMED
from tests.support.peers import RawClient


async def held_after(client: RawClient, mail_from: str, rcpt: str, gw) -> object:
    assert (await client.cmd(f"MAIL FROM:<{mail_from}>"))[0] == 250
    assert (await client.cmd(f"RCPT TO:<{rcpt}>"))[0] == 250
    code, text = await client.send_data(MALFORMED.removesuffix(b"\r\n"))
    assert code == 250, text
    items = await gw.store.list()
    return items[0]


async def test_trusted_client_xforward_sets_the_envelope_for_one_transaction(gw, sink):
    client = await RawClient.connect(gw.port)
    code, text = await client.cmd("EHLO mta.example.gov")
    assert "250-XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE" in text
    assert (await client.cmd("XFORWARD NAME=mail.example.net ADDR=203.0.113.5 PORT=4711")) == (250, "250 2.0.0 Ok")
    assert (await client.cmd("XFORWARD PROTO=ESMTP HELO=mail.example.net IDENT=[UNAVAILABLE] SOURCE=REMOTE"))[0] == 250
    # A local sender with a local recipient from an outside address is inbound, not internal.
    item = await held_after(client, "alice@example.gov", "bob@example.gov", gw)
    assert (item.client_address, item.helo, item.direction) == ("203.0.113.5", "mail.example.net", "inbound")

    # The next transaction on the same connection, without XFORWARD, is Postfix's own again.
    assert (await client.cmd("MAIL FROM:<alice@example.gov>"))[0] == 250
    assert (await client.cmd("RCPT TO:<bob@example.gov>"))[0] == 250
    assert (await client.send_data(MALFORMED.removesuffix(b"\r\n")))[0] == 250
    latest = max(await gw.store.list(), key=lambda i: i.id)
    assert (latest.client_address, latest.helo, latest.direction) == ("127.0.0.1", "mta.example.gov", "internal")
    await client.close()


async def test_xforward_from_an_untrusted_client_is_refused(start_gateway):
    gw = await start_gateway(smtp={"xforward_hosts": []})
    client = await RawClient.connect(gw.port)
    code, text = await client.cmd("EHLO mta.example.gov")
    assert "XFORWARD" not in text
    assert (await client.cmd("XFORWARD ADDR=203.0.113.5")) == (550, "550 5.7.0 Error: insufficient authorization")
    await client.close()


async def test_xforward_syntax_and_placement(gw):
    client = await RawClient.connect(gw.port)
    await client.cmd("EHLO mta.example.gov")
    assert (await client.cmd("XFORWARD ADDR=not-an-address"))[0] == 501
    assert (await client.cmd("XFORWARD COLOUR=blue"))[0] == 501
    assert (await client.cmd("XFORWARD"))[0] == 501
    assert (await client.cmd("MAIL FROM:<alice@example.gov>"))[0] == 250
    assert (await client.cmd("XFORWARD ADDR=203.0.113.5"))[0] == 503
    await client.close()


def test_parse_xforward_decodes_xtext_and_ipv6():
    assert parse_xforward("ADDR=IPv6:2001:db8::1 HELO=a+2Bb NAME=[TEMPUNAVAIL]") == {"ADDR": "2001:db8::1",
                                                                                      "HELO": "a+b"}
