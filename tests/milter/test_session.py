"""The milter front end over real sockets, driven byte for byte from the MTA's side: verdicts mapped
to milter replies, our quarantine, the message rebuilt exactly, bounds and protocol errors."""

from __future__ import annotations

import asyncio
import struct

import pytest

from gateway.app import Gateway
from gateway.milter import codec
from gateway.milter.codec import Protocol
from gateway.quarantine import StoreError
from tests.support.milter_client import POSTFIX_PROTOCOL, MilterClient, apply_edits
from tests.support.peers import free_port, make_message
from tests.support.settings import make_settings

MALFORMED = (b"From: mallory@example.org\r\nTo: bob@example.gov\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n"
             b"hello\r\n")                                   # no closing boundary: malformed.missing_final_boundary


def attachment_message(size: int = 2000) -> bytes:
    return (b"From: alice@example.gov\r\nTo: carol@example.org\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
            b"see attached\r\n--B\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename=\"data.bin\"\r\n\r\n" + b"x" * size + b"\r\n--B--\r\n")


@pytest.fixture
async def start_milter(tmp_path, sink):
    started: list[Gateway] = []

    async def start(**sections: dict):
        milter = {"enabled": True, "listen": f"inet:127.0.0.1:{free_port()}", **sections.pop("milter", {})}
        settings = make_settings(tmp_path, sink.port, milter=milter, **sections)
        gateway = await Gateway.create(settings)
        await gateway.start_milter()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.close()


@pytest.fixture
async def client_for():
    clients: list[MilterClient] = []

    async def connect(gateway: Gateway, protocol: Protocol = POSTFIX_PROTOCOL, client: str = "192.0.2.10"):
        c = await MilterClient.connect(gateway.milter.port)
        clients.append(c)
        await c.negotiate(protocol=protocol)
        await c.session(client=client)
        return c

    yield connect
    for c in clients:
        await c.close()


def site(tmp_path, text: str) -> dict:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return {"site": str(path)}


async def test_negotiation_asks_for_header_actions_and_quarantine(start_milter):
    gateway = await start_milter()
    c = await MilterClient.connect(gateway.milter.port)
    reply = await c.negotiate()
    version, actions, protocol = reply.fields
    assert version == 6
    assert codec.Actions(actions) == (codec.Actions.ADDHDRS | codec.Actions.CHGHDRS | codec.Actions.CHGBODY
                                      | codec.Actions.QUARANTINE)
    assert codec.Protocol(protocol) == (Protocol.NOUNKNOWN | Protocol.NODATA | Protocol.HDR_LEADSPC
                                        | Protocol.NR_CONN | Protocol.NR_HELO | Protocol.NR_HDR | Protocol.NR_EOH)
    await c.close()


async def test_an_mta_without_no_reply_steps_gets_a_reply_to_every_step(start_milter, client_for):
    # Like an older Sendmail: only the basic steps, every one answered.
    gateway = await start_milter()
    c = await client_for(gateway, protocol=Protocol.NOCONNECT | Protocol.NOHELO | Protocol.NOHDRS)
    assert c.protocol == Protocol.NONE
    replies = await c.message(MALFORMED, "mallory@example.org", ["bob@example.gov"])   # reads every reply
    assert [r.command for r in replies] == [codec.SMFIR_DISCARD]


async def test_clean_message_continues_with_our_headers_on_top(start_milter, client_for, sink):
    gateway = await start_milter()
    c = await client_for(gateway, client="127.0.0.1")
    raw = make_message(subject="Quarterly figures")
    replies = await c.message(raw, "alice@example.gov", ["carol@example.org"])
    assert [r.command for r in replies] == [codec.SMFIR_INSHEADER, codec.SMFIR_INSHEADER, codec.SMFIR_CONTINUE]
    result = apply_edits(raw, replies)
    head = result.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("X-Gateway-Id: ")
    assert "\r\nX-Gateway-Verdict: deliver\r\nFrom: alice@example.gov" in head   # outbound: bare
    assert result.endswith(raw.split(b"\r\n\r\n", 1)[1])      # body untouched
    assert sink.messages == []                                # the MTA delivers, not us
    assert await gateway.store.list() == []


