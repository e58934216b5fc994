"""The notifier: a background task of `gateway run` (one per node) that sends due outbox rows.

Each round claims due rows atomically (Store.claim_notices: several nodes never take the same row),
groups digest rows per person, renders the templates, and sends each notice through the next hop
(relay.deliver) from the null sender `<>` (RFC 3834 section 3.3 and RFC 5321 section 4.5.5: a
notice must not be answered or bounced back to us, which also makes loops impossible; the header
From is `[notify] from`). A failed send is retried with exponential backoff; after `alert_after`
failed attempts the notice raises the alert (log, review dashboard, the outbox gauge), after
`max_attempts`, or at once on a permanent refusal, it is given up (status failed) and stays
alerting until an admin retries it.

Nothing here is on the mail path: the SMTP reply never waits for a notice, and an exception in a
round is logged and the next round runs as usual. A node that dies mid-send leaves its rows
claimed; after `lease_seconds` another round takes them again, so a notice is sent at least once
and, barring such a crash between the next hop's 250 and our bookkeeping, exactly once.
"""

from __future__ import annotations

import asyncio
import gettext
import logging
import os
import socket
import time
from collections import defaultdict
from pathlib import Path

from gateway import observability, relay
from gateway.config import SHIPPED_POLICY_DIR, ConfigError, Settings, notice_from
from gateway.notify.compose import Notice, compose, environment
from gateway.notify.tokens import make_token
from gateway.quarantine import OutboxRow, Store

log = logging.getLogger("gateway.notify")

LIVE = ("held", "releasing")        # a held/itsd notice about an item no longer held has nothing to say


def translations(settings: Settings) -> gettext.GNUTranslations:
    """The `notices` gettext catalog for `[notify] language`."""
    folder = settings.notify.translations or str(Path(settings.notify.templates or ".") / "locale")
    try:
        return gettext.translation("notices", folder, languages=[settings.notify.language])
    except OSError as e:
        raise ConfigError(f"[notify] language {settings.notify.language!r}: no notices.mo catalog under "
                          f"{folder}/{settings.notify.language}/LC_MESSAGES ({e})") from None


def base_url(settings: Settings) -> str:
    return (settings.notify.base_url or f"http://{settings.review.listen}").rstrip("/")


async def link_secret(settings: Settings, store: Store) -> str:
    """The key that signs release-request links; shared by every node (and the review app) via the store."""
    return settings.review.secret_key or await store.secret("notify-link-key")


SHIPPED_TEMPLATES = SHIPPED_POLICY_DIR / "templates"      # the last folder searched for a notice template


