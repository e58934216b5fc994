"""Inbound sender authentication end to end: DKIM, SPF, DMARC, ARC, the Authentication-Results header.

DNS is the one thing faked here (there is no network): the gateway's `auth` detector gets a
StaticResolver with the records each test publishes. The SMTP sessions, the gateway, dkimpy,
pyspf, the quarantine and the sink are real.
"""

from __future__ import annotations

import asyncio
import re
from email import message_from_bytes

import dkim
import pytest

from gateway.senderauth import dkimsign, dmarc
from gateway.senderauth.authresults import AuthResults, DkimResult, claimed_authserv_id, remove_claimed
from gateway.senderauth.dns import DnsTempError, StaticResolver
from tests.support.peers import make_message, send

OUTSIDE = "127.0.0.2"        # not in the test gateway's internal networks (127.0.0.1/32)


@pytest.fixture(scope="module")
def partner_key(tmp_path_factory):
    """A key partner.test (and, for the SaaS case, example.gov's mailer) signs with, and its record."""
    pem, record = dkimsign.keygen("rsa")
    path = tmp_path_factory.mktemp("partner") / "p.key"
    path.write_bytes(pem)
    algorithm, private = dkimsign.read_key(str(path))
    return private, algorithm, record, path


def sign_as(partner_key, domain: str, selector: str, message: bytes) -> bytes:
    private, algorithm, _, path = partner_key
    return dkimsign.SigningKey(domain, selector, algorithm, private, str(path)).sign(message) + message


async def start(start_gateway, answers: dict, **sections):
    """The gateway with the injected DNS answers for its auth detector."""
    gw = await start_gateway(**sections)
    resolver = StaticResolver(answers)
    [auth] = [d for d in gw.gateway.pipeline.detectors if d.name == "auth"]
    auth.resolver = resolver
    return gw, resolver


def auth_results(data: bytes) -> list[str]:
    return [re.sub(r"\s+", " ", v) for v in message_from_bytes(data).get_all("Authentication-Results", [])]


async def test_spoofed_department_sender_from_outside_is_held(start_gateway, sink):
    gw, resolver = await start(start_gateway, {})
    message = make_message(subject="Urgent wire transfer", sender="director@example.gov", to="staff@example.gov")
    code, text, _ = await send(gw.port, "director@example.gov", ["staff@example.gov"], message, source=OUTSIDE)
    assert code == 250, text
    assert sink.messages == []
    [held] = await gw.store.list()
    assert held.rule == "inbound/spoofed-local-sender" and held.kinds == ("auth.spoofed_local",)
    [finding] = held.findings
    assert "claims the department domain example.gov" in finding.detail and "SPF none" in finding.detail
    assert ("example.gov", "TXT") in resolver.queries          # it did look for an SPF record


async def test_department_sender_authenticated_by_spf_is_delivered(start_gateway, sink):
    gw, _ = await start(start_gateway, {"example.gov": "v=spf1 ip4:127.0.0.2 -all"})
    message = make_message(sender="notices@example.gov", to="staff@example.gov")
    code, _, _ = await send(gw.port, "notices@example.gov", ["staff@example.gov"], message, source=OUTSIDE)
    assert code == 250
    [got] = await sink.wait_for(1)
    [ours] = auth_results(got.data)
    assert ours.startswith("gateway.test; dkim=none; spf=pass smtp.mailfrom=example.gov")


async def test_department_domain_signed_by_an_outside_mailer_is_delivered(start_gateway, sink, partner_key):
    """A bulk mailer sending as the department with the department's key: DKIM aligns, SPF does not."""
    gw, _ = await start(start_gateway, {"news._domainkey.example.gov": partner_key[2]})
    message = sign_as(partner_key, "example.gov", "news",
                      make_message(sender="newsletter@example.gov", to="staff@example.gov"))
    code, _, _ = await send(gw.port, "bounce@mailer.test", ["staff@example.gov"], message, source=OUTSIDE)
    assert code == 250
    [got] = await sink.wait_for(1)
    [ours] = auth_results(got.data)
    assert "dkim=pass header.d=example.gov header.s=news header.a=rsa-sha256" in ours
    assert b"auth.spoofed_local" not in got.data


