"""What our headers tell the outside: mail with any recipient outside the department carries only
X-Gateway-Id, the bare action in X-Gateway-Verdict and X-Gateway-Scanned, from the SMTP and the
milter front end alike (Postfix's hold queue and a release included); inbound and internal mail
keep the rule and the findings, and the log keeps everything."""

from __future__ import annotations

import email
import email.policy
import logging

from gateway.milter import codec
from tests.milter.test_session import attachment_message, client_for, start_milter  # noqa: F401
from tests.notify.test_notices_end_to_end import ADMIN, hold, malformed
from tests.support.milter_client import apply_edits
from tests.support.peers import make_message, send

BIG = '[detectors.size]\nmax_attachment_bytes = 100\n'
INBOUND_TAG = ('\n[[inbound.rules]]\nname = "big-in"\nmatch = ["oversize.attachment"]\naction = "tag"\n'
               'tag = "[Large attachment]"\n')


def site(tmp_path, text: str) -> dict:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return {"site": str(path)}


def ours(raw: bytes) -> dict[str, list[str]]:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    return {name: [str(v) for v in message.get_all(name, [])]
            for name in ("X-Gateway-Id", "X-Gateway-Verdict", "X-Gateway-Findings", "X-Gateway-Scanned",
                         "Authentication-Results")}


def assert_bare(raw: bytes, action: str, mail_id: str | None = None) -> dict[str, list[str]]:
    got = ours(raw)
    assert got["X-Gateway-Verdict"] == [action], got
    assert got["X-Gateway-Findings"] == [] and got["Authentication-Results"] == [], got
    assert len(got["X-Gateway-Id"]) == 1 and (mail_id is None or got["X-Gateway-Id"] == [mail_id])
    assert b"rule=" not in raw and b"outbound/" not in raw
    return got


async def test_smtp_outbound_delivered_and_tagged_mail_carries_only_the_bare_verdict(start_gateway, sink, tmp_path,
                                                                                      caplog):
    gw = await start_gateway(policy=site(tmp_path, BIG))
    caplog.set_level(logging.INFO)
    code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], make_message())
    assert code == 250, text
    code, text, _ = await send(gw.port, "alice@example.gov", ["carol@example.gov", "bob@example.org"],
                               attachment_message(900))
    assert code == 250, text
    delivered, tagged = await sink.wait_for(2)
    assert_bare(delivered.data, "deliver", delivered_id := ours(delivered.data)["X-Gateway-Id"][0])
    got = assert_bare(tagged.data, "tag")
    assert got["X-Gateway-Scanned"] and got["X-Gateway-Scanned"][0].startswith("ClamAV ")
    assert b"\r\nSubject: [Large attachment] report\r\n" in tagged.data             # the policy's tag stays
    logged = {r.fields["id"]: r.fields for r in caplog.records if r.name == "gateway.message"}   # the log keeps all
    assert logged[delivered_id]["rule"] == "outbound/default"
    assert {f["rule"] for f in logged.values()} == {"outbound/default", "outbound/oversize-attachment"}


async def test_smtp_inbound_and_internal_mail_keep_the_rule_and_the_findings(start_gateway, sink, tmp_path):
    gw = await start_gateway(policy=site(tmp_path, BIG + INBOUND_TAG))
    code, text, _ = await send(gw.port, "partner@outside.test", ["carol@example.gov"],
                               attachment_message(900).replace(b"alice@example.gov", b"partner@outside.test"))
    assert code == 250, text
    code, text, _ = await send(gw.port, "alice@example.gov", ["carol@example.gov"],
                               make_message(to="carol@example.gov"))
    assert code == 250, text
    inbound, internal = await sink.wait_for(2)
    got = ours(inbound.data)
    assert got["X-Gateway-Verdict"] == ["tag; rule=inbound/big-in"]
    assert got["X-Gateway-Findings"] and "oversize.attachment" in got["X-Gateway-Findings"][0]
    assert ours(internal.data)["X-Gateway-Verdict"] == ["deliver; rule=internal/default"]


async def test_a_released_outbound_message_carries_the_bare_verdict(start_gateway, sink):
    gw = await start_gateway()
    item_id = await hold(gw, malformed())
    assert (await gw.gateway.release_service().release(item_id, ADMIN, "business need")).status == "released"
    [released] = sink.messages
    assert released.rcpt_tos == ["bob@example.org"]
    assert_bare(released.data, "deliver", item_id)


async def test_milter_outbound_gets_the_bare_verdict_inbound_keeps_the_rule(start_milter, client_for,  # noqa: F811
                                                                            tmp_path):
    gateway = await start_milter(policy=site(tmp_path, BIG + INBOUND_TAG))
    c = await client_for(gateway, client="127.0.0.1")
    raw = make_message(subject="Quarterly figures")
    delivered = apply_edits(raw, await c.message(raw, "alice@example.gov", ["carol@example.org"]))
    assert_bare(delivered, "deliver")
    raw = attachment_message()
    tagged = apply_edits(raw, await c.message(raw, "alice@example.gov", ["carol@example.org"]))
    got = assert_bare(tagged, "tag")
    assert got["X-Gateway-Scanned"][0].startswith("ClamAV ")
    assert b"\r\nSubject: [Large attachment] report\r\n" in tagged

    c = await client_for(gateway)
    raw = attachment_message().replace(b"alice@example.gov", b"partner@outside.test")
    inbound = apply_edits(raw, await c.message(raw, "partner@outside.test", ["bob@example.gov"]))
    got = ours(inbound)
    assert got["X-Gateway-Verdict"] == ["tag; rule=inbound/big-in"] and got["X-Gateway-Findings"]


async def test_postfix_hold_queue_outbound_gets_the_bare_verdict_and_the_rule_only_in_the_reason(
        start_milter, client_for):  # noqa: F811
    gateway = await start_milter(milter={"quarantine_mode": "postfix-hold"})
    c = await client_for(gateway, client="127.0.0.1")
    raw = malformed()
    replies = await c.message(raw, "alice@example.gov", ["bob@example.org"])
    assert [r.command for r in replies][-2:] == [codec.SMFIR_QUARANTINE, codec.SMFIR_CONTINUE]
    assert "rule outbound/malformed" in replies[-2].fields[0]            # Postfix's queue and log keep it
    assert_bare(apply_edits(raw, replies), "quarantine")
