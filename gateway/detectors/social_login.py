"""social_login (inbound): notices from social networking services sent to a department address:
sign-up confirmations, logins, password resets, new followers. They show that the address is used as
a login name, which the policy prohibits.

Policy, the section headed "Policy": "Employees are prohibited from representing the department by using a
department email address as their login name, user handle, in their personal profiles, or when
posting, blogging, or tweeting."

Fires when the sender (From: or envelope) is in a domain of policies/social_networks.txt, a recipient is
a department address, and the subject or body reads as an account notice (policies/lexicons/social_login.txt).
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from gateway.config import Settings
from gateway.detectors.base import options_with_defaults
from gateway.matching.domains import domain_in, read_domains
from gateway.matching.weighted import Lexicon, distinct, excerpt
from gateway.message.text import message_text
from gateway.model import Finding, Mail

DEFAULTS = {"threshold": 1.0, "domain_weight": 0.7, "domains": "social_networks.txt",
            "lexicon": "lexicons/social_login.txt", "max_chars": 20_000}
KINDS = ("password_reset", "login", "signup", "follower")
LABEL_TEXT = {"password_reset": "password reset", "login": "login notice", "signup": "sign-up confirmation",
              "follower": "follower or connection notice"}


class SocialLogin:
    name: ClassVar[str] = "social_login"
    kinds: ClassVar[frozenset[str]] = frozenset({f"social_login.{k}" for k in (*KINDS, "notice")})

    def __init__(self, settings: Settings, options: Mapping[str, Any]) -> None:
        opts = options_with_defaults(self.name, options, DEFAULTS)
        self.opts = opts
        self.settings = settings
        base = Path(settings.policy.dir)
        self.domains = read_domains(base / opts["domains"])
        self.lexicon = Lexicon.load(base / opts["lexicon"])

    async def check(self, mail: Mail) -> list[Finding]:
        if not any(self.settings.is_local(r) for r in mail.envelope.rcpt_tos):
            return []
        from_address = email.utils.parseaddr(mail.parsed.header("From"))[1]
        service = domain_in(from_address, self.domains) or domain_in(mail.envelope.mail_from, self.domains)
        if not service:
            return []
        text = (await message_text(mail, self.settings)).joined()[: self.opts["max_chars"]]
        hits = distinct(self.lexicon.scan(text))
        score = self.opts["domain_weight"] + sum(h.entry.weight for h in hits)
        if score < self.opts["threshold"]:
            return []
        labels = {h.entry.label for h in hits}
        first = next((k for k in KINDS if k in labels), "notice")
        what = ", ".join(LABEL_TEXT[k] for k in KINDS if k in labels) or "account notice"
        recipients = [r for r in mail.envelope.rcpt_tos if self.settings.is_local(r)]
        evidence = [f"sender {from_address or mail.envelope.mail_from} ({service})",
                    f"to department address {recipients[0]}"]
        evidence += [f"{h.entry.label.replace('_', ' ')}: {excerpt(text, h.start, h.size, 25)}" for h in hits[:3]]
        return [Finding(kind=f"social_login.{first}", detector=self.name, score=round(score, 2),
                        evidence=tuple(evidence),
                        detail=f"A social networking service ({service}) sent a {what} to a department "
                               f"address: the address appears to be used as a login name")]