async def test_forged_authentication_results_claiming_our_authserv_id_are_removed(start_gateway, sink):
    gw, _ = await start(start_gateway, {})
    forged = ("Authentication-Results: gateway.test; dkim=pass header.d=example.gov\r\n"
              "Authentication-Results: (looks legit) GATEWAY.TEST;\r\n spf=pass smtp.mailfrom=example.gov\r\n"
              "Authentication-Results: mx.partner.test; spf=pass smtp.mailfrom=partner.test\r\n")
    message = make_message(sender="x@partner.test", to="staff@example.gov", extra_headers=forged)
    code, _, _ = await send(gw.port, "x@partner.test", ["staff@example.gov"], message, source=OUTSIDE)
    assert code == 250
    [got] = await sink.wait_for(1)
    results = auth_results(got.data)
    assert len(results) == 2
    assert results[0] == ("gateway.test; dkim=none; spf=none smtp.mailfrom=partner.test; "
                          "dmarc=none header.from=partner.test; arc=none")
    assert results[1] == "mx.partner.test; spf=pass smtp.mailfrom=partner.test"      # another ADMD's: kept
    assert b"header.d=example.gov" not in got.data


async def test_dmarc_reject_failure_is_tagged_and_arc_sealed(start_gateway, sink, tmp_path, partner_key):
    arc_pem, arc_record = dkimsign.keygen("rsa")
    arc_file = tmp_path / "arc.key"
    arc_file.write_bytes(arc_pem)
    gw, _ = await start(start_gateway, {"partner.test": "v=spf1 ip4:192.0.2.0/24 -all",
                                        "_dmarc.partner.test": "v=DMARC1; p=reject; rua=mailto:d@partner.test"},
                        dkim={"arc": {"domain": "example.gov", "selector": "arc1", "key_file": str(arc_file)}})
    message = make_message(subject="Invoice", sender="billing@partner.test", to="staff@example.gov")
    code, _, _ = await send(gw.port, "billing@partner.test", ["staff@example.gov"], message, source=OUTSIDE)
    assert code == 250
    [got] = await sink.wait_for(1)
    assert b"Subject: [Unverified sender] Invoice" in got.data
    findings = re.sub(r"\s+", " ", message_from_bytes(got.data)["X-Gateway-Findings"])
    assert findings.startswith("auth.dmarc_fail (Fails DMARC for From domain partner.test")
    [ours] = auth_results(got.data)
    assert "spf=fail smtp.mailfrom=partner.test; dmarc=fail (p=reject) header.from=partner.test" in ours
    # the ARC set carries our results to the next hop, and dkimpy's ARC verifier accepts the seal
    assert got.data.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=example.gov; s=arc1;")
    aar = re.sub(r"\s+", " ", message_from_bytes(got.data)["ARC-Authentication-Results"])
    assert aar.startswith("i=1; gateway.test;") and "dmarc=fail header.from=partner.test" in aar
    records = {b"arc1._domainkey.example.gov.": arc_record.encode()}
    cv, _, reason = dkim.arc_verify(got.data, dnsfunc=lambda name, timeout=5: records.get(name))
    assert cv == dkim.CV_Pass, reason
    # changing the sealed message afterwards breaks the chain
    cv, _, _ = dkim.arc_verify(got.data.replace(b"Invoice", b"Receipt"),
                               dnsfunc=lambda name, timeout=5: records.get(name))
    assert cv == dkim.CV_Fail


async def test_a_signature_broken_in_transit_is_reported(start_gateway, sink, partner_key):
    gw, _ = await start(start_gateway, {"s1._domainkey.partner.test": partner_key[2]})
    signed = sign_as(partner_key, "partner.test", "s1",
                     make_message(sender="x@partner.test", to="staff@example.gov", body="Pay 100 EUR.\r\n"))
    altered = signed.replace(b"Pay 100 EUR.", b"Pay 900 EUR.")
    code, _, _ = await send(gw.port, "x@partner.test", ["staff@example.gov"], altered, source=OUTSIDE)
    assert code == 250
    [got] = await sink.wait_for(1)
    findings = re.sub(r"\s+", " ", message_from_bytes(got.data)["X-Gateway-Findings"])
    assert findings.startswith("auth.dkim_fail (1 DKIM signature(s) did not verify and none did)")
    [ours] = auth_results(got.data)
    assert ours.startswith("gateway.test; dkim=fail (body hash mismatch") and "header.d=partner.test" in ours
    # the intact message passes, and no finding is made
    sink.messages.clear()
    code, _, _ = await send(gw.port, "x@partner.test", ["staff@example.gov"], signed, source=OUTSIDE)
    [got] = await sink.wait_for(1)
    assert "dkim=pass header.d=partner.test" in auth_results(got.data)[0]
    assert b"X-Gateway-Findings" not in got.data and b"[Unverified sender]" not in got.data


async def test_dns_failure_on_a_department_claim_answers_451(start_gateway, sink):
    gw, _ = await start(start_gateway, {"example.gov": DnsTempError})
    message = make_message(sender="director@example.gov", to="staff@example.gov")
    code, text, _ = await send(gw.port, "director@example.gov", ["staff@example.gov"], message, source=OUTSIDE)
    assert code == 451, text
    assert sink.messages == [] and await gw.store.list() == []


