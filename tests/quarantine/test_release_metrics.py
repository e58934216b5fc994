"""A release shares the received mail's log line and metrics, under its own label: the released
message is not counted as a second received one."""

from __future__ import annotations

import logging

from gateway import observability
from gateway.quarantine import User
from tests.smtp.test_data_reader_workers_metrics import _sample
from tests.support.peers import send

ADMIN = User("ada", "admin")
MALFORMED = (b"From: alice@example.gov\r\nSubject: r\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; "
             b"boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n")


async def test_a_release_is_logged_and_counted_as_a_release(gw, sink, caplog):
    code, _, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], MALFORMED)
    assert code == 250 and sink.messages == []
    [item] = await gw.store.list()
    before = observability.render({})
    caplog.set_level(logging.INFO, logger="gateway.message")
    outcome = await gw.gateway.release_service().release(item.id, ADMIN, "a harmless structure error")
    assert outcome.status == "released", outcome.message
    assert len(await sink.wait_for(1)) == 1
    after = observability.render({})

    def delta(name: str, **labels: str) -> float:
        return (_sample(after, name, **labels) or 0.0) - (_sample(before, name, **labels) or 0.0)

    assert delta("gateway_messages_total", front="release", direction="outbound", verdict="deliver",
                 rule="outbound/malformed") == 1
    assert delta("gateway_messages_total", front="smtp", direction="outbound", verdict="quarantine",
                 rule="outbound/malformed") == 0
    assert delta("gateway_data_replies_total", front="release", code="2xx") == 1
    assert delta("gateway_message_bytes_count") == 0                 # counted once, when it arrived
    [line] = [r.fields for r in caplog.records if r.name == "gateway.message" and r.fields["front"] == "release"]
    assert line["id"] == item.id and line["reply"] == "250"
    assert line["rcpt_tos"] == ["bob@example.org"] and line["rule"] == "outbound/malformed"
