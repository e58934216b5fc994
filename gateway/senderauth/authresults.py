"""Sender authentication results: what the `auth` detector found, and the RFC 8601 header saying so.

The detector stores one `AuthResults` per message in `mail.context.auth` (gateway/context.py, a side
output of the inspection); the actions' `extra_headers` hook (`extra_headers` below)
turns it into ONE `Authentication-Results` header with our authserv-id. Before that, `prepare`
removes every arriving Authentication-Results header that claims our authserv-id
(`remove_claimed`, RFC 8601 section 5), so a sender cannot forge our verdict.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from gateway import headers
from gateway.config import Settings
from gateway.model import Mail, Verdict

MAX_VALUE = 1900                                             # under headers.safe_value's limit: never truncated there
_UNSAFE = re.compile(r"[^\x20-\x7e]")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~@]+")   # RFC 2045 token chars, plus '@' (RFC 8601 pvalue)


def authserv_id(settings: Settings) -> str:
    """`[auth] authserv_id`, else the SMTP host name, else the host's FQDN."""
    return (settings.auth.authserv_id or settings.smtp.hostname or socket.getfqdn()).lower()


@dataclass(frozen=True, slots=True)
class DkimResult:
    result: str            # pass | fail | neutral | temperror | permerror
    domain: str            # d=
    selector: str          # s=
    algorithm: str         # a=
    b: str                 # the first characters of b=, to tell signatures apart (RFC 6008)
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AuthResults:
    dkim: tuple[DkimResult, ...]
    spf: str                             # pass | fail | softfail | neutral | none | temperror | permerror
    spf_domain: str                      # the domain SPF checked (MAIL FROM's, or HELO's for the null sender)
    spf_identity: str                    # "mailfrom" | "helo"
    dmarc: tuple[object, ...]            # gateway.senderauth.dmarc.DmarcResult, one per From domain
    arc: str = "none"                    # pass | fail | none

    def header_value(self, authserv: str) -> str:
        items = []
        for d in self.dkim or ():
            items.append(f"dkim={d.result}{_reason(d.reason)} header.d={_v(d.domain)} header.s={_v(d.selector)}"
                         f" header.a={_v(d.algorithm)} header.b={_v(d.b)}")
        if not self.dkim:
            items.append("dkim=none")
        prop = "smtp.mailfrom" if self.spf_identity == "mailfrom" else "smtp.helo"
        items.append(f"spf={self.spf}" + (f" {prop}={_v(self.spf_domain)}" if self.spf_domain else ""))
        for m in self.dmarc:
            policy = f" (p={m.policy})" if m.policy else ""
            items.append(f"dmarc={m.result}{policy} header.from={_v(m.from_domain)}")
        if not self.dmarc:
            items.append("dmarc=none")
        items.append(f"arc={self.arc}")
        value = f"{authserv}; " + "; ".join(items)
        while len(value) > MAX_VALUE and len(items) > 4:       # keep the header one plain field: drop DKIM detail
            items.pop(len(self.dkim) - 1 if len(self.dkim) > 1 else 0)
            value = f"{authserv}; " + "; ".join(items)
        return value[:MAX_VALUE]


def _ascii(text: str, limit: int) -> str:
    """Printable ASCII of at most `limit` characters: what the header may carry unencoded."""
    return _UNSAFE.sub("?", text)[:limit].strip()


def _v(value: str) -> str:
    """A pvalue: a token as it is, anything else quoted (attacker-controlled domains and selectors)."""
    value = _ascii(value, 100)
    if value and _TOKEN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _reason(reason: str) -> str:
    if not reason:
        return ""
    text = re.sub(r"[()\\]", " ", _ascii(reason, 60))
    return f" ({text})"


def _strip_comments(text: str) -> str:
    """RFC 5322 comments (nested, with quoted pairs) replaced by spaces."""
    out, depth, escaped = [], 0, False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and depth:
            escaped = True
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            out.append(" ")
        elif not depth:
            out.append(ch)
    return "".join(out)


def claimed_authserv_id(field: bytes) -> str:
    """The authserv-id an Authentication-Results field claims (lower case), '' when unreadable."""
    _, _, value = field.partition(b":")
    text = value.decode("utf-8", "replace").replace("\r", " ").replace("\n", " ")
    text = _strip_comments(text[:2000]).strip()
    return re.split(r"[\s;]", text, maxsplit=1)[0].lower() if text else ""


def remove_claimed(raw: bytes, authserv: str) -> bytes:
    """The message without Authentication-Results fields that claim `authserv` (RFC 8601 section 5)."""
    fields, sep, body = headers.split(raw)
    ours = authserv.lower()
    kept = [f for f in fields
            if headers.field_name(f) != "authentication-results" or claimed_authserv_id(f) != ours]
    if len(kept) == len(fields):
        return raw
    return b"".join(kept) + (sep or b"\r\n") + body


def header_value(mail: Mail, authserv: str) -> str:
    """Our Authentication-Results value for this mail: from the auth detector's results, or on a release
    the one stored at receipt; '' when there is none."""
    results = mail.context.auth
    if results is not None:
        return results.header_value(authserv)
    return mail.context.received_auth


def extra_headers(settings: Settings):
    """The actions' hook: our Authentication-Results header, when the auth detector ran on this mail
    (or, on a release, ran when it arrived)."""
    authserv = authserv_id(settings)

    def hook(mail: Mail, verdict: Verdict) -> list[tuple[str, str]]:
        value = header_value(mail, authserv)
        return [("Authentication-Results", value)] if value else []

    return hook