async def test_outbound_and_internal_mail_is_not_checked(start_gateway, sink):
    gw, resolver = await start(start_gateway, {})
    assert (await send(gw.port, "alice@example.gov", ["bob@example.org"], make_message()))[0] == 250
    assert (await send(gw.port, "alice@example.gov", ["carol@example.gov"], make_message()))[0] == 250
    got = await sink.wait_for(2)
    assert all(b"Authentication-Results" not in m.data for m in got)
    assert resolver.queries == []


# --- the pieces, on their own -------------------------------------------------------------------------

async def test_dmarc_policy_discovery_and_alignment():
    resolver = StaticResolver({
        "_dmarc.example.co.uk": "v=DMARC1; p=reject; sp=quarantine; adkim=s",
        "_dmarc.strict.test": "v=DMARC1; p=quarantine; aspf=s",
        "_dmarc.twice.test": ["v=DMARC1; p=reject", "v=DMARC1; p=none"],
        "_dmarc.lax.test": ["not dmarc", "v=DMARC1; p=none"],
    })

    async def txt(name):
        return await resolver.query(name, "TXT")

    # the organizational domain's record, with its subdomain policy; strict DKIM alignment
    r = await dmarc.evaluate("mail.example.co.uk", ["example.co.uk"], None, txt)
    assert (r.result, r.policy, r.record_domain, r.enforced) == ("fail", "quarantine", "example.co.uk", True)
    r = await dmarc.evaluate("example.co.uk", ["example.co.uk"], None, txt)
    assert (r.result, r.policy) == ("pass", "reject")
    # relaxed SPF alignment by default, strict when asked
    assert (await dmarc.evaluate("lax.test", [], "bounces.lax.test", txt)).result == "pass"
    assert (await dmarc.evaluate("strict.test", [], "bounces.strict.test", txt)).result == "fail"
    assert (await dmarc.evaluate("strict.test", [], "strict.test", txt)).result == "pass"
    # p=none: a failure the owner does not ask us to act on; two records count as none (RFC 7489 6.6.3)
    assert not (await dmarc.evaluate("lax.test", [], None, txt)).enforced
    assert (await dmarc.evaluate("twice.test", [], None, txt)).result == "none"
    assert dmarc.org_domain("a.b.example.gov") == "example.gov"


def test_authentication_results_value_quotes_what_senders_control():
    results = AuthResults((DkimResult("fail", 'evil.test; dkim=pass', "s (1)", "rsa-sha256", "ab/c+=",
                                      "signature did not verify (really)"),),
                          "none", "evil.test", "mailfrom", (), "none")
    value = results.header_value("gateway.test")
    assert value == ('gateway.test; dkim=fail (signature did not verify  really ) header.d="evil.test; dkim=pass"'
                     ' header.s="s (1)" header.a=rsa-sha256 header.b="ab/c+="; spf=none '
                     'smtp.mailfrom=evil.test; dmarc=none; arc=none')


def test_removal_matches_the_authserv_id_only():
    raw = (b"Authentication-Results: gw.example; spf=pass\r\nAuthentication-Results: gw.example.evil; spf=pass\r\n"
           b"Authentication-Results:\r\n (c) Gw.Example (v) ; none\r\nSubject: x\r\n\r\nbody\r\n")
    assert claimed_authserv_id(b"Authentication-Results: (x (y)) gw.example 1; none\r\n") == "gw.example"
    assert remove_claimed(raw, "gw.example") == (
        b"Authentication-Results: gw.example.evil; spf=pass\r\nSubject: x\r\n\r\nbody\r\n")


def test_authentication_results_stay_one_plain_parseable_field_for_hostile_input():
    import authres

    many = tuple(DkimResult("fail", "d" * 90 + f"{n}.test", "sé" * 40, "rsa-sha256", "x" * 8, "y" * 300)
                 for n in range(5))
    value = AuthResults(many, "none", "evil.test", "mailfrom", (), "none").header_value("gateway.test")
    assert len(value) <= 1900 and value.isascii() and "\n" not in value
    parsed = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + value)
    assert parsed.authserv_id == "gateway.test" and parsed.results[0].method == "dkim"


class _Nameserver(asyncio.DatagramProtocol):
    """A tiny authoritative UDP nameserver on loopback (dnspython's wire format): the zone is a dict."""

    def __init__(self, zone: dict[tuple[str, str], list[str]]) -> None:
        self.zone = zone

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        import dns.message
        import dns.rcode
        import dns.rrset

        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        values = self.zone.get((name, rdtype))
        if values:
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", rdtype, *values))
        elif not any(n == name for n, _ in self.zone):
            response.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(response.to_wire(), addr)


