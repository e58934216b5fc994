"""DMARC (RFC 7489) evaluation: policy discovery, relaxed/strict identifier alignment, the result.

Why our own and not authheaders' `dmarc_per_from`: that function re-reads and re-parses the whole
Public Suffix List on every organizational-domain look-up (about 75 ms each, two or three per
message), and it takes one DKIM result where a message can carry several signatures. This module
is the small part of RFC 7489 a receiver needs (section 6.6), with the suffix list (publicsuffix2's
bundled copy) parsed once per process. Failure reports (ruf/rua) are not sent.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from gateway.senderauth.dns import DnsTempError

POLICIES = ("none", "quarantine", "reject")


@functools.cache
def _suffix_list():
    from publicsuffix2 import PublicSuffixList

    return PublicSuffixList()


def org_domain(domain: str) -> str:
    """The organizational domain: one label below the public suffix ("a.b.example.co.uk" -> "example.co.uk")."""
    domain = domain.rstrip(".").lower()
    return _suffix_list().get_sld(domain) or domain


def aligned(a: str, b: str, mode: str) -> bool:
    """Identifier alignment: strict = the same name; relaxed = the same organizational domain."""
    a, b = a.rstrip(".").lower(), b.rstrip(".").lower()
    if not a or not b:
        return False
    return a == b if mode == "s" else org_domain(a) == org_domain(b)


def parse_record(text: str) -> dict[str, str] | None:
    """'v=DMARC1; p=reject; ...' -> tags (lower-case names); None unless it is a DMARC record."""
    tags: dict[str, str] = {}
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        if not sep:
            if item.strip():
                return None
            continue
        tags.setdefault(name.strip().lower(), value.strip())
    if tags.get("v") != "DMARC1" or not text.lstrip().startswith("v"):
        return None
    return tags


@dataclass(frozen=True, slots=True)
class DmarcResult:
    result: str                 # pass | fail | none | temperror | permerror
    from_domain: str
    policy: str = ""            # the policy that applies: none | quarantine | reject ("" without a record)
    record_domain: str = ""     # where the record was found (the From domain or its organizational domain)
    reason: str = ""

    @property
    def enforced(self) -> bool:
        """A failure the domain owner asks receivers to act on (p=quarantine or p=reject)."""
        return self.result == "fail" and self.policy in ("quarantine", "reject")


TxtLookup = Callable[[str], Awaitable[list[bytes]]]


async def find_record(from_domain: str, txt: TxtLookup) -> tuple[dict[str, str] | None, str]:
    """RFC 7489 6.6.3: the From domain's record, else the organizational domain's. -> (tags, where)."""
    candidates = [from_domain]
    org = org_domain(from_domain)
    if org != from_domain:
        candidates.append(org)
    for domain in candidates:
        records = [parse_record(r.decode("utf-8", "replace")) for r in await txt(f"_dmarc.{domain}")]
        records = [r for r in records if r is not None]
        if len(records) == 1:
            return records[0], domain
        # none, or more than one (RFC 7489 6.6.3: treated as none): try the next candidate
    return None, ""


async def evaluate(from_domain: str, dkim_passes: Iterable[str], spf_pass_domain: str | None,
                   txt: TxtLookup) -> DmarcResult:
    """The DMARC result for one RFC5322.From domain.

    dkim_passes: the d= domains of the DKIM signatures that verified; spf_pass_domain: the domain
    SPF authenticated (MAIL FROM, or HELO for the null sender), None unless SPF passed."""
    from_domain = from_domain.rstrip(".").lower()
    try:
        record, where = await find_record(from_domain, txt)
    except DnsTempError as e:
        return DmarcResult("temperror", from_domain, reason=str(e))
    if record is None:
        return DmarcResult("none", from_domain)
    policy = record.get("p", "").lower()
    if where != from_domain and "sp" in record:
        policy = record["sp"].lower()
    if policy not in POLICIES:
        if record.get("p", "").lower() not in POLICIES:
            return DmarcResult("permerror", from_domain, record_domain=where, reason="no valid p= tag")
        policy = record["p"].lower()
    adkim = "s" if record.get("adkim", "r").lower() == "s" else "r"
    aspf = "s" if record.get("aspf", "r").lower() == "s" else "r"
    if any(aligned(d, from_domain, adkim) for d in dkim_passes):
        return DmarcResult("pass", from_domain, policy, where, "aligned DKIM signature")
    if spf_pass_domain and aligned(spf_pass_domain, from_domain, aspf):
        return DmarcResult("pass", from_domain, policy, where, "aligned SPF pass")
    return DmarcResult("fail", from_domain, policy, where, "no aligned DKIM signature or SPF pass")
