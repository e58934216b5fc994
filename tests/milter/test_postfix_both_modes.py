"""Integration with a real Postfix (Debian's package) from a throw-away configuration directory,
using the shipped deploy/postfix snippets with the test's ports:

- milter mode: client -> Postfix smtpd (smtpd_milters) -> our milter -> Postfix -> the sink;
- content_filter mode: client -> Postfix -> the gateway's SMTP front end -> Postfix's reinjection
  listener -> the sink.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from gateway.app import Gateway
from gateway.relay import deliver
from tests.support.files import eicar
from tests.support.peers import Sink, free_port, make_message, send
from tests.support.postfix import Postfix, main_cf, postfix_available, snippet
from tests.support.settings import make_settings

pytestmark = pytest.mark.skipif(not postfix_available(), reason="needs /usr/sbin/postfix and root (scripts/setup test)")

EICAR = eicar()          # assembled at test time: no file in the repository contains it
MALFORMED = (b"From: mallory@example.org\r\nTo: bob@example.gov\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n"
             b"hello\r\n")                                   # no closing boundary: malformed.missing_final_boundary


def eicar_message() -> bytes:
    return (b"From: mallory@example.org\r\nTo: bob@example.gov\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
            b"Please see the attached invoice.\r\n--B\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename=\"invoice.com\"\r\n\r\n" + EICAR + b"\r\n--B--\r\n")


@pytest.fixture(scope="module")
async def sink():
    """One sink for the module (the Postfix instances relay to its port); emptied before each test."""
    s = await Sink().start()
    yield s
    await s.stop()


@dataclass
class Instance:
    postfix: Postfix
    ports: dict[int, int]          # the shipped snippets' default port -> this instance's


async def _instance(sink: Sink, mode: str):
    if mode == "milter":
        ports = {8891: free_port(), 10026: free_port()}
        postfix = Postfix(sink.port, main=main_cf(snippet("main.cf.milter", ports)),
                          services=snippet("master.cf.milter", ports))
    else:
        ports = {10025: free_port(), 10026: free_port()}
        # No cached connections to the gateway: each test starts a new one on the same port.
        main = {**main_cf(snippet("main.cf.content-filter", ports)), "smtp_connection_cache_on_demand": "no"}
        postfix = Postfix(sink.port, main=main,
                          services=snippet("master.cf.content-filter", ports))
    try:
        await postfix.start()
    except BaseException:
        await postfix.stop()
        raise
    return Instance(postfix, ports)


# One Postfix per mode for the module (starting one costs ~3 s); each test runs its own gateway on the
# ports that instance talks to, and empties Postfix's queues afterwards.
@pytest.fixture(scope="module")
async def milter_postfix(sink):
    instance = await _instance(sink, "milter")
    yield instance
    await instance.postfix.stop()


@pytest.fixture(scope="module")
async def filter_postfix(sink):
    instance = await _instance(sink, "content-filter")
    yield instance
    await instance.postfix.stop()


class Stack:
    """Starts a gateway for one of the module's Postfix instances; stops it and empties Postfix's queues."""

    def __init__(self, tmp_path, sink: Sink, instance: Instance, mode: str) -> None:
        self.tmp_path, self.sink, self.instance, self.mode = tmp_path, sink, instance, mode
        self.gateways: list[Gateway] = []

    async def __call__(self, **sections: dict) -> tuple[Gateway, Postfix]:
        self.sink.messages.clear()
        ports = self.instance.ports
        relay = {"next_hop": f"127.0.0.1:{ports[10026]}"}
        if self.mode == "milter":
            milter = {"enabled": True, "listen": f"inet:127.0.0.1:{ports[8891]}", **sections.pop("milter", {})}
            settings = make_settings(self.tmp_path, self.sink.port, milter=milter, smtp={"enabled": False},
                                     relay=relay, **sections)
        else:
            settings = make_settings(self.tmp_path, self.sink.port, smtp={"listen": f"127.0.0.1:{ports[10025]}"},
                                     relay=relay, **sections)
        gateway = await Gateway.create(settings)
        self.gateways.append(gateway)
        await gateway.start()
        self.instance.postfix.mark_log()
        return gateway, self.instance.postfix

    async def close(self) -> None:
        for gateway in self.gateways:
            await gateway.close()
        await asyncio.to_thread(self.instance.postfix.clear_queues)


@pytest.fixture
async def milter_stack(tmp_path, sink, milter_postfix):
    stack = Stack(tmp_path, sink, milter_postfix, "milter")
    yield stack
    await stack.close()


@pytest.fixture
async def filter_stack(tmp_path, sink, filter_postfix):
    stack = Stack(tmp_path, sink, filter_postfix, "content-filter")
    yield stack
    await stack.close()


async def settle(postfix: Postfix, timeout: float = 10.0) -> None:
    """Until Postfix's incoming, active and deferred queues are empty (bounded)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while any(postfix.queue_ids(q) for q in ("incoming", "active", "deferred", "maildrop")):
        if loop.time() > end:
            raise AssertionError(f"Postfix queue did not empty:\n{postfix.new_log()[-3000:]}")
        await asyncio.to_thread(postfix.flush)
        await asyncio.sleep(0.2)