async def test_look_alike_gateway_headers_from_outside_are_removed(start_milter, client_for):
    gateway = await start_milter()
    c = await client_for(gateway)
    raw = make_message(sender="mallory@example.org", to="bob@example.gov",
                       extra_headers="X-Gateway-Verdict: deliver; rule=trust-me\r\nX-Gateway-Verdict: again\r\n")
    replies = await c.message(raw, "mallory@example.org", ["bob@example.gov"])
    deletions = [r.fields for r in replies if r.command == codec.SMFIR_CHGHEADER]
    assert deletions == [[2, "X-Gateway-Verdict", ""], [1, "X-Gateway-Verdict", ""]]     # bottom-up
    result = apply_edits(raw, replies).decode()
    assert "trust-me" not in result and "again" not in result
    assert result.count("X-Gateway-Verdict:") == 1 and "X-Gateway-Verdict: deliver; rule=inbound/default" in result


async def test_tag_changes_the_subject(start_milter, client_for, tmp_path):
    gateway = await start_milter(policy=site(tmp_path, "[detectors.size]\nmax_attachment_bytes = 100\n"))
    c = await client_for(gateway, client="127.0.0.1")
    raw = attachment_message()
    replies = await c.message(raw, "alice@example.gov", ["carol@example.org"])
    assert [r.fields for r in replies if r.command == codec.SMFIR_CHGHEADER] == [
        [1, "Subject", " [Large attachment] report"]]
    result = apply_edits(raw, replies).decode()
    assert "\r\nSubject: [Large attachment] report\r\n" in result
    assert "X-Gateway-Verdict: tag\r\n" in result and "rule=" not in result
    assert replies[-1].command == codec.SMFIR_CONTINUE


async def test_reject_answers_5xx_with_the_rules_text(start_milter, client_for, tmp_path):
    policy = site(tmp_path, '[detectors.size]\nmax_message_bytes = 10\n\n[[outbound.rules]]\nname = "no-big"\n'
                            'match = ["oversize.message"]\naction = "reject"\n'
                            'reply = "Message too large for the Internet link (policy: discretion)"\n')
    gateway = await start_milter(policy=policy)
    c = await client_for(gateway, client="127.0.0.1")
    replies = await c.message(make_message(), "alice@example.gov", ["carol@example.org"])
    assert [(r.command, r.fields) for r in replies] == [
        (codec.SMFIR_REPLYCODE, ["550 5.7.1 Message too large for the Internet link (policy: discretion)"])]


async def test_policy_tempfail_answers_4xx(start_milter, client_for, tmp_path):
    policy = site(tmp_path, '[detectors.size]\nmax_message_bytes = 10\n\n[[outbound.rules]]\nname = "later"\n'
                            'match = ["oversize.message"]\naction = "tempfail"\nreply = "Try at night"\n')
    gateway = await start_milter(policy=policy)
    c = await client_for(gateway, client="127.0.0.1")
    replies = await c.message(make_message(), "alice@example.gov", ["carol@example.org"])
    assert replies[-1].fields == ["451 4.7.1 Try at night"]


@pytest.mark.parametrize("protocol", [POSTFIX_PROTOCOL, Protocol(0x1FFFFF & ~Protocol.HDR_LEADSPC)],
                         ids=["leading-space", "no-leading-space"])
async def test_quarantine_stores_the_exact_message_and_discards(start_milter, client_for, protocol):
    gateway = await start_milter()
    c = await client_for(gateway, protocol=protocol, client="198.51.100.7")
    raw = MALFORMED.replace(b"Subject: parts\r\n", b"Subject: parts\r\n  folded  \r\n\tagain\r\nX-Empty:\r\n")
    replies = await c.message(raw, "mallory@example.org", ["bob@example.gov", "dave@example.gov"])
    assert [r.command for r in replies] == [codec.SMFIR_DISCARD]
    [item] = await gateway.store.list()
    held = await gateway.store.get(item.id)
    assert held.raw == raw                               # rebuilt byte for byte from headers + body
    assert (held.mail_from, held.rcpt_tos, held.client_address, held.helo) == (
        "mallory@example.org", ("bob@example.gov", "dave@example.gov"), "198.51.100.7", "client.test")
    assert held.direction == "inbound" and held.rule == "inbound/malformed"
    assert held.kinds == ("malformed.missing_final_boundary",)


async def test_postfix_hold_mode_quarantines_in_the_mta(start_milter, client_for):
    gateway = await start_milter(milter={"quarantine_mode": "postfix-hold"})
    c = await client_for(gateway)
    replies = await c.message(MALFORMED, "mallory@example.org", ["bob@example.gov"])
    assert [r.command for r in replies][-2:] == [codec.SMFIR_QUARANTINE, codec.SMFIR_CONTINUE]
    assert "rule inbound/malformed: malformed.missing_final_boundary" in replies[-2].fields[0]
    assert "X-Gateway-Verdict: quarantine; rule=inbound/malformed" in apply_edits(MALFORMED, replies).decode()
    assert await gateway.store.list() == []


