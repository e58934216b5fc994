"""Release, delete, note and legal hold of held items: the one service behind the CLI, the review
app and the API, so every path checks the same roles and writes the same audit rows.

A release:
  1. checks the role against every finding the item has had, at hold or by any re-scan (a virus, or
     a rule with release_role = "admin", needs an admin), and that there is a reason; an admin
     releasing a virus confirms it by its signature name (`confirm`), or is refused;
  2. records the approval; a rule with `approvals = 2` needs two different reviewers, and the
     second approval performs the release;
  3. claims the item atomically (held -> releasing): a concurrent release, from this node or
     another, finds it claimed and stops, so the message is delivered once;
  4. re-scans the stored message with the current detectors and policy and records its findings on
     the item (every re-scan does, also one from the review page); if step 1 would now refuse, or
     the re-scan found kinds the item did not have, the release stops (back to held, the findings
     shown to the reviewer): asking again runs step 1 on them, so a virus found now needs an admin
     who names it, however often a reviewer asks;
  5. delivers the original message with the original envelope through the live delivery path
     (Actions.relayable: our headers, with the Authentication-Results of its receipt and the
     re-scan's X-Gateway-Scanned, and finishers such as DKIM signing; relay.deliver),
     with the same log line and metrics as received mail (gateway/handling.py, front "release");
  6. marks it released (or held again for recipients still to go), or puts it back to held with
     the next hop's error.
A crash between 3 and 6 leaves the item in `releasing`; `recover_stuck` (at start-up and on purge)
returns it to held after `[quarantine] stuck_release_minutes`.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field, replace

from gateway import handling, relay
from gateway.actions import Actions
from gateway.config import Settings
from gateway.model import Action, Direction, Envelope, Mail, Verdict
from gateway.pipeline import Pipeline
from gateway.quarantine import HeldItem, Store, User

log = logging.getLogger("gateway.release")


class Refused(Exception):
    """The action is not allowed or not possible; the message says why, for the reviewer."""

    def __init__(self, message: str, *, status: int = 409) -> None:
        super().__init__(message)
        self.status = status      # 403: the role may not; 404: no such item; 409/422: not now / bad input


class ConfirmVirus(Refused):
    """An admin releasing a virus did not name it (or named another): 422."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=422)


def confirmed(names: tuple[str, ...], confirm: str) -> bool:
    """`confirm` names every virus in `names` (several: separated by commas or spaces), exactly."""
    given = set(re.split(r"[\s,]+", (confirm or "").strip())) - {""}
    return bool(names) and all(name in given for name in names)


@dataclass(frozen=True)
class Rescan:
    rule: str
    action: str
    kinds: tuple[str, ...]
    added: tuple[str, ...]        # kinds the re-scan found that the item did not have
    removed: tuple[str, ...]      # kinds the item had that the re-scan no longer finds
    findings: tuple[dict, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)

    def as_dict(self) -> dict[str, object]:
        return {"rule": self.rule, "action": self.action, "kinds": list(self.kinds), "added": list(self.added),
                "removed": list(self.removed), "findings": list(self.findings), "at": time.time()}


@dataclass
class Outcome:
    status: str                   # released | partly-released | approved | failed
    message: str
    item: HeldItem | None = None
    rescan: Rescan | None = None
    refused: dict[str, str] = field(default_factory=dict)   # recipient -> next hop's reply
    stopped: bool = False         # failed because of the re-scan (not the next hop)

    def as_dict(self) -> dict[str, object]:
        return {"status": self.status, "message": self.message, "id": self.item.id if self.item else None,
                "item_status": self.item.status if self.item else None,
                "rescan": self.rescan.as_dict() if self.rescan else None, "refused": self.refused}


def may(user: User, action: str, item: HeldItem | None = None) -> bool:
    """The role check used everywhere (pages show only what `may` allows; the service enforces it)."""
    if user.disabled:
        return False
    if user.role == "admin":
        return True
    if action in ("download", "legal-hold", "users"):
        return False
    if action == "release" and item is not None:
        return item.release_role != "admin"
    return action in ("view", "release", "delete", "note")


