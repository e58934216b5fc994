"""auth: DKIM, SPF, DMARC and ARC for inbound mail (policy: department e-mail integrity).

Runs only on inbound mail. DKIM (dkimpy: every signature, up to `[auth] max_signatures`), ARC
(dkimpy) and SPF (pyspf) run in the detector's bounded thread pool (hashing and RSA are CPU work); their DNS
look-ups go through the configured asynchronous resolver on the event loop (gateway.senderauth.dns).
DMARC (gateway.senderauth.dmarc) then combines the results with the From domains.

The results go to `mail.context.auth` for the Authentication-Results header
(gateway.senderauth.authresults); the findings are for the policy:
- auth.dkim_fail      a DKIM signature failed to verify (body or header changed, wrong key) and none passed
- auth.dmarc_fail     the From domain publishes p=quarantine or p=reject and the message fails DMARC
- auth.spoofed_local  mail from outside claims a department domain (From header or MAIL FROM)
                      without an aligned DKIM signature or SPF pass for it
A DNS failure that leaves auth.spoofed_local undecided raises (error.auth: the sender retries);
for other domains it is recorded as temperror in the header and the mail flows (a DNS outage
must not stop all inbound mail for a check that is advisory for outside domains).
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from gateway.config import Settings
from gateway.detectors.base import options_with_defaults
from gateway.model import Direction, Finding, Mail
from gateway.senderauth import dmarc
from gateway.senderauth.authresults import AuthResults, DkimResult
from gateway.senderauth.dns import DnsTempError, Resolver, ThreadBridge, make_resolver

DEFAULTS: dict[str, Any] = {"min_key_bits": 1024}
MAX_FROM = 5
THREADS = 8          # concurrent checks in worker threads (two per message: signatures, SPF)
_bridge: contextvars.ContextVar[ThreadBridge | None] = contextvars.ContextVar("spf_dns", default=None)


class _Errors:
    """A logger for dkimpy that keeps its error messages: they say why a signature did not verify."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def error(self, msg: object, *args: object, **kwargs: object) -> None:
        self.messages.append(str(msg) % args if args else str(msg))

    def debug(self, *args: object, **kwargs: object) -> None:
        pass

    info = warning = debug


def _spf_lookup(name: str, qtype: str, strict: object = True, timeout: float = 20) -> list:
    """pyspf's pluggable DNS function (spf.DNSLookup), answered by this check's resolver."""
    import spf

    bridge = _bridge.get()
    if bridge is None or qtype not in ("TXT", "A", "AAAA", "MX", "PTR"):
        return []
    try:
        records = bridge.query(name, qtype)
    except DnsTempError as e:
        raise spf.TempError(f"DNS {e}") from None
    return [((name, qtype), [r] if qtype == "TXT" else r) for r in records]


def _install_spf_lookup() -> None:
    import spf

    spf.DNSLookup = _spf_lookup      # pyspf's documented hook; per-check resolver through a context variable


def verify_dkim(raw: bytes, bridge: ThreadBridge, max_signatures: int, min_key_bits: int) -> list[DkimResult]:
    import dkim
    from dkim.util import InvalidTagValueList, parse_tag_value

    errors = _Errors()
    try:
        signer = dkim.DKIM(raw, logger=errors, minkey=min_key_bits, timeout=bridge.timeout)
    except Exception as e:       # a header block dkimpy cannot read (e.g. an mbox "From " line)
        if b"dkim-signature:" not in raw[:256 * 1024].lower():
            return []
        return [DkimResult("permerror", "", "", "", "", f"message not readable for DKIM: {e}"[:200])]
    signatures = [v for k, v in signer.headers if k.lower() == b"dkim-signature"][:max_signatures]
    results = []
    for idx, value in enumerate(signatures):
        try:
            tags = parse_tag_value(value)
        except InvalidTagValueList:
            tags = {}
        text = {k: tags.get(k.encode(), b"").decode("ascii", "replace") for k in ("d", "s", "a", "b")}
        b = "".join(text["b"].split())[:8]
        errors.messages.clear()
        temp_before = len(bridge.temp_errors)
        raised = False
        try:
            ok = signer.verify(idx=idx, dnsfunc=bridge.txt)
            reason = "" if ok else (errors.messages[-1] if errors.messages else "signature did not verify")
        except Exception as e:   # dkimpy and its crypto libraries raise more than DKIMException on hostile input
            ok, raised, reason = False, True, str(e) or type(e).__name__
        if ok:
            result = "pass"
        elif len(bridge.temp_errors) > temp_before:
            result, reason = "temperror", "key look-up failed"
        elif "body hash mismatch" in reason:
            result = "fail"                     # the body changed after signing
        elif raised or "public key" in reason or "KeyFormatError" in reason:
            result = "permerror"                # no usable key, or a malformed signature (RFC 8601 2.7.1)
        else:
            result = "fail"                     # the header hash does not match the signature
        results.append(DkimResult(result, text["d"].lower(), text["s"], text["a"], b, reason[:200]))
    return results


def verify_arc(raw: bytes, bridge: ThreadBridge) -> str:
    import dkim

    if b"arc-seal:" not in raw[:1_000_000].lower():
        return "none"
    try:
        cv, _, _ = dkim.ARC(raw, logger=_Errors(), timeout=bridge.timeout).verify(dnsfunc=bridge.txt)
    except Exception:            # hostile ARC headers: a broken chain, never a crash
        return "fail"
    return cv.decode("ascii", "replace") if isinstance(cv, bytes) else str(cv)


