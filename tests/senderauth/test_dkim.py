"""DKIM signing (outbound, after every modification), published test messages, keys and the CLI.

DNS is the one thing faked here (there is no network): the public keys are injected as the TXT
answers a StaticResolver gives. Everything else is real: dkimpy signs and verifies, the gateway
relays through a real SMTP session to a recording sink.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import dkim
import pytest

from gateway import cli, config
from gateway.app import Gateway
from gateway.detectors.auth import verify_dkim
from gateway.model import Action, Direction, Envelope, Verdict
from gateway.senderauth import dkimsign
from gateway.senderauth.dns import StaticResolver, ThreadBridge
from tests.support.paths import DATA
from tests.support.peers import make_message, send
from tests.support.settings import make_settings

DATA = DATA / "dkim"


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Fresh keys for example.gov: name -> (key file, TXT record)."""
    out = tmp_path_factory.mktemp("dkimkeys")
    made = {}
    for name, kind in (("rsa", "rsa"), ("ed", "ed25519"), ("rsa2", "rsa")):
        pem, record = dkimsign.keygen(kind)
        path = out / f"{name}.key"
        path.write_bytes(pem)
        made[name] = (path, record)
    return made


async def verify_all(message: bytes, answers: dict[str, str]) -> list:
    """Our verifier (dkimpy in a thread, DNS through the resolver protocol) on every signature."""
    bridge = ThreadBridge(StaticResolver(answers), asyncio.get_running_loop(), timeout=2.0)
    return await asyncio.to_thread(verify_dkim, message, bridge, 5, 1024)


def dnsfunc(answers: dict[str, str]):
    """dkimpy's own verifier with the injected key records (a second, independent check)."""
    return lambda name, timeout=5: answers.get(name.decode().rstrip("."), "").encode() or None


def signing_settings(tmp_path, sink_port, keys, *names, **sections):
    entries = [{"domain": "example.gov", "selector": n, "key_file": str(keys[n][0])} for n in names]
    return make_settings(tmp_path, sink_port, dkim={"sign": entries}, **sections)


def records(keys, *names) -> dict[str, str]:
    return {f"{n}._domainkey.example.gov": keys[n][1] for n in names}


@pytest.mark.parametrize("name", ["rsa", "ed"])
async def test_sign_then_verify_round_trip(keys, name):
    [key], _ = dkimsign.load_keys(config.from_dict({"dkim": {"sign": [
        {"domain": "example.gov", "selector": name, "key_file": str(keys[name][0])}]}}))
    message = make_message(subject="Budget", body="Figures follow.\r\n")
    signed = key.sign(message) + message
    [result] = await verify_all(signed, records(keys, name))
    assert (result.result, result.domain, result.selector) == ("pass", "example.gov", name)
    assert result.algorithm == {"rsa": "rsa-sha256", "ed": "ed25519-sha256"}[name]
    assert dkim.verify(signed, dnsfunc=dnsfunc(records(keys, name)))
    # a modification after signing breaks it
    tampered = signed.replace(b"Figures follow.", b"Figures changed.")
    [result] = await verify_all(tampered, records(keys, name))
    assert result.result == "fail" and "body hash mismatch" in result.reason


async def test_outbound_mail_is_dual_signed_last_so_the_tag_is_covered(tmp_path, sink, keys):
    site = tmp_path / "site.toml"
    site.write_text('[detectors.size]\nmax_message_bytes = 10\n')     # every message gets the outbound tag
    settings = signing_settings(tmp_path, sink.port, keys, "rsa", "ed", policy={"site": str(site)})
    gateway = await Gateway.create(settings)
    await gateway.start_smtp()
    try:
        port = config.split_host_port(settings.smtp.listen)[1]
        code, _, _ = await send(port, "alice@example.gov", ["bob@example.org"], make_message(subject="Plans"))
        assert code == 250
        [got] = await sink.wait_for(1)
    finally:
        await gateway.close()
    assert got.data.startswith(b"DKIM-Signature: ")
    assert b"Subject: [Large attachment] Plans" in got.data
    results = await verify_all(got.data, records(keys, "rsa", "ed"))
    assert sorted((r.selector, r.result) for r in results) == [("ed", "pass"), ("rsa", "pass")]
    # the tag is inside what was signed: changing the tagged subject afterwards is caught
    untagged = got.data.replace(b"Subject: [Large attachment] Plans", b"Subject: Plans")
    assert {r.result for r in await verify_all(untagged, records(keys, "rsa", "ed"))} == {"fail"}
    assert not dkim.verify(untagged, dnsfunc=dnsfunc(records(keys, "rsa", "ed")))


