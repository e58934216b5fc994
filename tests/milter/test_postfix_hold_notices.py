"""`[milter] quarantine_mode = "postfix-hold"`: staff and ITSD are told as in the store mode, but the
notice says the message is in the mail server's hold queue, names Postfix's queue id, and carries no
review link or release-request link (the review app cannot see these messages)."""

from __future__ import annotations

import email
import email.policy

import pytest

from gateway.app import Gateway
from gateway.milter import codec
from gateway.notify.notifier import Notifier
from tests.notify.test_notices_end_to_end import malformed
from tests.support.milter_client import MilterClient
from tests.support.peers import free_port
from tests.support.settings import make_settings


@pytest.fixture
async def hold_mode(tmp_path, sink):
    milter = {"enabled": True, "listen": f"inet:127.0.0.1:{free_port()}", "quarantine_mode": "postfix-hold"}
    notify = {"itsd": "itsd@example.gov", "itsd_immediate": ["malformed"],
              "base_url": "https://review.example.gov"}
    gateway = await Gateway.create(make_settings(tmp_path, sink.port, milter=milter, notify=notify))
    await gateway.start_milter()
    client = await MilterClient.connect(gateway.milter.port)
    await client.negotiate()
    await client.session(client="127.0.0.1")
    yield gateway, client
    await client.close()
    await gateway.close()


def _texts(received) -> tuple[str, str]:
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    return message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()


async def test_postfix_hold_tells_the_sender_and_itsd_with_the_queue_id_and_no_links(hold_mode, sink):
    gateway, client = hold_mode
    replies = await client.message(malformed(), "alice@example.gov", ["bob@example.org"], queue_id="4XyZ7Q1abc")
    assert [r.command for r in replies][-2:] == [codec.SMFIR_QUARANTINE, codec.SMFIR_CONTINUE]
    assert await gateway.store.list() == []                      # held by Postfix, not by us
    rows = await gateway.store.outbox()
    assert sorted((r.recipient, r.template, r.role) for r in rows) == [
        ("alice@example.gov", "held", "sender"), ("itsd@example.gov", "itsd", "itsd")]

    notifier = Notifier(gateway.settings, gateway.store)
    notifier.secret = await gateway.store.secret("notify-link-key")
    assert await notifier.run_once() == 2
    by_rcpt = {m.rcpt_tos[0]: m for m in await sink.wait_for(2)}
    for address in ("alice@example.gov", "itsd@example.gov"):
        text, html = _texts(by_rcpt[address])
        for part in (text, html):
            assert "4XyZ7Q1abc" in part, (address, part)
            assert "hold queue" in part, (address, part)
            assert "https://review.example.gov" not in part and "/request/" not in part, (address, part)
    text, _ = _texts(by_rcpt["alice@example.gov"])
    assert "closing boundary" in text                            # why, as in the store mode
    assert "Quarterly report" in text


@pytest.mark.parametrize("template", ["digest", "itsd"])
def test_digests_name_the_hold_queue_for_such_items_and_link_the_others(template):
    from gateway.notify.compose import environment
    from gateway.notify.notifier import SHIPPED_TEMPLATES

    env = environment(SHIPPED_TEMPLATES)
    base = {"date": "2026-12-07 10:00 UTC", "received": "2026-12-07 10:00 UTC", "subject": "Figures",
            "notice": "Held by policy.", "rule": "outbound/pii", "kinds": ["pii.ssn"], "mail_from": "alice@example.gov",
            "rcpt_tos": ["bob@example.org"], "request_url": ""}
    items = [{**base, "id": "01a2gatewayid", "url": "https://review.example.gov/held/01a2gatewayid",
              "request_url": "https://review.example.gov/request/TOKEN"},
             {**base, "id": "01a2other", "hold_queue": True, "queue_id": "4XyZ7Q1abc", "url": ""}]
    for kind in ("txt", "html"):
        out = env.get_template(f"{template}.{kind}.j2").render(items=items, policy_title="policy")
        assert "4XyZ7Q1abc" in out and "hold queue" in out
        assert "https://review.example.gov/" in out                 # the item in our quarantine keeps its link
        assert out.count("https://review.example.gov/") == 1