async def test_quarantine_write_failure_tempfails(start_milter, client_for, monkeypatch):
    gateway = await start_milter()

    async def broken(item):
        raise StoreError("disk full")

    monkeypatch.setattr(gateway.store, "hold", broken)      # the one failure injected: a store that cannot write
    c = await client_for(gateway)
    replies = await c.message(MALFORMED, "mallory@example.org", ["bob@example.gov"])
    assert [r.fields for r in replies] == [["451 4.3.0 Temporary local problem, please try again later"]]


async def test_oversize_message_is_refused_at_the_body_and_the_session_goes_on(start_milter, client_for):
    gateway = await start_milter(milter={"max_message_size": 5000})
    c = await client_for(gateway)
    replies = await c.message(make_message(body="y" * 20000), "mallory@example.org", ["bob@example.gov"], chunk=4096)
    assert replies[0].fields == ["552 5.3.4 Message too big for system"]
    await c.send(codec.Abort())
    replies = await c.message(MALFORMED, "mallory@example.org", ["bob@example.gov"])
    assert [r.command for r in replies] == [codec.SMFIR_DISCARD]


async def test_abort_forgets_the_transaction(start_milter, client_for):
    gateway = await start_milter()
    c = await client_for(gateway)
    await c.send(codec.MailFrom("first@example.org"))
    assert (await c.read()).command == codec.SMFIR_CONTINUE
    await c.send(codec.RcptTo("first-rcpt@example.gov"))
    assert (await c.read()).command == codec.SMFIR_CONTINUE
    await c.send(codec.Abort())
    await c.message(MALFORMED, "second@example.org", ["second-rcpt@example.gov"])
    [item] = await gateway.store.list()
    assert (item.mail_from, item.rcpt_tos) == ("second@example.org", ("second-rcpt@example.gov",))


async def test_protocol_errors_close_the_connection_and_the_server_goes_on(start_milter, client_for):
    gateway = await start_milter()
    for bad in (struct.pack(">I", codec.MAX_PACKET + 1), struct.pack(">I", 0), struct.pack(">I", 2) + b"Zx",
                struct.pack(">I", 5) + b"H" + b"abcd"):
        c = await MilterClient.connect(gateway.milter.port)
        await c.negotiate()
        await c.write(bad)
        assert await c.read() is None                          # closed, no reply, no crash
        c.writer.close()
    c = await client_for(gateway)
    assert [r.command for r in await c.message(MALFORMED, "m@example.org", ["b@example.gov"])] == [codec.SMFIR_DISCARD]


async def test_progress_is_sent_while_scanning(start_milter, client_for, monkeypatch):
    gateway = await start_milter(milter={"progress_interval": 0.05})
    inspect = gateway.pipeline.inspect

    async def slow(*args, **kwargs):          # a detector that takes a while (e.g. a busy clamd)
        await asyncio.sleep(0.3)
        return await inspect(*args, **kwargs)

    monkeypatch.setattr(gateway.pipeline, "inspect", slow)
    c = await client_for(gateway, client="127.0.0.1")
    replies = await c.message(make_message(), "alice@example.gov", ["carol@example.org"])
    commands = [r.command for r in replies]
    assert commands.count(codec.SMFIR_PROGRESS) >= 2 and commands[-1] == codec.SMFIR_CONTINUE


async def test_unix_socket_listener(start_milter, tmp_path):
    path = tmp_path / "milter.sock"
    gateway = await start_milter(milter={"listen": f"unix:{path}", "socket_mode": "0600"})
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    c = await MilterClient.connect_unix(str(path))
    await c.negotiate()
    await c.session()
    assert [r.command for r in await c.message(MALFORMED, "m@example.org", ["b@example.gov"])] == [codec.SMFIR_DISCARD]
    await c.close()
    assert len(await gateway.store.list()) == 1


async def test_connection_limit(start_milter):
    gateway = await start_milter(milter={"max_connections": 1})
    first = await MilterClient.connect(gateway.milter.port)
    await first.negotiate()
    second = await MilterClient.connect(gateway.milter.port)
    await second.write(codec.encode(codec.OptNeg(6, codec.Actions(0x1FF), POSTFIX_PROTOCOL)))
    try:
        assert await second.read() is None                     # refused: the MTA applies its default (tempfail)
    except ConnectionResetError:
        pass
    second.writer.close()
    await first.close()