def check_spf(ip: str, mail_from: str, helo: str, bridge: ThreadBridge) -> str:
    import spf

    if not ip:
        return "none"
    _bridge.set(bridge)          # this thread's copy of the context
    try:
        result, _, _ = spf.query(i=ip, s=mail_from, h=helo or "unknown", timeout=bridge.timeout).check()
    except Exception:            # pyspf on a malformed identity: no result rather than a crash
        return "permerror"
    return result


class Auth:
    name: ClassVar[str] = "auth"
    waits: ClassVar[bool] = True        # on DNS
    kinds: ClassVar[frozenset[str]] = frozenset({"auth.dkim_fail", "auth.dmarc_fail", "auth.spoofed_local"})
    rescan: ClassVar[bool] = False      # how the message arrived was judged at receipt; a release keeps that

    def __init__(self, settings: Settings, options: Mapping[str, Any]) -> None:
        opts = options_with_defaults(self.name, options, DEFAULTS)
        self.settings = settings
        self.min_key_bits = opts["min_key_bits"]
        self.timeout = settings.auth.dns_timeout
        self.max_signatures = settings.auth.max_signatures
        self.resolver: Resolver = make_resolver(settings.auth.resolver, self.timeout)
        dmarc.org_domain("example.gov")           # parse the suffix list now, not on the first message
        _install_spf_lookup()
        # Our own bounded pool: checks waiting on slow DNS must not starve other detectors' threads.
        self.executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="auth")

    async def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def check(self, mail: Mail) -> list[Finding]:
        if mail.direction is not Direction.INBOUND:
            return []
        env = mail.envelope
        bridge = ThreadBridge(self.resolver, asyncio.get_running_loop(), self.timeout)
        spf_identity = "mailfrom" if env.mail_from else "helo"
        spf_domain = (env.mail_from.rpartition("@")[2] if env.mail_from else env.helo).lower().rstrip(".")
        loop = asyncio.get_running_loop()

        def signatures() -> tuple[list[DkimResult], str]:
            return verify_dkim(mail.raw, bridge, self.max_signatures, self.min_key_bits), verify_arc(mail.raw, bridge)

        spf_context = contextvars.copy_context()
        (dkim_results, arc), spf_result = await asyncio.gather(
            loop.run_in_executor(self.executor, signatures),
            loop.run_in_executor(self.executor, spf_context.run, check_spf, env.client_address, env.mail_from,
                                 env.helo, bridge))

        async def txt(name: str) -> list[bytes]:
            return [r for r in await self.resolver.query(name, "TXT") if isinstance(r, bytes)]

        passes = [d.domain for d in dkim_results if d.result == "pass"]
        spf_pass = spf_domain if spf_result == "pass" else None
        from_domains = self.from_domains(mail)
        dmarc_results = [await dmarc.evaluate(d, passes, spf_pass, txt) for d in from_domains]
        mail.context.auth = AuthResults(tuple(dkim_results), spf_result, spf_domain, spf_identity,
                                              tuple(dmarc_results), arc)
        return self.findings(mail, dkim_results, spf_result, spf_domain, dmarc_results, from_domains)

    @staticmethod
    def from_domains(mail: Mail) -> list[str]:
        values = [str(v) for v in (mail.parsed.message.get_all("From") or [])][:MAX_FROM]
        domains = [a.rpartition("@")[2].strip().rstrip(".").lower() for _, a in email.utils.getaddresses(values)]
        return list(dict.fromkeys(d for d in domains if d))[:MAX_FROM]

    def findings(self, mail: Mail, dkim_results: list[DkimResult], spf_result: str, spf_domain: str,
                 dmarc_results: list[dmarc.DmarcResult], from_domains: list[str]) -> list[Finding]:
        found = []
        if dkim_results and not any(d.result == "pass" for d in dkim_results):
            # a signature that does not verify; one without a published key (permerror) counts as absent
            broken = [d for d in dkim_results if d.result == "fail"]
            if broken:
                found.append(Finding(
                    kind="auth.dkim_fail", detector=self.name,
                    detail=f"{len(broken)} DKIM signature(s) did not verify and none did",
                    evidence=tuple(f"d={d.domain} s={d.selector}: {d.result} ({d.reason})"[:160] for d in broken)))
        for m in dmarc_results:
            if m.enforced:
                found.append(Finding(
                    kind="auth.dmarc_fail", detector=self.name,
                    detail=f"Fails DMARC for From domain {m.from_domain}, whose owner asks for p={m.policy}",
                    evidence=(f"{m.from_domain}: {m.reason}",)))
        passes = [d.domain for d in dkim_results if d.result == "pass"]
        claimed = [d for d in from_domains if self.settings.is_local("@" + d)]
        if spf_domain and mail.envelope.mail_from and self.settings.is_local(mail.envelope.mail_from):
            claimed.append(spf_domain)
        for domain in dict.fromkeys(claimed):
            if any(dmarc.aligned(d, domain, "r") for d in passes):
                continue
            if spf_result == "pass" and dmarc.aligned(spf_domain, domain, "r"):
                continue
            if spf_result == "temperror" or any(d.result == "temperror" for d in dkim_results):
                raise DnsTempError(f"could not authenticate mail claiming {domain}")
            found.append(Finding(
                kind="auth.spoofed_local", detector=self.name,
                detail=f"Mail from outside claims the department domain {domain} but does not authenticate "
                       f"as it (no aligned DKIM signature, SPF {spf_result})",
                evidence=(f"client {mail.envelope.client_address}", f"claims {domain}")))
            break
        return found
