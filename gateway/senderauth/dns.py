"""Asynchronous DNS for sender authentication, behind a small protocol that tests replace.

`[auth] resolver` names the resolver: "system" (the host's /etc/resolv.conf) or a nameserver
address ("192.0.2.53", "192.0.2.53:5353", "[2001:db8::53]:53"), both dnspython's asyncio
resolver; or "none": no DNS at all, every name has no records (offline checks of a corpus, and
the test suite's gateways, which must not depend on a network). Tests inject a `StaticResolver`
(a dictionary of answers): DNS is the one thing the authentication tests fake (no network here).

The DKIM, ARC and SPF libraries are synchronous and CPU-bound (hashing, RSA), so the checks run in
a worker thread; `ThreadBridge` gives them blocking look-up functions that run each query on the
event loop through the configured resolver and wait for it with a timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping
from typing import Protocol

# What a query returns, per record type: TXT -> bytes (the character-strings joined, as DKIM, SPF
# and DMARC all read them); A / AAAA -> address text; MX -> (preference, exchange); PTR -> name.
Record = bytes | str | tuple[int, str]
TYPES = frozenset({"TXT", "A", "AAAA", "MX", "PTR"})


class DnsTempError(Exception):
    """The resolver could not answer (timeout, SERVFAIL, no nameserver): a temporary failure."""


class Resolver(Protocol):
    async def query(self, name: str, rdtype: str) -> list[Record]:
        """Answers for (name, type); [] for NXDOMAIN or no data; DnsTempError when it could not tell."""
        ...


def _name(name: str | bytes) -> str:
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return name.rstrip(".").lower()


class SystemResolver:
    """dnspython's asyncio resolver: the host's configuration, or one nameserver."""

    def __init__(self, nameserver: str = "", timeout: float = 5.0) -> None:
        import dns.asyncresolver

        if nameserver:
            host, port = _split_nameserver(nameserver)
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [host]
            self._resolver.port = port
        else:
            self._resolver = dns.asyncresolver.Resolver()
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout

    async def query(self, name: str, rdtype: str) -> list[Record]:
        import dns.exception
        import dns.name
        import dns.resolver

        if rdtype not in TYPES:
            raise ValueError(f"unsupported record type {rdtype}")
        try:
            answer = await self._resolver.resolve(_name(name) + ".", rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout) as e:
            raise DnsTempError(f"{rdtype} {name}: {type(e).__name__}") from None
        except (dns.name.NameTooLong, dns.name.EmptyLabel, dns.name.LabelTooLong):
            return []                               # a name that cannot exist has no records
        except dns.exception.DNSException as e:
            raise DnsTempError(f"{rdtype} {name}: {type(e).__name__}") from None
        out: list[Record] = []
        for rdata in answer:
            if rdtype == "TXT":
                out.append(b"".join(rdata.strings))
            elif rdtype in ("A", "AAAA"):
                out.append(rdata.address)
            elif rdtype == "MX":
                out.append((rdata.preference, rdata.exchange.to_text(omit_final_dot=True)))
            else:
                out.append(rdata.target.to_text(omit_final_dot=True))
        return out


def _split_nameserver(value: str) -> tuple[str, int]:
    host, port = value, 53
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif value.count(":") == 1:
        host, _, p = value.partition(":")
        port = int(p)
    ipaddress.ip_address(host)          # ValueError for anything but an address
    return host, port


def check_resolver_spec(value: str) -> None:
    """Raise ValueError unless `value` is "system", "none" or a nameserver address."""
    if value not in ("system", "none"):
        _split_nameserver(value)


def make_resolver(spec: str, timeout: float = 5.0) -> Resolver:
    if spec == "none":
        return StaticResolver()
    return SystemResolver("" if spec == "system" else spec, timeout)


class StaticResolver:
    """A dictionary of answers, for tests (DNS is faked there) and offline checks.

    Keys are names (answers are TXT) or (name, type); values a record or a list of records; str
    TXT values are encoded. A name not listed has no records; a value `DnsTempError` raises it.
    """

    def __init__(self, answers: Mapping[object, object] | None = None) -> None:
        self.answers: dict[tuple[str, str], object] = {}
        self.queries: list[tuple[str, str]] = []
        for key, value in (answers or {}).items():
            self.add(key, value)

    def add(self, key: object, value: object) -> None:
        name, rdtype = key if isinstance(key, tuple) else (key, "TXT")
        self.answers[(_name(name), rdtype)] = value

    async def query(self, name: str, rdtype: str) -> list[Record]:
        key = (_name(name), rdtype)
        self.queries.append(key)
        value = self.answers.get(key, [])
        if value is DnsTempError or isinstance(value, DnsTempError):
            raise DnsTempError(f"{rdtype} {name}: injected failure")
        values = value if isinstance(value, list) else [value]
        return [v.encode() if rdtype == "TXT" and isinstance(v, str) else v for v in values]


class ThreadBridge:
    """Blocking look-ups for libraries running in a worker thread, answered on the event loop.

    Records the temporary failures it saw, so a caller can tell "no key" from "could not ask".
    """

    def __init__(self, resolver: Resolver, loop: asyncio.AbstractEventLoop, timeout: float = 5.0) -> None:
        self.resolver, self.loop, self.timeout = resolver, loop, timeout
        self.temp_errors: list[str] = []

    def query(self, name: str | bytes, rdtype: str) -> list[Record]:
        future = asyncio.run_coroutine_threadsafe(self.resolver.query(_name(name), rdtype), self.loop)
        try:
            return future.result(self.timeout + 1)
        except DnsTempError as e:
            self.temp_errors.append(str(e))
            raise
        except TimeoutError:
            future.cancel()
            self.temp_errors.append(f"{rdtype} {_name(name)}: timeout")
            raise DnsTempError(f"{rdtype} {_name(name)}: timeout") from None

    def txt(self, name: str | bytes, timeout: float = 5.0) -> bytes | None:
        """dkimpy's dnsfunc: the first TXT record of a name, or None."""
        import dkim

        try:
            records = self.query(name, "TXT")
        except DnsTempError as e:
            raise dkim.DnsTimeoutError(str(e)) from None
        return records[0] if records else None
