"""Which notices a hold or a decision makes: outbox rows, written by the store in the same transaction
as the hold (Store.hold(item, notices)), sent later by the notifier (gateway/notify/notifier.py).

A row carries only what its template may show: the quarantine id, subject, date, envelope, the
rule's notice (citing the policy provision) and the findings' details with their evidence, which
the detectors have already masked. Never body text. Links (the sender's release-request link, the
ITSD message page) are made when the notice is sent, so they expire counted from then.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import email.policy
import logging
import math
import os
import time
from datetime import UTC, datetime, timedelta

from gateway.config import ConfigError, Settings
from gateway.findinggroups import grouped
from gateway.headers import header_text, safe_value
from gateway.model import Mail, Verdict
from gateway.notify.audience import audience, load_supervisors
from gateway.quarantine import HeldItem, OutboxNotice

log = logging.getLogger("gateway.notify")

MAX_HEADER_BYTES = 64 * 1024


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def held_context(item: HeldItem, notice: str = "") -> dict:
    """The facts of a held message a notice may show (masked evidence only, no body text)."""
    notice = notice or item.extra.get("notice") or f"The message matched the rule {item.rule} of the mail policy."
    return {"id": item.id, "subject": header_text(item.subject, 300), "date": when(item.received_at),
            "received": when(item.received_at), "mail_from": item.mail_from or "<>",
            "rcpt_tos": list(item.rcpt_tos)[:50], "rule": item.rule, "kinds": list(item.kinds),
            "notice": notice, "provision": str(item.extra.get("provision", "")),
            "findings": [{"detail": safe_value("; ".join(g.details)),      # one line per part and detector
                          "part": safe_value(g.part if g.part != "message" else ""), "evidence": list(g.evidence)[:5]}
                         for g in grouped(item.findings)[:20]]}


def next_boundary(now: float, mode: str, settings: Settings) -> float:
    """When a digest that collects `now`'s notice goes out: aligned, so one person's rows share it."""
    if mode == "hourly":
        return math.floor(now / 3600) * 3600 + 3600
    if mode == "daily":
        moment = datetime.fromtimestamp(now, UTC).replace(hour=settings.notify.daily_hour, minute=0, second=0,
                                                         microsecond=0)
        if moment.timestamp() <= now:
            moment += timedelta(days=1)
        return moment.timestamp()
    step = max(60, settings.notify.itsd_digest_minutes * 60)      # the ITSD digest
    return math.floor(now / step) * step + step


def headers_of(raw: bytes | None) -> email.message.Message:
    """The header block of a stored message (bounded), for the automatic-mail checks at decision time."""
    if not raw:
        return email.message.Message()
    head = raw[:MAX_HEADER_BYTES]
    return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)


class Planner:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._supervisors: dict[str, str] = {}
        self._mtime: float | None = None
        path = settings.notify.supervisors
        try:                            # a missing or unreadable file stops start-up, naming it
            self._mtime = os.stat(path).st_mtime if path else None
            self._supervisors = load_supervisors(path)
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{settings.source}: [notify] supervisors: cannot read {path}: {e}") from None

    @property
    def supervisors(self) -> dict[str, str]:
        """The CSV mapping, read again when the file changed (a bad new version keeps the old one)."""
        path = self.settings.notify.supervisors
        if path:
            try:
                mtime = os.stat(path).st_mtime
                if mtime != self._mtime:
                    self._supervisors, self._mtime = load_supervisors(path), mtime
            except (OSError, UnicodeDecodeError) as e:
                log.warning("supervisors file %s unreadable, keeping the last version: %s", path, e)
        return self._supervisors

    def mode(self, address: str) -> str:
        return self.settings.notify.digest_modes.get(address.lower(), self.settings.notify.digest)

    def held(self, mail: Mail, item: HeldItem, verdict: Verdict) -> list[OutboxNotice]:
        """The notices a hold makes: the internal party (digest or not), a supervisor, ITSD."""
        settings, now = self.settings, time.time()
        context = held_context(item, verdict.notice)
        people = audience(settings, direction=item.direction, mail_from=item.mail_from, rcpt_tos=item.rcpt_tos,
                          message=mail.parsed.message, targets=verdict.notify - {"itsd"},
                          supervisors=self.supervisors)
        notices = []
        for person in people:
            mode = self.mode(person.address)
            digest = "" if mode == "immediate" or person.role == "supervisor" else mode
            notices.append(OutboxNotice(person.address, "held", person.role, context, item.id, digest,
                                        next_boundary(now, mode, settings) if digest else 0.0))
        itsd = settings.notify.itsd
        if itsd and all(p.address.lower() != itsd.lower() for p in people):
            urgent = "itsd" in verdict.notify or bool(set(item.categories) & set(settings.notify.itsd_immediate))
            if urgent:
                notices.append(OutboxNotice(itsd, "itsd", "itsd", context, item.id))
            elif settings.notify.itsd_digest_minutes > 0:
                notices.append(OutboxNotice(itsd, "itsd", "itsd", context, item.id, "itsd",
                                            next_boundary(now, "itsd", settings)))
        return notices

    def requested(self, item: HeldItem, address: str, justification: str) -> list[OutboxNotice]:
        """A sender's release request, to ITSD: at once for the categories ITSD hears of at once (or when
        there is no ITSD digest), else in the ITSD digest. None without an ITSD address."""
        settings = self.settings
        itsd = settings.notify.itsd
        if not itsd:
            return []
        context = {**held_context(item), "requested_by": header_text(address, 320),
                   "justification": safe_value(justification[:2000])}
        urgent = bool(set(item.categories) & set(settings.notify.itsd_immediate))
        if urgent or settings.notify.itsd_digest_minutes <= 0:
            return [OutboxNotice(itsd, "itsd", "itsd", context, item.id)]
        return [OutboxNotice(itsd, "itsd", "itsd", context, item.id, "itsd", next_boundary(time.time(), "itsd",
                                                                                             settings))]

    def decided(self, item: HeldItem, outcome: str, reason: str = "", to: str = "") -> list[OutboxNotice]:
        """released | deleted | answered: to the internal sender (or to `to`, the requester)."""
        context = {"id": item.id, "subject": header_text(item.subject, 300), "outcome": outcome,
                   "reason": reason[:2000], "date": when(item.received_at)}
        if to:
            return [OutboxNotice(to, "decided", "sender", context, item.id)]
        people = audience(self.settings, direction=item.direction, mail_from=item.mail_from, rcpt_tos=item.rcpt_tos,
                          message=headers_of(item.raw), targets=frozenset({"sender"}), supervisors={})
        return [OutboxNotice(p.address, "decided", p.role, context, item.id) for p in people]