class Notifier:
    def __init__(self, settings: Settings, store: Store, node: str | None = None) -> None:
        self.settings = settings
        self.store = store
        self.node = node or f"{socket.gethostname()}:{os.getpid()}"
        folders = [settings.notify.templates, Path(settings.policy.dir) / "templates"]
        self.env = environment(*folders, SHIPPED_TEMPLATES)
        if settings.notify.language:        # a missing catalog stops start-up, naming the folder
            self.env.install_gettext_translations(translations(settings), newstyle=True)
        self.secret = ""
        self.task: asyncio.Task | None = None
        self.sent = 0                 # notices the next hop accepted (this process)
        self.failures = 0             # failed attempts (this process)

    async def start(self) -> Notifier:
        self.secret = await link_secret(self.settings, self.store)
        self.task = asyncio.create_task(self._loop(), name="notifier")
        observability.register_outbox_depth(self.depth)        # the outbox gauge of /metrics
        return self

    async def stop(self) -> None:
        observability.register_outbox_depth(None)
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
            self.task = None

    async def depth(self) -> int:
        return (await self.store.outbox_stats(self.settings.notify.alert_after))["pending"]

    async def _loop(self) -> None:
        while True:
            try:
                while await self.run_once() >= self.settings.notify.batch:
                    pass                 # a full batch: more may be due
            except asyncio.CancelledError:
                raise
            except Exception:            # the store is down, a bug: log, and try again next round
                log.exception("notifier round failed")
            await asyncio.sleep(self.settings.notify.poll_seconds)

    async def run_once(self) -> int:
        """One round: claim what is due, send it; returns how many rows were claimed."""
        if not self.secret:
            self.secret = await link_secret(self.settings, self.store)
        notify = self.settings.notify
        rows = await self.store.claim_notices(self.node, limit=notify.batch, lease_seconds=notify.lease_seconds)
        groups: dict[tuple, list[OutboxRow]] = defaultdict(list)
        for row in rows:
            key = (row.recipient.lower(), row.template, row.digest) if row.digest else (row.id,)
            groups[key].append(row)
        for group in groups.values():
            try:
                await self._send(group)
            except Exception as e:       # a template error, a bug: counts as a failed attempt
                log.exception("notice %s to %s failed", [r.id for r in group], group[0].recipient)
                await self._failed(group, f"{type(e).__name__}: {e}", permanent=False)
        return len(rows)

    async def _send(self, group: list[OutboxRow]) -> None:
        first = group[0]
        live, stale = group, []
        if first.template in ("held", "itsd"):
            live, stale = [], []
            for row in group:
                if not row.held_id:         # in the MTA's hold queue (postfix-hold), not in our store
                    live.append(row)
                    continue
                item = await self.store.get(row.held_id, with_raw=False)
                (live if item is not None and item.status in LIVE else stale).append(row)
            if stale:
                await self.store.notices_done([r.id for r in stale], "skipped")
            if not live:
                return
        raw = compose(self.env, self._notice(live), notice_from(self.settings),
                      self.settings.smtp.hostname or socket.gethostname())
        delivery = await relay.deliver(self.settings.relay, self.settings.notify.envelope_sender, [first.recipient],
                                       raw)
        if delivery.ok:
            await self.store.notices_done([r.id for r in live], "sent")
            self.sent += 1
            log.info("notice %s (%s) sent to %s for %s", first.template, first.digest or "single", first.recipient,
                     ", ".join(r.held_id or "-" for r in live))
            return
        reply = delivery.recipients.get(first.recipient) or delivery.reply
        await self._failed(live, str(reply), permanent=reply.permanent)

    def _notice(self, rows: list[OutboxRow]) -> Notice:
        first = rows[0]
        common = {"policy_title": self.settings.notify.policy_title, "link_days": self.settings.notify.link_days}
        items = [self._context(r) for r in rows]
        if first.template == "itsd":
            return Notice(first.recipient, "itsd", {**common, "items": items})
        if first.template == "held" and first.digest:
            return Notice(first.recipient, "digest", {**common, "items": items})
        return Notice(first.recipient, first.template, {**common, "role": first.role, **items[0]})

    def _context(self, row: OutboxRow) -> dict:
        context = {"request_url": "", **row.context}
        if row.template == "held" and row.role == "sender" and row.held_id:
            token = make_token(self.secret, row.held_id, row.recipient)
            context["request_url"] = f"{base_url(self.settings)}/request/{token}"
        if row.template == "decided" and row.context.get("outcome") == "answered" and row.held_id:
            token = make_token(self.secret, row.held_id, row.recipient)       # back to their request page
            context["request_url"] = f"{base_url(self.settings)}/request/{token}"
        if row.template == "itsd" and row.held_id:
            context["url"] = f"{base_url(self.settings)}/held/{row.held_id}"
        return context

    async def _failed(self, rows: list[OutboxRow], error: str, *, permanent: bool) -> None:
        notify = self.settings.notify
        attempts = max(r.attempts for r in rows) + 1
        self.failures += 1
        give_up = permanent or attempts >= notify.max_attempts
        retry_at = None if give_up else time.time() + min(notify.retry_max_seconds,
                                                          notify.retry_seconds * 2 ** (attempts - 1))
        await self.store.notices_retry([r.id for r in rows], error, retry_at)
        ids = ", ".join(str(r.id) for r in rows)
        if give_up:
            log.error("ALERT notice %s to %s given up after %d attempt(s): %s", ids, rows[0].recipient, attempts,
                      error)
        elif attempts >= notify.alert_after:
            log.error("ALERT notice %s to %s keeps failing (%d attempts): %s", ids, rows[0].recipient, attempts,
                      error)
        else:
            log.warning("notice %s to %s failed (attempt %d, next in %.0f s): %s", ids, rows[0].recipient,
                        attempts, (retry_at or 0) - time.time(), error)