def site(tmp_path, text: str) -> dict:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return {"site": str(path)}


async def test_milter_clean_message_reaches_the_sink_with_our_headers(milter_stack, sink):
    gateway, postfix = await milter_stack()
    code, text, _ = await send(postfix.port, "mallory@example.org", ["bob@example.gov"],
                               make_message(sender="mallory@example.org", to="bob@example.gov", subject="Lunch"))
    assert code == 250, text
    [received] = await sink.wait_for(1, timeout=15)
    assert (received.mail_from, received.rcpt_tos) == ("mallory@example.org", ["bob@example.gov"])
    head = received.data.split(b"\r\n\r\n")[0].decode()
    assert "X-Gateway-Verdict: deliver; rule=inbound/default" in head
    assert "X-Gateway-Id: " in head and "Subject: Lunch" in head
    assert "Received: from " in head                       # Postfix's own, untouched
    assert received.data.endswith(b"\r\n\r\nJust a note.\r\n")


async def test_milter_policy_hold_is_in_our_quarantine_and_not_at_the_sink(milter_stack, sink):
    # The chain-letter detector is being built elsewhere; the malformed-structure detector holds now.
    gateway, postfix = await milter_stack()
    code, text, _ = await send(postfix.port, "mallory@example.org", ["bob@example.gov"], MALFORMED)
    assert code == 250, text                              # accepted from the client: it is safe in our store
    await settle(postfix)
    [item] = await gateway.store.list()
    assert (item.rule, item.kinds, item.mail_from) == (
        "inbound/malformed", ("malformed.missing_final_boundary",), "mallory@example.org")
    held = await gateway.store.get(item.id)
    assert b"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n" in held.raw
    assert await postfix.logged("milter triggers DISCARD action")
    assert sink.messages == []

    # Released (the release path's one-shot delivery) to [relay] next_hop, Postfix's milter-free
    # listener from master.cf.milter: it reaches the sink instead of being held a second time.
    delivery = await deliver(gateway.settings.relay, held.mail_from, held.rcpt_tos, held.raw)
    assert delivery.ok, delivery.reply
    [received] = await sink.wait_for(1, timeout=15)
    assert b"hello\r\n" in received.data and received.rcpt_tos == ["bob@example.gov"]
    assert len(await gateway.store.list()) == 1


async def test_milter_eicar_is_not_delivered(milter_stack, sink, tmp_path):
    # The shipped policy and the session's real clamd: the virus is held by us, never at the sink.
    gateway, postfix = await milter_stack()
    code, text, _ = await send(postfix.port, "mallory@example.org", ["bob@example.gov"], eicar_message())
    assert code == 250, text
    await settle(postfix)
    [item] = await gateway.store.list()
    assert item.rule == "inbound/virus"
    [virus] = [f for f in item.findings if f.kind == "virus"]
    assert "invoice.com" in virus.detail
    assert EICAR in (await gateway.store.get(item.id)).raw
    assert sink.messages == []


async def test_milter_reject_reaches_the_smtp_client(milter_stack, sink, tmp_path):
    policy = site(tmp_path, '[detectors.size]\nmax_message_bytes = 10\n\n[[inbound.rules]]\nname = "no-big"\n'
                            'match = ["oversize.message"]\naction = "reject"\n'
                            'reply = "Too large for the department link (policy: discretion with large files)"\n')
    gateway, postfix = await milter_stack(policy=policy)
    code, text, _ = await send(postfix.port, "mallory@example.org", ["bob@example.gov"], make_message())
    assert (code, text) == (550, "550 5.7.1 Too large for the department link (policy: discretion with large files)")
    await settle(postfix)
    assert sink.messages == [] and await gateway.store.list() == []


async def test_milter_tag_changes_the_subject_postfix_delivers(milter_stack, sink, tmp_path):
    gateway, postfix = await milter_stack(policy=site(tmp_path, "[detectors.size]\nmax_attachment_bytes = 10\n"))
    harmless = eicar_message().replace(EICAR, b"quarter,total\r\nQ3,1200\r\n" * 4).replace(b"invoice.com", b"q3.csv")
    code, text, _ = await send(postfix.port, "alice@example.gov", ["carol@example.org"],
                               harmless.replace(b"Subject: invoice", b"Subject: figures"))
    assert code == 250, text
    [received] = await sink.wait_for(1, timeout=15)
    head = received.data.split(b"\r\n\r\n")[0].decode()
    assert "\r\nSubject: [Large attachment] figures\r\n" in head
    assert "X-Gateway-Verdict: tag\r\n" in head and "rule=" not in head


