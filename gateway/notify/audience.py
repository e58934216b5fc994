"""Who is told about a held message, and who never is.

The internal party is told: the sender of outbound and internal mail, the local recipients of
inbound mail. An external sender of inbound mail is never told (such addresses are often forged and
notices to them are backscatter), and nobody is told about bounces, auto-replies or list mail
(RFC 3834), because answering automatic mail makes mail loops.
"""

from __future__ import annotations

import csv
import email.message
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Settings

AUTOMATIC_SENDERS = ("mailer-daemon", "postmaster", "noreply", "no-reply", "donotreply", "do-not-reply")


@dataclass(frozen=True, slots=True)
class Addressee:
    address: str
    role: str            # "sender" | "recipient" | "itsd" | "supervisor"


def is_automatic(mail_from: str, message: email.message.Message) -> bool:
    """Null sender, bounce, auto-reply or list mail: never notified about (RFC 3834, RFC 2369)."""
    if not mail_from:
        return True
    if mail_from.split("@", 1)[0].lower() in AUTOMATIC_SENDERS:
        return True
    auto = str(message.get("Auto-Submitted", "no")).strip().lower()
    if auto and not auto.startswith("no"):
        return True
    if str(message.get("Precedence", "")).strip().lower() in ("bulk", "junk", "list", "auto_reply"):
        return True
    if any(message.get(h) is not None for h in ("List-Id", "List-Unsubscribe", "List-Post", "X-Autoreply",
                                                "X-Autorespond", "X-Auto-Response-Suppress")):
        return True
    return message.get_content_type() == "multipart/report"


def load_supervisors(path: str) -> dict[str, str]:
    """CSV rows `address, supervisor address` (a header row is allowed); lower-cased."""
    if not path:
        return {}
    mapping = {}
    with Path(path).open(newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if len(row) >= 2 and "@" in row[0] and "@" in row[1]:
                mapping[row[0].strip().lower()] = row[1].strip()
    return mapping


def audience(settings: Settings, *, direction: str, mail_from: str, rcpt_tos: tuple[str, ...],
             message: email.message.Message, targets: frozenset[str], supervisors: dict[str, str],
             itsd: str = "") -> list[Addressee]:
    """The people a rule's `notify` targets resolve to for this message, backscatter excluded."""
    people: list[Addressee] = []
    if itsd and "itsd" in targets:
        people.append(Addressee(itsd, "itsd"))
    if is_automatic(mail_from, message):
        return people
    sender_is_internal = direction in ("outbound", "internal") and settings.is_local(mail_from)
    if "sender" in targets and sender_is_internal:
        people.append(Addressee(mail_from, "sender"))
    if "recipients" in targets and direction in ("inbound", "internal"):
        people.extend(Addressee(r, "recipient") for r in rcpt_tos if settings.is_local(r))
    if "supervisor" in targets and sender_is_internal:
        boss = supervisors.get(mail_from.lower())
        if boss:
            people.append(Addressee(boss, "supervisor"))
    seen: set[str] = set()
    unique = []
    for person in people:
        if person.address.lower() not in seen:
            seen.add(person.address.lower())
            unique.append(person)
    return unique