async def test_rotation_signs_with_both_selectors_until_the_old_one_is_removed(tmp_path, sink, keys):
    settings = signing_settings(tmp_path, sink.port, keys, "rsa", "rsa2")
    gateway = await Gateway.create(settings)
    await gateway.start_smtp()
    try:
        port = config.split_host_port(settings.smtp.listen)[1]
        assert (await send(port, "alice@example.gov", ["carol@example.gov"], make_message()))[0] == 250
        [got] = await sink.wait_for(1)
    finally:
        await gateway.close()
    results = await verify_all(got.data, records(keys, "rsa", "rsa2"))       # internal mail is signed too
    assert sorted((r.selector, r.result) for r in results) == [("rsa", "pass"), ("rsa2", "pass")]


async def test_inbound_and_foreign_senders_are_not_signed(tmp_path, sink, keys):
    settings = signing_settings(tmp_path, sink.port, keys, "rsa")
    gateway = await Gateway.create(settings)
    await gateway.start_smtp()
    try:
        port = config.split_host_port(settings.smtp.listen)[1]
        inbound = make_message(sender="x@partner.test", to="alice@example.gov")
        assert (await send(port, "x@partner.test", ["alice@example.gov"], inbound, source="127.0.0.2"))[0] == 250
        foreign = make_message(sender="x@partner.test")        # a local client relaying a foreign From
        assert (await send(port, "alice@example.gov", ["bob@example.org"], foreign))[0] == 250
        got = await sink.wait_for(2)
    finally:
        await gateway.close()
    assert len(got) == 2 and all(b"DKIM-Signature" not in m.data for m in got)


async def test_a_header_block_dkim_cannot_read_is_relayed_unsigned(tmp_path, sink, keys):
    settings = signing_settings(tmp_path, sink.port, keys, "rsa")
    gateway = await Gateway.create(settings)
    await gateway.start_smtp()
    try:
        port = config.split_host_port(settings.smtp.listen)[1]
        odd = b"X-Odd : space before the colon\r\n" + make_message()
        code, _, _ = await send(port, "alice@example.gov", ["bob@example.org"], odd)
        [got] = await sink.wait_for(1)
    finally:
        await gateway.close()
    assert code == 250 and b"DKIM-Signature" not in got.data and b"X-Odd : space" in got.data


async def test_released_mail_goes_through_the_same_signing(tmp_path, sink, keys):
    """The quarantine's release relays Actions.relayable: the finishers Gateway.create wired in."""
    settings = signing_settings(tmp_path, sink.port, keys, "ed")
    gateway = await Gateway.create(settings)
    try:
        mail = gateway.pipeline.mail(Envelope("alice@example.gov", ("bob@example.org",), "127.0.0.1"),
                                     make_message(subject="Held then released"), direction=Direction.OUTBOUND)
        released = await gateway.actions.relayable(mail, Verdict(Action.DELIVER, "outbound/released", ()))
    finally:
        await gateway.close()
    [result] = await verify_all(released, records(keys, "ed"))
    assert result.result == "pass"


@pytest.mark.parametrize(("selector", "keyfile", "expected"), [
    ("2026a", "rfc8463-brisbane._domainkey.football.example.com.txt", "cannot read key_file"),
    ("2026b", "../dkim/README.md", "not an unencrypted PEM private key"),
])
async def test_a_bad_key_file_stops_start_up_naming_the_key(tmp_path, sink, selector, keyfile, expected):
    path = tmp_path / "missing.key" if expected.startswith("cannot") else DATA / keyfile
    settings = make_settings(tmp_path, sink.port, dkim={"sign": [
        {"domain": "example.gov", "selector": selector, "key_file": str(path)}]})
    with pytest.raises(config.ConfigError) as e:
        await Gateway.create(settings)
    assert f"selector {selector}" in str(e.value) and expected in str(e.value) and str(path) in str(e.value)


