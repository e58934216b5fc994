"""external_email (outbound): department mail forwarded to personal web-mail services, by a forwarding
rule or by hand to the sender's own mailbox.

Policy, the section headed "Policy": "The department provides an internal e-mail system for staff
use. Use of other e-mail and similar services is prohibited. This prohibition includes "Web-based" e-mail services".

A recipient in a domain of policies/webmail_domains.txt is required; then the score adds:
- automatic forwarding headers (Auto-Submitted: auto-forwarded, X-Forwarded-To/For, Resent-*, the
  Exchange and Outlook auto-forward markers): 1.0;
- a message written outside the department re-sent by a department envelope sender: 0.6;
- a forward ("Fwd:" subject or forwarded-message separator) to a web-mail address that looks like the
  sender's own (same name in the local part): 1.0; the same look-alike address without a forward: 0.4.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from gateway.config import Settings
from gateway.detectors.base import options_with_defaults
from gateway.matching.domains import domain_in, read_domains
from gateway.model import Finding, Mail

DEFAULTS = {"threshold": 1.0, "domains": "webmail_domains.txt"}
FORWARD_HEADERS = ("x-forwarded-to", "x-forwarded-for", "x-forwarded-by", "resent-from", "resent-to",
                   "resent-sender", "resent-date", "resent-message-id", "x-ms-exchange-inbox-rules-loop",
                   "x-ms-exchange-forwardingloop", "x-autoforwarded", "x-ms-exchange-organization-autoforwarded",
                   "x-mailfwdby")
_FWD_SUBJECT = re.compile(r"(?i)^\s*(?:\[[^\]]*\]\s*)?(?:fwd?|fw|tr|wg|rv)\s*:")
_FWD_BODY = re.compile(rb"(?im)^[ >]*(?:-{2,} ?(?:original message|forwarded message)|begin forwarded message)")
_NAME = re.compile(r"[a-z]{3,}")


def name_parts(local: str) -> set[str]:
    return set(_NAME.findall(local.lower()))


def looks_like_own(sender: str, recipient: str) -> bool:
    """alice.smith@example.gov -> alicesmith1@gmail.com, smith.alice@..., asmith@...: the same person?"""
    s_local = sender.rpartition("@")[0].lower()
    r_local = recipient.rpartition("@")[0].lower()
    s_flat = re.sub(r"[^a-z]", "", s_local)
    r_flat = re.sub(r"[^a-z]", "", r_local)
    if len(s_flat) >= 4 and (s_flat in r_flat or r_flat == s_flat):
        return True
    parts = name_parts(s_local)
    return len(parts) >= 2 and all(p in r_flat for p in parts)


class ExternalEmail:
    name: ClassVar[str] = "external_email"
    kinds: ClassVar[frozenset[str]] = frozenset({"external_email.autoforward", "external_email.self_forward"})

    def __init__(self, settings: Settings, options: Mapping[str, Any]) -> None:
        opts = options_with_defaults(self.name, options, DEFAULTS)
        self.threshold = opts["threshold"]
        self.settings = settings
        self.domains = read_domains(Path(settings.policy.dir) / opts["domains"])

    async def check(self, mail: Mail) -> list[Finding]:
        webmail = [(r, d) for r in mail.envelope.rcpt_tos
                   if not self.settings.is_local(r) and (d := domain_in(r, self.domains))]
        if not webmail:
            return []
        message = mail.parsed.message
        sender = mail.envelope.mail_from
        score, evidence, kind = 0.0, [], "external_email.autoforward"
        present = [h for h in FORWARD_HEADERS if message.get(h) is not None]
        auto = mail.parsed.header("Auto-Submitted").strip().lower()
        if auto.startswith("auto-forwarded") or auto.startswith("auto-generated"):
            present.insert(0, f"auto-submitted: {auto[:40]}")
        if present:
            score += 1.0
            evidence.append("forwarding headers: " + ", ".join(present[:4]))
        author = email.utils.parseaddr(mail.parsed.header("From"))[1]
        if author and sender and self.settings.is_local(sender) and not self.settings.is_local(author):
            score += 0.6
            evidence.append(f"written by {author} outside the department, re-sent by {sender}")
        own = [r for r, _ in webmail if sender and self.settings.is_local(sender) and looks_like_own(sender, r)]
        if own:
            forwarded = bool(_FWD_SUBJECT.match(mail.parsed.subject)) or bool(_FWD_BODY.search(mail.raw[:200_000]))
            score += 1.0 if forwarded else 0.4
            evidence.append(f"{'forwarded ' if forwarded else ''}to {own[0]}, which looks like the sender's own "
                            f"address")
            if not present:
                kind = "external_email.self_forward"
        if score < self.threshold:
            return []
        services = ", ".join(dict.fromkeys(d for _, d in webmail))
        how = "automatically forwarded to a personal" if kind.endswith("autoforward") else \
            "forwarded by the sender to their own"
        return [Finding(kind=kind, detector=self.name, score=round(score, 2),
                        evidence=(f"recipient {webmail[0][0]} ({webmail[0][1]})", *evidence),
                        detail=f"Department mail {how} web-mail account ({services})")]