async def test_configured_nameserver_answers_through_dnspython(tmp_path, sink):
    """The real resolver path: [auth] resolver = a nameserver address, dnspython's asyncio resolver."""
    from gateway.app import Gateway
    from tests.support.peers import free_port
    from tests.support.settings import make_settings

    port = free_port()
    zone = {("example.gov", "TXT"): ['"v=spf1 ip4:127.0.0.2 -all"']}
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Nameserver(zone), local_addr=("127.0.0.1", port))
    settings = make_settings(tmp_path, sink.port, auth={"resolver": f"127.0.0.1:{port}", "dns_timeout": 2.0})
    gateway = await Gateway.create(settings)
    await gateway.start_smtp()
    try:
        gw_port = int(settings.smtp.listen.rpartition(":")[2])
        message = make_message(sender="notices@example.gov", to="staff@example.gov")
        code, _, _ = await send(gw_port, "notices@example.gov", ["staff@example.gov"], message, source=OUTSIDE)
        assert code == 250
        [got] = await sink.wait_for(1)
    finally:
        await gateway.close()
        transport.close()
    assert "spf=pass smtp.mailfrom=example.gov" in auth_results(got.data)[0]


def test_resolver_setting_is_system_or_a_nameserver_address():
    from gateway import config

    for good in ("system", "none", "192.0.2.53", "192.0.2.53:5353", "[2001:db8::53]:53", "2001:db8::53"):
        config.from_dict({"auth": {"resolver": good}})
    with pytest.raises(config.ConfigError, match=r"resolver: 'ns1.example' is neither \"system\", \"none\" nor"):
        config.from_dict({"auth": {"resolver": "ns1.example"}})


async def test_a_header_block_dkimpy_cannot_read_is_no_crash(start_gateway, sink):
    gw, _ = await start(start_gateway, {})
    message = (b"Received: from a.partner.test\r\nX-Odd : space before the colon\r\n" + make_message(
        sender="x@partner.test", to="staff@example.gov",
        extra_headers="DKIM-Signature: v=1; a=rsa-sha256; d=partner.test; s=s1; h=from; bh=AA==; b=AA==\r\n"))
    code, _, _ = await send(gw.port, "x@partner.test", ["staff@example.gov"], message, source=OUTSIDE)
    assert code == 250
    [got] = await sink.wait_for(1)
    assert auth_results(got.data)[0].startswith("gateway.test; dkim=permerror (message not readable for DKIM")


async def test_an_existing_arc_chain_is_verified_and_continued(start_gateway, sink, tmp_path, partner_key):
    """A mailing list sealed the message (i=1); we verify that chain, tag the mail and add i=2 with cv=pass."""
    private, _, list_record, _ = partner_key
    arc_pem, arc_record = dkimsign.keygen("rsa")
    arc_file = tmp_path / "arc.key"
    arc_file.write_bytes(arc_pem)
    answers = {"list._domainkey.lists.partner.test": list_record, "lists.partner.test": "v=spf1 -all",
               "_dmarc.partner.test": "v=DMARC1; p=reject"}
    gw, _ = await start(start_gateway, answers,
                        dkim={"arc": {"domain": "example.gov", "selector": "arc1", "key_file": str(arc_file)}})
    original = make_message(subject="Meeting", sender="chair@partner.test", to="list@lists.partner.test",
                            extra_headers="Authentication-Results: lists.partner.test; spf=pass "
                                          "smtp.mailfrom=partner.test; dmarc=pass header.from=partner.test\r\n")
    sealed = b"".join(dkim.arc_sign(original, b"list", b"lists.partner.test", private, b"lists.partner.test")) \
        + original
    code, _, _ = await send(gw.port, "list-bounces@lists.partner.test", ["staff@example.gov"], sealed,
                            source=OUTSIDE)
    assert code == 250
    [got] = await sink.wait_for(1)
    assert b"Subject: [Unverified sender] Meeting" in got.data      # DMARC p=reject fails after the list
    assert "; arc=pass" in auth_results(got.data)[0]
    assert got.data.startswith(b"ARC-Seal: i=2; cv=pass;")
    records = {b"arc1._domainkey.example.gov.": arc_record.encode(),
               b"list._domainkey.lists.partner.test.": list_record.encode()}
    cv, results, reason = dkim.arc_verify(got.data, dnsfunc=lambda name, timeout=5: records.get(name))
    assert cv == dkim.CV_Pass, reason
    assert [r["instance"] for r in results] == [2, 1]