async def test_run_starts_the_front_ends_the_settings_enable(tmp_path, sink):
    from gateway import config
    from tests.support.peers import RawClient

    milter_port = free_port()
    both = make_settings(tmp_path, sink.port, milter={"enabled": True, "listen": f"127.0.0.1:{milter_port}"})
    gateway = await Gateway.create(both)
    await gateway.start()
    try:
        smtp = await RawClient.connect(config.split_host_port(both.smtp.listen)[1])
        await smtp.close()
        c = await MilterClient.connect(milter_port)
        assert (await c.negotiate()).fields[0] == 6
        await c.close()
    finally:
        await gateway.drain(deadline=2)
        await gateway.close()

    only_milter = make_settings(tmp_path, sink.port, smtp={"enabled": False},
                                milter={"enabled": True, "listen": f"inet:{free_port()}@127.0.0.1"})
    gateway = await Gateway.create(only_milter)
    await gateway.start()
    try:
        assert gateway.servers == [] and gateway.milter is not None
        with pytest.raises(OSError):
            await RawClient.connect(config.split_host_port(only_milter.smtp.listen)[1])
    finally:
        await gateway.close()


@pytest.mark.parametrize(("section", "error"), [
    ({"milter": {"listen": "unix:relative.sock"}}, "[milter] listen"),
    ({"milter": {"listen": "nowhere"}}, "[milter] listen"),
    ({"milter": {"quarantine_mode": "bounce"}}, "[milter] quarantine_mode"),
    ({"milter": {"socket_mode": "rw"}}, "[milter] socket_mode"),
    ({"smtp": {"enabled": False}}, "nothing to run"),
])
def test_bad_milter_settings_are_named(section, error):
    from gateway import config

    with pytest.raises(config.ConfigError, match=error.replace("[", r"\[").replace("]", r"\]")):
        config.from_dict(section, source="gw.toml")


def test_milter_listen_forms():
    from gateway.config import milter_address

    assert milter_address("inet:127.0.0.1:8891") == ("127.0.0.1", 8891)
    assert milter_address("inet:8891@127.0.0.1") == ("127.0.0.1", 8891)
    assert milter_address("inet6:[::1]:8891") == ("::1", 8891)
    assert milter_address("127.0.0.1:8891") == ("127.0.0.1", 8891)
    assert milter_address("unix:/run/gateway/milter.sock") == "/run/gateway/milter.sock"
    assert milter_address("/run/gateway/milter.sock") == "/run/gateway/milter.sock"


async def test_idle_mta_connection_is_closed_after_the_timeout(start_milter):
    gateway = await start_milter(milter={"timeout": 0.2})
    c = await MilterClient.connect(gateway.milter.port)
    await c.negotiate()
    assert await c.read(timeout=5) is None                     # closed by us, not by the test's timeout
    assert gateway.milter.active == 0


async def test_quit_nc_starts_a_new_smtp_session_on_the_same_connection(start_milter, client_for):
    gateway = await start_milter()
    c = await client_for(gateway, client="198.51.100.1")
    await c.send(codec.QuitNewConnection())
    # The next SMTP session: connect info unknown, the address only in Postfix's {client_addr} macro.
    await c.send(codec.Macro(codec.SMFIC_CONNECT, {"{client_addr}": "198.51.100.2"}),
                 codec.Connect("unknown", "U"), codec.Helo("second.test"))
    await c.message(MALFORMED, "mallory@example.org", ["bob@example.gov"])
    [item] = await gateway.store.list()
    assert (item.client_address, item.helo) == ("198.51.100.2", "second.test")


async def test_postfix_hold_mode_without_the_quarantine_action_tempfails(start_milter):
    gateway = await start_milter(milter={"quarantine_mode": "postfix-hold"})
    c = await MilterClient.connect(gateway.milter.port)
    await c.negotiate(actions=codec.Actions.ADDHDRS | codec.Actions.CHGHDRS)       # an MTA without SMFIF_QUARANTINE
    await c.session()
    replies = await c.message(MALFORMED, "mallory@example.org", ["bob@example.gov"])
    assert replies[-1].fields == ["451 4.3.0 Temporary local problem, please try again later"]
    await c.close()


async def test_message_without_recipients_is_deferred(start_milter, client_for):
    gateway = await start_milter()
    c = await client_for(gateway)
    await c.send(codec.MailFrom("mallory@example.org"))
    assert (await c.read()).command == codec.SMFIR_CONTINUE
    await c.send(codec.EndOfHeaders(), codec.EndOfBody())
    assert [r.fields for r in await c.until_final()] == [["451 4.3.0 Temporary local problem, please try again later"]]
