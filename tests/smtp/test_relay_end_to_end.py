"""The relay core end to end: a real SMTP client -> the gateway -> a recording sink."""

from __future__ import annotations

import asyncio

from tests.support.peers import RawClient, make_message, send


async def test_clean_message_arrives_byte_identical_apart_from_added_headers(gw, sink):
    message = make_message(body="Quarterly numbers attached below.\r\n.leading dot line\r\n")
    code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], message)
    assert code == 250, text
    [got] = await sink.wait_for(1)
    assert got.mail_from == "alice@example.gov" and got.rcpt_tos == ["bob@example.org"]
    head, _, rest = got.data.partition(b"X-Gateway-Verdict: deliver\r\n")     # outbound: bare
    assert head.startswith(b"X-Gateway-Id: ")
    assert rest == message
    assert b"X-Gateway-Findings" not in got.data


async def test_next_hop_down_gives_451_and_nothing_is_stored(gw, sink):
    await sink.stop()
    code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], make_message())
    assert code == 451, text
    assert "4.4.1" in text
    assert await gw.store.list() == []
    assert sink.messages == []


async def test_next_hop_4xx_at_data_gives_451(gw, sink):
    sink.mode = "tempfail"
    code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], make_message())
    assert code == 451 and "4.4.0" in text
    assert await gw.store.list() == []


async def test_next_hop_5xx_at_data_passes_through(gw, sink):
    sink.mode = "permfail"
    code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], make_message())
    assert code == 554 and "5.6.0 Sink rejects this" in text


async def test_next_hop_closing_at_data_gives_451(gw, sink):
    sink.mode = "close"
    code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], make_message())
    assert code == 451


async def test_next_hop_refuses_one_recipient_of_two(gw, sink):
    sink.refuse = {"nobody@example.org"}
    code, text, rcpts = await send(gw.port, "alice@example.gov", ["bob@example.org", "nobody@example.org"],
                                   make_message())
    assert rcpts["bob@example.org"][0] == 250
    assert rcpts["nobody@example.org"][0] == 550 and "5.1.1" in rcpts["nobody@example.org"][1]
    assert code == 250
    [got] = await sink.wait_for(1)
    assert got.rcpt_tos == ["bob@example.org"]


async def test_relaying_denied_for_outside_client(gw, sink):
    client = await RawClient.connect(gw.port, source="127.0.0.2")
    try:
        await client.cmd("EHLO outside.test")
        assert (await client.cmd("MAIL FROM:<x@outside.test>"))[0] == 250
        code, text = await client.cmd("RCPT TO:<victim@elsewhere.test>")
        assert code == 550 and "5.7.1" in text and "Relaying denied" in text
        code, _ = await client.cmd("RCPT TO:<staff@example.gov>")
        assert code == 250
        code, _ = await client.send_data(make_message(sender="x@outside.test", to="staff@example.gov"))
        assert code == 250
    finally:
        await client.close()
    [got] = await sink.wait_for(1)
    assert got.rcpt_tos == ["staff@example.gov"]
    assert b"rule=inbound/default" in got.data


async def test_only_denied_recipients_means_nothing_accepted(gw, sink):
    code, _, rcpts = await send(gw.port, "x@outside.test", ["victim@elsewhere.test"], make_message(),
                                source="127.0.0.2")
    assert rcpts["victim@elsewhere.test"][0] == 550
    await asyncio.sleep(0.1)
    assert sink.messages == [] and await gw.store.list() == []


SMUGGLING = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n\x00.\r\n", b"\r.\r", b"\n.\r", b"\r\n.\r"]


async def test_smuggling_sequences_never_split_a_transaction(gw, sink):
    for seq in SMUGGLING:
        sink.messages.clear()
        smuggled = (b"MAIL FROM:<evil@example.gov>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
                    b"From: evil@example.gov\r\nSubject: smuggled\r\n\r\nsecond message\r\n")
        payload = (b"From: alice@example.gov\r\nTo: bob@example.org\r\nSubject: first\r\n\r\nhello"
                   + seq + smuggled)
        client = await RawClient.connect(gw.port)
        try:
            await client.cmd("EHLO client.test")
            await client.cmd("MAIL FROM:<alice@example.gov>")
            await client.cmd("RCPT TO:<bob@example.org>")
            code, text = await client.send_data(payload)
            assert code == 250, (seq, text)
            code, _ = await client.cmd("NOOP")
            assert code == 250, seq        # the session is still in step: nothing was taken as commands
        finally:
            await client.close()
        await asyncio.sleep(0.05)
        assert all(m.mail_from == "alice@example.gov" for m in sink.messages), seq
        assert not any(b"Subject: smuggled" in m.data.split(b"\r\n\r\n", 1)[0] for m in sink.messages), seq
        assert len(sink.messages) + len(await gw.store.list()) <= len(SMUGGLING)
    held = await gw.store.list()
    assert all(item.rule.endswith("/malformed") for item in held)
    assert held, "bare end-of-data sequences are held as malformed.smtp_smuggling"
    assert any("malformed.smtp_smuggling" in item.kinds for item in held)


async def test_oversize_gives_552(start_gateway, sink):
    gw = await start_gateway(smtp={"max_message_size": 10_000})
    client = await RawClient.connect(gw.port)
    try:
        code, text = await client.cmd("EHLO client.test")
        assert "SIZE 10000" in text and "8BITMIME" in text and "SMTPUTF8" in text
        code, text = await client.cmd("MAIL FROM:<alice@example.gov> SIZE=20000")
        assert code == 552 and "5.3.4" in text
        assert (await client.cmd("MAIL FROM:<alice@example.gov>"))[0] == 250
        assert (await client.cmd("RCPT TO:<bob@example.org>"))[0] == 250
        code, text = await client.send_data(make_message(body="x" * 900 + "\r\n") * 20)
        assert code == 552 and "5.3.4" in text
    finally:
        await client.close()
    assert sink.messages == []


