"""Security of the SMTP side and the policy: open-relay tricks from outside clients, more smuggling sequences,
header injection through configured tags, replies and notices, and the dependency audit (pip-audit)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys

import pytest

from gateway import policy as policy_module
from gateway.config import SHIPPED_POLICY_DIR
from gateway.policy import PolicyError
from tests.support.peers import RawClient, make_message, send
from tests.support.settings import make_settings

OUTSIDE = "127.0.0.2"          # not in [networks] internal of the test gateway

# (RCPT address, what an outside client must get): relayed outside never; local mail with routing refused.
RELAY_TRICKS = [
    ("user%elsewhere.test@example.gov", 550),          # percent hack
    ("elsewhere.test!user@example.gov", 550),          # bang path
    ('"user@elsewhere.test"@example.gov', 550),        # quoted local part carrying a route
    ('"user%elsewhere.test"@example.gov', 550),
    ("@example.gov:user@elsewhere.test", 550),         # source route through us to outside
    ("user@elsewhere.test.", 5),                       # trailing dot
    ("user@ELSEWHERE.TEST", 550),                      # upper case
    ("user@[192.0.2.1]", 550),                         # IP literals
    ("user@[127.0.0.1]", 550),
    ("user@[IPv6:::1]", 550),
    ("user@example.gov@elsewhere.test", 5),
    ("user@elsewhere.test@example.gov", 5),
    ("user@example.gov.elsewhere.test", 550),          # our domain as a prefix of theirs
    ("user@elsewhere.test%example.gov", 550),
    ("user@elsewhere.test\x00.example.gov", 5),
    ("user@xexample.gov", 550),                        # a suffix match without the dot
]


@pytest.mark.parametrize(("address", "expected"), RELAY_TRICKS)
async def test_open_relay_tricks_from_an_outside_client_are_refused(gw, sink, address, expected):
    client = await RawClient.connect(gw.port, source=OUTSIDE)
    try:
        await client.cmd("EHLO outside.test")
        assert (await client.cmd("MAIL FROM:<x@outside.test>"))[0] == 250
        code, text = await client.cmd(f"RCPT TO:<{address}>")
        assert (code == expected) if expected > 9 else (code // 100 == expected), text
        assert (await client.cmd("DATA"))[0] in (503, 554)        # no recipient: no transaction
    finally:
        await client.close()
    await asyncio.sleep(0.05)
    assert sink.messages == [] and await gw.store.list() == []


async def test_local_recipients_in_any_case_and_a_source_route_to_us_are_delivered_locally(gw, sink):
    for address in ("USER@EXAMPLE.GOV", "user@Sub.Example.Gov", "@a.test,@b.test:user@example.gov"):
        code, text, rcpts = await send(gw.port, "x@outside.test", [address],
                                       make_message(sender="x@outside.test", to="user@example.gov"), source=OUTSIDE)
        assert code == 250, (address, rcpts)
    assert [m.rcpt_tos for m in sink.messages] == [["USER@EXAMPLE.GOV"], ["user@Sub.Example.Gov"],
                                                   ["user@example.gov"]]      # the route is dropped


async def test_internal_clients_may_still_use_percent_addresses(gw, sink):
    code, _, _ = await send(gw.port, "alice@example.gov", ["user%host@example.gov"], make_message())
    assert code == 250 and sink.messages[0].rcpt_tos == ["user%host@example.gov"]


MORE_SMUGGLING = [b"\r\n.\n", b"\n.\n\r\n", b"\r\n.\x00\r\n", b"\r\n\r.\r\n", b"\n\r.\r\n", b"\r\n.\r\r\n"]


@pytest.mark.parametrize("seq", MORE_SMUGGLING)
async def test_more_smuggling_sequences_never_start_a_second_transaction(gw, sink, seq):
    smuggled = (b"RSET\r\nMAIL FROM:<evil@example.gov>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
                b"From: evil@example.gov\r\nSubject: smuggled\r\n\r\nsecond message\r\n")
    payload = b"From: alice@example.gov\r\nTo: bob@example.org\r\nSubject: first\r\n\r\nhello" + seq + smuggled
    client = await RawClient.connect(gw.port)
    try:
        await client.cmd("EHLO client.test")
        await client.cmd("MAIL FROM:<alice@example.gov>")
        await client.cmd("RCPT TO:<bob@example.org>")
        code, text = await client.send_data(payload)
        assert code in (250, 550, 554), text
        assert (await client.cmd("NOOP"))[0] == 250           # still in step: nothing was read as a command
    finally:
        await client.close()
    await asyncio.sleep(0.05)
    assert all(m.mail_from == "alice@example.gov" and m.rcpt_tos == ["bob@example.org"] for m in sink.messages)
    assert not any(b"Subject: smuggled" in m.data.split(b"\r\n\r\n", 1)[0] for m in sink.messages)


async def test_an_address_that_breaks_the_email_parser_is_a_syntax_error_not_ours(gw, sink):
    """'(<@>)"' makes the email package's address parser raise IndexError, and aiosmtplib refuses to send
    some addresses aiosmtpd accepts: 553 5.1.3 for both (they were our 451 for an internal error), and the
    session goes on."""
    client = await RawClient.connect(gw.port)
    try:
        await client.cmd("EHLO client.test")
        assert await client.cmd('MAIL FROM:(<@>)"') == (553, "553 5.1.3 Error: malformed address")
        assert (await client.cmd("MAIL FROM:<alice@example.gov>"))[0] == 250
        assert await client.cmd('RCPT TO:(<@>)"') == (553, "553 5.1.3 Error: malformed address")
        assert (await client.cmd("RCPT TO:<bob@example.org>"))[0] == 250
        # aiosmtpd takes these, aiosmtplib will not put them on the next hop's command line (ValueError)
        assert await client.cmd('RCPT TO:<!"@BODY=%)>') == (553, "553 5.1.3 Error: malformed address")
        assert (await client.cmd("RSET"))[0] == 250
        assert await client.cmd('MAIL FROM:<!"@BODY=%)>') == (553, "553 5.1.3 Error: malformed address")
    finally:
        await client.close()


async def test_no_chunking_or_bdat_offered(gw):
    client = await RawClient.connect(gw.port)
    try:
        code, text = await client.cmd("EHLO client.test")
        assert code == 250 and "CHUNKING" not in text.upper()
        assert (await client.cmd("BDAT 10 LAST"))[0] in (500, 502)
    finally:
        await client.close()


# --- header injection through the policy --------------------------------------------------------------------

def site_policy(tmp_path, rule: str):
    site = tmp_path / "site.toml"
    site.write_text(f"[[outbound.rules]]\n{rule}\n")
    settings = make_settings(tmp_path, 25, policy={"site": str(site)})
    return settings, site


@pytest.mark.parametrize("key", ["tag", "reply"])
@pytest.mark.parametrize("value", ['"[X]\\r\\nBcc: evil@elsewhere.test"', '"[X]\\nBcc: e@x.test"', '"a\\u0000b"'])
def test_a_tag_or_reply_with_line_breaks_is_refused_at_policy_load(tmp_path, key, value):
    action = "tag" if key == "tag" else "reject"
    settings, site = site_policy(tmp_path, f'name = "inj"\nmatch = ["pii.*"]\naction = "{action}"\n'
                                           f'provision = "p"\n{key} = {value}')
    with pytest.raises(PolicyError, match=rf"{site}:\d+: rule outbound/inj: {key} must be one line"):
        policy_module.load(settings)


async def test_a_notice_with_line_breaks_never_becomes_a_header(start_gateway, sink, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text('[outbound]\ndisable = ["pii"]\n'
                    '[[outbound.rules]]\nname = "pii-tag"\nmatch = ["pii.*"]\naction = "tag"\ntag = "[PII]"\n'
                    'provision = "p"\nnotice = "Personal data.\\r\\nBcc: evil@elsewhere.test\\r\\nX-Injected: 1"\n')
    gw = await start_gateway(policy={"site": str(site)})
    body = "Payroll: my social security number is 536-22-8726, for the record.\n"
    code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], make_message(body=body))
    assert code == 250, text
    [got] = sink.messages
    head = got.data.split(b"\r\n\r\n", 1)[0]
    assert b"[PII]" in head
    assert b"\nBcc:" not in head and b"X-Injected" not in head
    assert all(not line.startswith((b"Bcc", b"X-Injected")) for line in head.split(b"\r\n"))


def test_shipped_policy_has_single_line_tags_replies_and_notices():
    settings = make_settings(SHIPPED_POLICY_DIR, 25)
    loaded = policy_module.load(settings)
    for rules in loaded.rules.values():
        for rule in rules:
            for value in (rule.tag, rule.reply, rule.notice):
                assert not any(c in value for c in "\r\n\0"), rule.name


# --- dependency audit ---------------------------------------------------------------------------------------

def test_dependency_audit_with_pip_audit():
    """pip-audit over the installed environment (PyPI's vulnerability service). Known vulnerabilities fail the
    test; when the service cannot be reached (no network beyond the PyPI mirror here) it is reported as a skip,
    never as a pass and never as a failure of the code."""
    exe = shutil.which("pip-audit", path=str(__import__("pathlib").Path(sys.executable).parent)) or \
        shutil.which("pip-audit")
    if exe is None:
        pytest.skip("pip-audit is not installed (it is in the test extra: run scripts/setup test)")
    proc = subprocess.run([exe, "--local", "--format", "json", "--progress-spinner", "off", "--timeout", "20",
                           "--skip-editable"], capture_output=True, text=True, timeout=300)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        network = ("ConnectionError", "Max retries", "Temporary failure in name resolution", "timed out",
                   "NewConnectionError", "ProxyError", "Connection refused", "Network is unreachable")
        if any(n in proc.stderr for n in network):
            pytest.skip("pip-audit could not reach the vulnerability service (network): " + proc.stderr[-300:])
        raise AssertionError(f"pip-audit failed: {proc.stderr[-2000:]}") from None
    vulnerable = [f"{d['name']} {d['version']}: {', '.join(v['id'] for v in d['vulns'])}"
                  for d in report.get("dependencies", []) if d.get("vulns")]
    print(f"\npip-audit: {len(report.get('dependencies', []))} packages audited, {len(vulnerable)} vulnerable")
    assert not vulnerable, "known vulnerabilities:\n" + "\n".join(vulnerable)


# --- command arguments an attacker chooses -------------------------------------------------------------

_PIECES = ["<", ">", "@", ".", " ", "  ", "\t", "(", ")", '"', ":", ",", ";", "[", "]", "\\", "=", "%", "!", "é",
           "\x7f", "a", "Z9", "-", "+", "_", "example.gov", "example.org", "bob", "alice", "<>", "SIZE=", "SIZE=12",
           "SIZE=x", "BODY=8BITMIME", "BODY=", "SMTPUTF8", "AUTH=<>", "RET=HDRS", "ENVID=x", "NOTIFY=NEVER",
           "ORCPT=rfc822;a@b", "=?utf-8?q?x?=", "IPv6:::1", "127.0.0.1", "x" * 70]


def _junk(rng, most: int = 8) -> str:
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, most)))


async def test_no_command_argument_gets_our_internal_error_reply(gw, sink):
    """3,000 generated MAIL, RCPT, EHLO, XFORWARD, VRFY and other lines in real sessions: each gets an
    answer, never our "451 4.3.0" (an internal error: a crash on input we should have refused)."""
    import random

    rng = random.Random(9)
    verbs = ["MAIL FROM:", "MAIL FROM: ", "RCPT TO:", "RCPT TO: ", "EHLO ", "HELO ", "XFORWARD ", "VRFY ", "NOOP ",
             "HELP ", "RSET ", "mail from:", "rcpt to:", "MAIL ", "RCPT ", "XFORWARD ADDR=", "XFORWARD NAME="]
    seen: dict[int, int] = {}
    client = None
    try:
        for _ in range(3000):
            if client is None:
                client = await RawClient.connect(gw.port)
                assert (await client.cmd("EHLO client.test"))[0] == 250
            line = rng.choice(verbs) + _junk(rng)
            if rng.random() < 0.3:
                line = f"MAIL FROM:<{_junk(rng, 4)}@{_junk(rng, 3)}>{_junk(rng, 3)}"
            elif rng.random() < 0.3:
                await client.cmd("MAIL FROM:<alice@example.gov>")
                line = f"RCPT TO:<{_junk(rng, 4)}@{_junk(rng, 3)}>{_junk(rng, 3)}"
            code, text = await client.cmd(line.encode("utf-8", "surrogateescape"))
            assert "4.3.0" not in text, (line, text)
            seen[code] = seen.get(code, 0) + 1
            if code in (0, 421):                    # aiosmtpd ends a session after too many bad commands
                await client.close()
                client = None
            elif rng.random() < 0.1:
                await client.cmd("RSET")
    finally:
        if client is not None:
            await client.close()
    assert sink.messages == []
    assert seen.get(250, 0) > 100 and sum(n for c, n in seen.items() if c >= 500) > 1000, seen