async def test_milter_postfix_hold_mode_uses_postfixs_hold_queue(milter_stack, sink):
    gateway, postfix = await milter_stack(milter={"quarantine_mode": "postfix-hold"})
    code, text, _ = await send(postfix.port, "mallory@example.org", ["bob@example.gov"], MALFORMED)
    assert code == 250, text
    await settle(postfix)
    assert len(postfix.queue_ids("hold")) == 1
    assert await postfix.logged("milter triggers HOLD action")
    assert await gateway.store.list() == []
    assert all(b"Auto-Submitted: auto-generated" in m.data for m in sink.messages)     # notices at most


async def test_milter_postfix_hold_mode_tells_staff_and_itsd_the_hold_queue_id_without_links(milter_stack, sink):
    from gateway.notify.notifier import Notifier

    gateway, postfix = await milter_stack(milter={"quarantine_mode": "postfix-hold"},
                                          notify={"itsd": "itsd@example.gov", "itsd_immediate": ["malformed"],
                                                  "base_url": "https://review.example.gov"})
    code, text, _ = await send(postfix.port, "mallory@example.org", ["bob@example.gov"], MALFORMED)
    assert code == 250, text
    await settle(postfix)
    [queue_id] = postfix.queue_ids("hold")
    notifier = Notifier(gateway.settings, gateway.store)
    notifier.secret = await gateway.store.secret("notify-link-key")
    assert await notifier.run_once() == 2               # through Postfix's reinjection service to the sink
    await settle(postfix)
    import email
    import email.policy

    def text_of(data: bytes) -> str:
        message = email.message_from_bytes(data, policy=email.policy.default)
        return "".join(part.get_content() for part in message.walk() if part.get_content_maintype() == "text")

    notices = {m.rcpt_tos[0]: text_of(m.data) for m in await sink.wait_for(2, timeout=15)}
    assert set(notices) == {"bob@example.gov", "itsd@example.gov"}
    for data in notices.values():
        assert queue_id in data and "hold queue" in data
        assert "review.example.gov" not in data
    assert all(b"Auto-Submitted: auto-generated" in m.data for m in sink.messages)     # only notices arrived
    assert postfix.queue_ids("hold") == [queue_id]


async def test_milter_down_means_postfix_defers(milter_stack, sink):
    gateway, postfix = await milter_stack()
    await gateway.milter.close()                           # the gateway stops: nothing may pass unscanned
    code, text, _ = await send(postfix.port, "mallory@example.org", ["bob@example.gov"], make_message())
    assert (code, text) == (451, "451 4.7.1 Service unavailable - try again later")
    assert await postfix.logged("connect to Milter service inet:127.0.0.1:")
    assert sink.messages == []


async def test_content_filter_clean_message_goes_through_gateway_and_reinjection(filter_stack, sink):
    gateway, postfix = await filter_stack()
    code, text, _ = await send(postfix.port, "mallory@example.org", ["bob@example.gov"],
                               make_message(sender="mallory@example.org", to="bob@example.gov", subject="After queue"))
    assert code == 250, text
    [received] = await sink.wait_for(1, timeout=20)
    head = received.data.split(b"\r\n\r\n")[0].decode()
    assert "X-Gateway-Verdict: deliver; rule=inbound/default" in head
    # Received twice by Postfix (before and after the filter): the message made the whole loop.
    assert head.count("by mta.example.gov (Postfix)") == 2
    assert (received.mail_from, received.rcpt_tos) == ("mallory@example.org", ["bob@example.gov"])


async def test_content_filter_hold_is_in_our_quarantine_and_leaves_postfixs_queue(filter_stack, sink):
    gateway, postfix = await filter_stack()
    code, text, _ = await send(postfix.port, "mallory@example.org", ["bob@example.gov"], MALFORMED)
    assert code == 250, text
    loop = asyncio.get_running_loop()
    end = loop.time() + 15
    while not await gateway.store.list() and loop.time() < end:
        await asyncio.sleep(0.1)
    await settle(postfix)
    [item] = await gateway.store.list()
    assert item.rule == "inbound/malformed"
    # Postfix's XFORWARD told the gateway about the original client, not Postfix itself.
    assert (item.helo, item.client_address) == ("client.test", "127.0.0.1")
    assert sink.messages == []