def test_short_rsa_keys_and_ed25519_arc_keys_are_refused(tmp_path, keys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    short = tmp_path / "short.key"
    short.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(config.ConfigError, match="RSA key of 1024 bits"):
        dkimsign.load_keys(config.from_dict({"dkim": {"sign": [
            {"domain": "example.gov", "selector": "old", "key_file": str(short)}]}}))
    with pytest.raises(config.ConfigError, match=r"\[dkim.arc\].*need an RSA key"):
        dkimsign.load_keys(config.from_dict({"dkim": {"arc": {
            "domain": "example.gov", "selector": "arc", "key_file": str(keys["ed"][0])}}}))
    with pytest.raises(config.ConfigError, match=r"\[\[dkim.sign\]\] #1: selector, key_file missing"):
        config.from_dict({"dkim": {"sign": [{"domain": "example.gov"}]}})


async def test_rfc8463_published_message_verifies_with_its_published_keys():
    message = (DATA / "rfc8463-appendix-a3.eml").read_bytes()
    answers = {f"{s}._domainkey.football.example.com": (DATA / f"rfc8463-{s}._domainkey.football.example.com.txt")
               .read_text().strip() for s in ("brisbane", "test")}
    results = await verify_all(message, answers)
    assert [(r.selector, r.algorithm, r.result) for r in results] == [
        ("brisbane", "ed25519-sha256", "pass"), ("test", "rsa-sha256", "pass")]
    tampered = message.replace(b"Are you hungry yet?", b"Are you hungry now?")
    assert {r.result for r in await verify_all(tampered, answers)} == {"fail"}
    # the key published for another selector does not verify it
    swapped = {k: answers["test._domainkey.football.example.com" if "brisbane" in k else
                          "brisbane._domainkey.football.example.com"] for k in answers}
    assert "pass" not in {r.result for r in await verify_all(message, swapped)}


async def test_dkimpy_published_rfc6376_message_verifies_and_a_missing_key_is_permerror():
    message = (DATA / "dkimpy-rfc6376.signed.rsa.eml").read_bytes()
    key = (DATA / "dkimpy-test._domainkey.football.example.com.txt").read_text().strip()
    [result] = await verify_all(message, {"test._domainkey.football.example.com": key})
    assert (result.result, result.domain) == ("pass", "football.example.com")
    [result] = await verify_all(message, {})
    assert result.result == "permerror" and "public key" in result.reason


def test_keygen_writes_a_key_that_signs_what_the_printed_record_verifies(tmp_path, capsys):
    for kind in ("rsa", "ed25519"):
        out = tmp_path / kind
        assert cli.main(["dkim", "keygen", "example.gov", f"s-{kind}", "--out", str(out), "--type", kind]) == 0
        record = capsys.readouterr().out.splitlines()[0]      # the value; then a zone-file line
        assert record.startswith(f"v=DKIM1; k={kind}; p=")
        key_file = out / f"s-{kind}.key"
        assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        assert key_file.stat().st_mode & 0o777 == 0o600
        algorithm, private = dkimsign.read_key(str(key_file))
        key = dkimsign.SigningKey("example.gov", f"s-{kind}", algorithm, private, str(key_file))
        message = make_message()
        assert dkim.verify(key.sign(message) + message,
                           dnsfunc=dnsfunc({f"s-{kind}._domainkey.example.gov": record}))
    # never overwrites: rotation is a new selector
    assert cli.main(["dkim", "keygen", "example.gov", "s-rsa", "--out", str(tmp_path / "rsa")]) == 1
    assert "exists" in capsys.readouterr().err
    assert cli.main(["dkim", "keygen", "example.gov", "bad selector", "--out", str(tmp_path)]) == 2


def test_gateway_run_refuses_to_start_with_an_unreadable_key(tmp_path, capsys):
    conf = tmp_path / "gateway.toml"
    conf.write_text(f'[smtp]\nlisten = "127.0.0.1:0"\n[quarantine]\nurl = "sqlite:///{tmp_path}/q.db"\n'
                    f'[[dkim.sign]]\ndomain = "example.gov"\nselector = "s1"\nkey_file = "{tmp_path}/s1.key"\n')
    assert cli.main(["run", "--config", str(conf)]) == 2
    err = capsys.readouterr().err
    err = err.splitlines()[-1]          # after the line naming the config file and the store
    assert err.startswith("gateway: configuration error: ") and "[[dkim.sign]] #1" in err
    assert f"selector s1): cannot read key_file {tmp_path}/s1.key" in err