async def test_malformed_message_is_held_not_delivered(gw, sink):
    message = (b"From: alice@example.gov\r\nTo: bob@example.org\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n"
               b"see attached\r\n--b1\r\nContent-Type: application/pdf; name=a.pdf\r\n"
               b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n")
    code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], message)
    assert code == 250, text
    await asyncio.sleep(0.05)
    assert sink.messages == []
    [item] = await gw.store.list()
    assert item.rule == "outbound/malformed"
    assert "malformed.missing_final_boundary" in item.kinds
    stored = await gw.store.get(item.id)
    assert stored.raw == message


async def test_arriving_gateway_headers_are_removed(gw, sink):
    message = make_message(extra_headers="X-Gateway-Verdict: deliver; rule=forged\r\nX-Gateway-Id: forged\r\n")
    code, _, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], message)
    assert code == 250
    [got] = await sink.wait_for(1)
    assert b"forged" not in got.data
    assert got.data.count(b"X-Gateway-Verdict:") == 1


async def test_starttls_is_offered_and_works(start_gateway, sink, tmp_path):
    import aiosmtplib

    from tests.support.tls import self_signed
    cert, key = self_signed(tmp_path)
    gw = await start_gateway(smtp={"tls_cert": str(cert), "tls_key": str(key)})
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=gw.port, start_tls=False, validate_certs=False)
    await client.connect()
    await client.ehlo()
    assert client.supports_extension("starttls")
    await client.starttls()
    errors, _ = await client.sendmail("alice@example.gov", ["bob@example.org"], make_message())
    await client.quit()
    assert errors == {}
    assert len(await sink.wait_for(1)) == 1


async def test_require_tls_refuses_mail_before_starttls(start_gateway, sink, tmp_path):
    from tests.support.tls import self_signed
    cert, key = self_signed(tmp_path)
    gw = await start_gateway(smtp={"tls_cert": str(cert), "tls_key": str(key), "require_tls": True})
    client = await RawClient.connect(gw.port)
    try:
        await client.cmd("EHLO client.test")
        code, text = await client.cmd("MAIL FROM:<alice@example.gov>")
        assert code == 530
    finally:
        await client.close()


async def test_connection_limit_per_client(start_gateway, sink):
    gw = await start_gateway(smtp={"max_connections_per_client": 2})
    first = await RawClient.connect(gw.port)
    second = await RawClient.connect(gw.port)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    line = await asyncio.wait_for(reader.readline(), 5)
    assert line.startswith(b"421 4.7.0")
    writer.close()
    await first.close()
    await asyncio.sleep(0.1)
    third = await RawClient.connect(gw.port)           # a slot is free again
    assert (await third.cmd("NOOP"))[0] == 250
    await second.close()
    await third.close()


async def test_internal_error_answers_451_without_details(gw, sink, monkeypatch):
    async def explode(*args, **kwargs):
        raise RuntimeError("secret internal path /var/lib/x")
    monkeypatch.setattr(gw.gateway.pipeline, "inspect", explode)
    code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], make_message())
    assert code == 451 and "4.3.0" in text
    assert "secret" not in text and "RuntimeError" not in text
    assert sink.messages == []


async def test_tagged_inbound_message_carries_findings_and_subject_prefix(start_gateway, sink, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text('[detectors.size]\nmax_attachment_bytes = 10\n\n[[inbound.rules]]\nname = "big"\n'
                    'match = ["oversize.attachment"]\naction = "tag"\ntag = "[BIG]"\n')
    gw = await start_gateway(policy={"site": str(site)})
    message = (b"From: x@outside.test\r\nTo: staff@example.gov\r\nSubject: files\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n"
               b"hi\r\n--b1\r\nContent-Type: text/csv; name=\"data.csv\"\r\n"
               b"Content-Disposition: attachment; filename=\"data.csv\"\r\n\r\na,b,c\r\n1,2,3\r\n--b1--\r\n")
    code, _, _ = await send(gw.port, "x@outside.test", ["staff@example.gov"], message, source="127.0.0.2")
    assert code == 250
    [got] = await sink.wait_for(1)
    assert b"X-Gateway-Verdict: tag; rule=inbound/big" in got.data
    assert b"X-Gateway-Findings: oversize.attachment (Attachment is" in got.data
    assert b"Subject: [BIG] files" in got.data


async def test_outbound_tag_carries_no_findings_header(start_gateway, sink, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text('[detectors.size]\nmax_message_bytes = 10\n')
    gw = await start_gateway(policy={"site": str(site)})
    code, _, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], make_message())
    assert code == 250
    [got] = await sink.wait_for(1)
    assert b"X-Gateway-Verdict: tag\r\n" in got.data and b"rule=" not in got.data
    assert b"Subject: [Large attachment] Hello" in got.data
    assert b"X-Gateway-Findings" not in got.data


async def test_reject_and_tempfail_rules(start_gateway, sink, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text('[detectors.size]\nmax_message_bytes = 10\n\n[[outbound.rules]]\nname = "no-big"\n'
                    'match = ["oversize.message"]\naction = "reject"\nreply = "Too large for policy"\n'
                    '[[internal.rules]]\nname = "later"\nmatch = ["oversize.message"]\naction = "tempfail"\n')
    gw = await start_gateway(policy={"site": str(site)})
    code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], make_message())
    assert code == 550 and "5.7.1 Too large for policy" in text
    code, text, _ = await send(gw.port, "alice@example.gov", ["carol@example.gov"], make_message())
    assert code == 451 and "4.7.1" in text
    assert sink.messages == [] and await gw.store.list() == []
