"""Carry out a verdict: deliver / tag via the next hop, quarantine, reject or tempfail.

Returns the SMTP reply for the client, whichever front end received the message (every reply text
is written here), and the promise holds here: 250 only after the next hop accepted the message or
the quarantine committed it; our own failures answer 4xx.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from gateway import headers
from gateway.config import Settings
from gateway.model import Action, Direction, Mail, Verdict
from gateway.quarantine import HeldItem, Store, StoreError
from gateway.relay import Reply
from gateway.senderauth import authresults

if TYPE_CHECKING:
    from gateway.handling import Handoff
    from gateway.notify.plan import Planner

log = logging.getLogger("gateway.actions")

OUR_HEADERS = frozenset({"x-gateway-id", "x-gateway-verdict", "x-gateway-findings", "x-gateway-scanned"})
TEMPFAIL_INTERNAL = "451 4.3.0 Temporary local problem, please try again later"

# A finisher sees the message about to be relayed, after every modification, and returns it changed
# (DKIM signing, ARC sealing). Finishers run in order.
Finisher = Callable[[Mail, Verdict, bytes], Awaitable[bytes]]


HeaderSource = Callable[[Mail, Verdict], list[tuple[str, str]]]


def header_sources(*sources: HeaderSource) -> HeaderSource:
    """Several producers of extra headers (Authentication-Results, X-Gateway-Scanned) as one."""
    def headers(mail: Mail, verdict: Verdict) -> list[tuple[str, str]]:
        return [h for source in sources for h in source(mail, verdict)]
    return headers


def findings_summary(verdict: Verdict) -> str:
    """'kind (detail; part), ...' for the X-Gateway-Findings header. The review page and the notice show
    the same fields of each finding in their own layout; the log line carries only the kinds."""
    return ", ".join(f"{f.kind} ({f.detail}{'; ' + f.part if f.part else ''})" for f in verdict.findings)


OUTBOUND_HEADERS = frozenset({"x-gateway-id", "x-gateway-verdict", "x-gateway-scanned"})


def prepare(settings: Settings, mail: Mail, verdict: Verdict, extra_headers: list[tuple[str, str]] = (),
            authserv_id: str = "") -> bytes:
    """The relayed form of the message: look-alikes of our headers removed, ours added, subject tagged.

    Outbound mail (a recipient outside) carries only X-Gateway-Id, the bare action in
    X-Gateway-Verdict and X-Gateway-Scanned: rule names and findings stay inside (the log has them).
    With `authserv_id`, arriving Authentication-Results headers that claim it are removed too."""
    outbound = mail.direction is Direction.OUTBOUND
    verdict_value = str(verdict.action) if outbound else f"{verdict.action}; rule={verdict.rule}"
    add = [("X-Gateway-Id", mail.id), ("X-Gateway-Verdict", verdict_value)]
    add += [(name, value) for name, value in extra_headers if not outbound or name.lower() in OUTBOUND_HEADERS]
    tagged = verdict.action is Action.TAG
    if tagged and verdict.findings and not outbound:
        add.append(("X-Gateway-Findings", findings_summary(verdict)))
    prefix = " ".join(verdict.tags) if tagged else ""
    raw = authresults.remove_claimed(mail.raw, authserv_id) if authserv_id else mail.raw
    return headers.rewrite(raw, remove=OUR_HEADERS, add=add, subject_prefix=prefix)


class Actions:
    def __init__(self, settings: Settings, store: Store, finishers: list[Finisher] | None = None,
                 extra_headers: HeaderSource | None = None,
                 planner: Planner | None = None) -> None:
        self.settings = settings
        self.store = store
        self.finishers = finishers or []
        self.extra_headers = extra_headers
        self.planner = planner          # the notices a hold makes, written in the hold's transaction
        self.authserv_id = authresults.authserv_id(settings)    # its forged Authentication-Results go

    async def relayable(self, mail: Mail, verdict: Verdict) -> bytes:
        extra = self.extra_headers(mail, verdict) if self.extra_headers else []
        message = prepare(self.settings, mail, verdict, extra, self.authserv_id)
        for finish in self.finishers:
            message = await finish(mail, verdict, message)
        return message

    async def apply(self, mail: Mail, verdict: Verdict, handoff: Handoff) -> str:
        """Carry out the verdict; the SMTP reply for the client, whichever front end it reached."""
        action = verdict.action
        if action in (Action.DELIVER, Action.TAG) or (action is Action.QUARANTINE and handoff.holds):
            return await handoff.pass_on(mail, verdict, await self.relayable(mail, verdict))
        await handoff.drop()
        if action is Action.QUARANTINE:
            return await self.hold(mail, verdict)
        return refusal(verdict)

    async def hold(self, mail: Mail, verdict: Verdict) -> str:
        # kept for the release, which writes it again: the auth checks judge the arrival and do not re-run
        item = replace(HeldItem.from_mail(mail, verdict),
                       auth_results=authresults.header_value(mail, self.authserv_id))
        notices = []
        if self.planner is not None:
            try:
                notices = self.planner.held(mail, item, verdict)
            except Exception:     # a notifier failure never loses, delays or blocks mail
                log.exception("planning the notices for %s failed; held without notices", mail.id)
        try:
            await self.store.hold(item, notices)
        except StoreError:
            log.exception("quarantine write failed for %s", mail.id)
            return TEMPFAIL_INTERNAL
        return f"250 2.0.0 Ok: queued as {mail.id}"

    async def notify_hold_queue(self, mail: Mail, verdict: Verdict, queue_id: str) -> None:
        """The notices of a hold for a message the MTA keeps in its hold queue (the milter's postfix-hold
        mode): the same people as a hold in our store, told the MTA's queue id and given no review or
        release-request link, since the review app cannot see the message. Never affects the message."""
        if self.planner is None:
            return
        try:
            item = HeldItem.from_mail(mail, verdict)
            extra = {"hold_queue": True, "queue_id": queue_id or "unknown", "url": "", "request_url": ""}
            notices = [dataclasses.replace(n, held_id=None, context={**n.context, **extra})
                       for n in self.planner.held(mail, item, verdict)]
            await self.store.enqueue(notices)
        except Exception:     # a notifier failure never loses, delays or blocks mail
            log.exception("the notices for %s (queue id %s) in the MTA's hold queue failed", mail.id, queue_id)


def refusal(verdict: Verdict) -> str:
    """The reply to a reject or tempfail verdict: the rule's own text, or ours."""
    if verdict.action is Action.REJECT:
        return f"550 5.7.1 {headers.safe_value(verdict.reply or 'Message refused by policy', 400)}"
    return f"451 4.7.1 {headers.safe_value(verdict.reply or 'Message deferred by policy', 400)}"


def client_reply(reply: Reply, mail_id: str) -> str:
    """What the client hears after the next hop answered DATA."""
    if reply.ok:
        return f"250 2.0.0 Ok: queued as {mail_id}"
    if reply.permanent:
        return f"{reply.code} {headers.safe_value(reply.message, 400)}"
    return "451 4.4.0 Next hop deferred the message, please try again later"