class ReleaseService:
    def __init__(self, settings: Settings, store: Store, pipeline: Pipeline, actions: Actions) -> None:
        self.settings = settings
        self.store = store
        self.pipeline = pipeline
        self.actions = actions

    async def _item(self, item_id: str) -> HeldItem:
        item = await self.store.get(item_id, with_raw=False)
        if item is None:
            raise Refused(f"No held message {item_id}", status=404)
        return item

    async def rescan(self, item: HeldItem) -> Rescan:
        """The stored message through today's detectors and policy, compared with what the item had;
        its findings are recorded on the item (a virus found now needs an admin from now on)."""
        return (await self._rescan(item))[0]

    async def _rescan(self, item: HeldItem) -> tuple[Rescan, Mail]:
        """The re-scan and the message as it scanned it (with the scanner's notes, for our headers)."""
        if item.raw is None:
            item = await self.store.get(item.id, with_raw=True) or item
        if item.raw is None:
            raise Refused("The message content was purged; it cannot be re-scanned or released")
        inspection = await self.pipeline.inspect(self._envelope(item), item.raw, direction=Direction(item.direction),
                                                 mail_id=item.id, received_at=item.received_at,
                                                 earlier=item.findings)
        verdict = inspection.verdict
        before = set(item.kinds)
        rescan = Rescan(rule=verdict.rule, action=verdict.action.value, kinds=verdict.kinds,
                        added=tuple(k for k in verdict.kinds if k not in before),
                        removed=tuple(k for k in item.kinds if k not in verdict.kinds),
                        findings=tuple(f.as_dict() for f in verdict.findings))
        extra: dict[str, object] = {"rescan": rescan.as_dict()}
        if verdict.options.get("release_role") == "admin":
            extra["rescan_release_role"] = "admin"
        await self.store.record_rescan(item.id, verdict.findings, extra)
        return rescan, inspection.mail

    async def _check_role(self, item: HeldItem, user: User, reason: str, audit: bool = True) -> None:
        """Step 1's role check, on every finding recorded so far: raises Refused (audited)."""
        if not may(user, "release", item):
            if audit:
                await self.store.audit(user.name, "release-denied", item.id, reason, {"role": user.role})
            raise Refused(f"Releasing this message needs the {item.release_role} role"
                          f"{' (it contains a virus)' if 'virus' in item.categories else ''}", status=403)

    async def _check_confirm(self, item: HeldItem, user: User, reason: str, confirm: str,
                             audit: bool = True) -> None:
        """A virus found at hold or by any re-scan is released only when named: raises ConfirmVirus (audited)."""
        names = item.virus_names
        if names and not confirmed(names, confirm):
            if audit:
                given = "wrong" if (confirm or "").strip() else "missing"
                await self.store.audit(user.name, "release-denied", item.id, reason,
                                       {"role": user.role, "confirm": given})
            raise ConfirmVirus("This message contains a virus: to release it, confirm the virus by its signature "
                               "name (shown with the findings; several: all of them, separated by commas)")

    @staticmethod
    def _envelope(item: HeldItem, rcpts: tuple[str, ...] | None = None) -> Envelope:
        return Envelope(mail_from=item.mail_from, rcpt_tos=rcpts or item.rcpt_tos,
                        client_address=item.client_address, helo=item.helo)

    async def release(self, item_id: str, user: User, reason: str, rcpts: list[str] | None = None, *,
                      confirm: str = "") -> Outcome:
        """`confirm`: the signature name of the virus, when the item has one (an admin's release)."""
        reason = (reason or "").strip()
        item = await self._item(item_id)
        await self._check_role(item, user, reason)
        if not reason:
            raise Refused("A reason is required to release a message", status=422)
        await self._check_confirm(item, user, reason, confirm)
        if item.status != "held":
            raise Refused(f"The message is {item.status}, not held: nothing to release")
        wanted = tuple(rcpts) if rcpts else item.pending_rcpts
        unknown = [r for r in wanted if r not in item.rcpt_tos]
        if unknown:
            raise Refused(f"Not a recipient of this message: {', '.join(unknown)}", status=422)
        wanted = tuple(r for r in wanted if r not in item.released_to)
        if not wanted:
            raise Refused("Those recipients already have the message")

        approvers = await self.store.approve(item_id, user.name, reason)
        if len(approvers) < item.approvals_required:
            await self.store.audit(user.name, "approve", item_id, reason, {"approvers": approvers})
            return Outcome("approved", f"Approval recorded ({len(approvers)} of {item.approvals_required}); "
                                       "another reviewer must approve before the message is released", item)

        claimed = await self.store.claim(item_id, user.name)
        if claimed is None:
            current = await self.store.get(item_id, with_raw=False)
            raise Refused(f"The message is {current.status if current else 'gone'}: "
                          "someone else released or deleted it just now")
        try:
            return await self._deliver(claimed, user, reason, wanted, approvers, confirm)
        except BaseException as e:
            # anything unexpected (including cancellation): back to held, never stuck in releasing
            await self.store.unclaim(item_id, f"Release failed: {type(e).__name__}")
            raise

    async def _deliver(self, item: HeldItem, user: User, reason: str, rcpts: tuple[str, ...],
                       approvers: list[str], confirm: str) -> Outcome:
        try:
            rescan, scanned = await self._rescan(item)
            recorded = await self.store.get(item.id, with_raw=False)
            assert recorded is not None
            try:
                await self._check_role(recorded, user, reason, audit=False)      # audited as release-stopped
                await self._check_confirm(recorded, user, reason, confirm, audit=False)
                problem = ""
            except Refused as e:
                problem = str(e)
        except Refused as e:
            await self.store.unclaim(item.id, str(e))
            raise
        if problem or rescan.added:
            found = tuple(n for n in recorded.virus_names if n not in item.virus_names)
            if found:
                message = (f"The re-scan found a virus ({', '.join(found)}): "
                           + ("only an admin can release it" if user.role != "admin" else
                              "review it; an admin releases it only by confirming it by name"))
            elif problem:
                message = f"Not released: {problem}"
            else:
                message = "Not released: the re-scan found new findings; review them, then release again"
            await self.store.unclaim(item.id, message)
            await self.store.audit(user.name, "release-stopped", item.id, reason, {"rescan": rescan.as_dict()})
            return Outcome("failed", message, await self.store.get(item.id, with_raw=False), rescan, stopped=True)

        assert item.raw is not None
        # the message as the re-scan read it (its scanner notes give X-Gateway-Scanned), for these recipients,
        # with the Authentication-Results of its receipt (the auth checks judge the arrival: not run again)
        mail = replace(scanned, envelope=replace(scanned.envelope, rcpt_tos=rcpts))
        if item.auth_results:
            mail.context.received_auth = item.auth_results
        started = time.perf_counter()
        verdict = Verdict(Action.DELIVER, item.rule, item.findings)
        message = await self.actions.relayable(mail, verdict)
        delivery = await relay.deliver(self.settings.relay, item.mail_from, rcpts, message)
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        handling.record("release", mail, verdict, str(delivery.reply), {"action": elapsed, "total": elapsed})
        refused = {r: str(reply) for r, reply in delivery.recipients.items() if not reply.ok}
        detail = {"rcpts": list(rcpts), "approvers": approvers, "rescan": rescan.as_dict(),
                  "reply": str(delivery.reply), "refused": refused}
        if not delivery.ok:
            error = f"Next hop did not accept the message: {delivery.reply}"
            await self.store.unclaim(item.id, error)
            await self.store.audit(user.name, "release-failed", item.id, reason, detail)
            return Outcome("failed", error, await self.store.get(item.id, with_raw=False), rescan, refused)
        done = await self.store.finish_release(item.id, user.name, delivery.accepted)
        await self.store.audit(user.name, "release", item.id, reason, {**detail, "accepted": delivery.accepted})
        log.info("released %s to %s by %s", item.id, ", ".join(delivery.accepted), user.name)
        if done.status == "released":
            await self._tell(done, "released", reason, user.name)
            text = f"Released to {', '.join(delivery.accepted)}"
            status = "released"
        else:
            text = f"Released to {', '.join(delivery.accepted)}; still held for {', '.join(done.pending_rcpts)}"
            status = "partly-released"
        if refused:
            text += f" (refused: {', '.join(refused)})"
        return Outcome(status, text, done, rescan, refused)

    async def delete(self, item_id: str, user: User, reason: str) -> Outcome:
        reason = (reason or "").strip()
        item = await self._item(item_id)
        if not may(user, "delete", item):
            raise Refused("Your role may not delete messages", status=403)
        if not reason:
            raise Refused("A reason is required to delete a message", status=422)
        if not await self.store.delete(item_id, user.name):
            current = await self.store.get(item_id, with_raw=False)
            raise Refused(f"The message is {current.status if current else 'gone'}, not held: nothing to delete")
        await self.store.audit(user.name, "delete", item_id, reason)
        await self._tell(item, "deleted", reason, user.name)
        return Outcome("deleted", "Deleted: the message will not be delivered",
                       await self.store.get(item_id, with_raw=False))

    # --- notices and the sender's release requests (gateway/notify/, docs/notifications.md) -----------

    @property
    def planner(self):
        return getattr(self.actions, "planner", None)

    async def _tell(self, item: HeldItem, outcome: str, reason: str, by: str) -> None:
        """A decision goes to the internal sender; the reviewer's reason only answers a release request.
        Never fails the release or delete that called it."""
        try:
            request = await self.store.release_request(item.id)
            if request is not None and request.answered_at is None:
                await self.store.answer_request(item.id, by, f"{outcome}: {reason}")
            if self.planner is None:
                return
            full = await self.store.get(item.id, with_raw=True) or item
            notices = self.planner.decided(full, outcome, reason if request else "")
            if request and not notices:        # a requester the audience rules out is still answered
                notices = self.planner.decided(full, outcome, reason, to=request.address)
            await self.store.enqueue(notices)
        except Exception:
            log.exception("could not queue the %s notice for %s", outcome, item.id)

    async def request(self, item_id: str, address: str, justification: str) -> None:
        """The sender asks for release (from the link in their notice); shown in the review queue."""
        justification = (justification or "").strip()
        item = await self._item(item_id)
        if item.status != "held":
            raise Refused(f"The message is {item.status}, not held: there is nothing to request")
        if len(justification) < 10:
            raise Refused("Please give a business justification (at least a sentence)", status=422)
        await self.store.request_release(item_id, address, justification)
        await self.store.audit(address, "release-requested", item_id, justification, {"via": "sender link"})
        if self.planner is not None:
            try:
                await self.store.enqueue(self.planner.requested(item, address, justification))
            except Exception:          # the request stands (the queue shows it) even if the notice cannot be queued
                log.exception("could not queue the ITSD notice of the release request for %s", item_id)

    async def withdraw(self, item_id: str, address: str) -> None:
        """The sender withdraws their held message: deleted, never delivered."""
        item = await self._item(item_id)
        if not await self.store.delete(item_id, f"{address} (sender)"):
            raise Refused(f"The message is {item.status}, not held: there is nothing to withdraw")
        await self.store.audit(address, "withdraw", item_id, "withdrawn by the sender", {"via": "sender link"})
        await self.store.answer_request(item_id, address, "withdrawn by the sender")

    async def answer(self, item_id: str, user: User, text: str) -> None:
        """A reviewer answers an open release request without deciding (e.g. asks for more detail)."""
        text = (text or "").strip()
        item = await self._item(item_id)
        if not may(user, "note"):
            raise Refused("Your role may not answer requests", status=403)
        if not text:
            raise Refused("An answer needs some text", status=422)
        request = await self.store.release_request(item_id)
        if request is None or request.answered_at is not None:
            raise Refused("There is no open release request to answer")
        await self.store.answer_request(item_id, user.name, text)
        await self.store.audit(user.name, "request-answered", item_id, text)
        if self.planner is not None:
            await self.store.enqueue(self.planner.decided(item, "answered", text, to=request.address))

    async def note(self, item_id: str, user: User, text: str) -> None:
        text = (text or "").strip()
        await self._item(item_id)
        if not may(user, "note"):
            raise Refused("Your role may not add notes", status=403)
        if not text:
            raise Refused("A note needs some text", status=422)
        await self.store.audit(user.name, "note", item_id, text)

    async def legal_hold(self, item_id: str, user: User, on: bool, reason: str) -> None:
        reason = (reason or "").strip()
        await self._item(item_id)
        if not may(user, "legal-hold"):
            raise Refused("Only an admin can change a legal hold", status=403)
        if not reason:
            raise Refused("A reason is required to change a legal hold", status=422)
        await self.store.set_legal_hold(item_id, on)
        await self.store.audit(user.name, "legal-hold-on" if on else "legal-hold-off", item_id, reason)

    async def recover(self) -> list[str]:
        """Items stuck in `releasing` (a crash mid-release) go back to held; audited."""
        cutoff = time.time() - self.settings.quarantine.stuck_release_minutes * 60
        ids = await self.store.recover_stuck(cutoff)
        for item_id in ids:
            await self.store.audit("gateway", "release-recovered", item_id,
                                   "stuck in releasing (interrupted release); back to held")
        return ids

    async def purge(self, actor: str = "gateway") -> int:
        await self.recover()
        cutoff = time.time() - self.settings.quarantine.retention_days * 86400
        count = await self.store.purge(cutoff)
        await self.store.audit(actor, "purge", None, f"retention {self.settings.quarantine.retention_days} days",
                               {"purged": count})
        return count
