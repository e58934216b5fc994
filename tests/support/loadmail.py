"""Load helpers for the fault and soak tests: messages with a unique token each (in the subject and the
Message-ID), a concurrent sender that records every reply, and the end-of-run reconciliation: every 250 is at
the sink or in the quarantine exactly once, every other reply is 4xx/5xx, nothing with a virus is delivered and
nothing with a file is delivered without X-Gateway-Scanned."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage

from tests.support import files
from tests.support.peers import send

KINDS = ("clean", "attachment", "virus", "malformed", "oversize", "pii")
TOKEN = re.compile(rb"\btok-([0-9a-f]{16})\b")


@dataclass
class Sent:
    token: str
    kind: str
    code: int = 0
    text: str = ""


def token() -> str:
    return uuid.uuid4().hex[:16]


def build(kind: str, tok: str, *, oversize_bytes: int = 0) -> bytes:
    """One message of a kind, outbound from alice@example.gov, carrying `tok-<token>` in subject and Message-ID."""
    subject = f"load {kind} tok-{tok}"
    if kind == "malformed":         # a multipart that never closes: held as malformed.* by the shipped policy
        return (f"From: alice@example.gov\r\nTo: bob@example.org\r\nSubject: {subject}\r\n"
                f"Message-ID: <tok-{tok}@example.gov>\r\nMIME-Version: 1.0\r\n"
                "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n"
                "see attached\r\n--b1\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\nQUJD\r\n").encode()
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@example.gov", "bob@example.org", subject
    msg["Message-ID"] = f"<tok-{tok}@example.gov>"
    msg["Date"] = "Sun, 29 Nov 2026 10:00:00 +0000"
    if kind == "pii":
        msg.set_content("Payroll correction for the employee: social security number 536-22-8726, "
                        "and card 4111 1111 1111 1111. Please process.\n")
    else:
        msg.set_content(f"Hello,\nplease find the notes attached ({tok}).\n")
    if kind == "attachment":
        msg.add_attachment(f"id,value\n{tok},1\n".encode(), maintype="text", subtype="csv",
                           filename=f"notes-{tok[:6]}.csv")
    elif kind == "virus":
        archive = files.zip_of({"tool.com": files.eicar(), "readme.txt": tok.encode()})
        msg.add_attachment(archive, maintype="application", subtype="zip", filename=f"tools-{tok[:6]}.zip")
    elif kind == "oversize":
        msg.add_attachment(b"x" * oversize_bytes + tok.encode(), maintype="application",
                           subtype="octet-stream", filename="big.bin")
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def send_one(port: int, sent: Sent, message: bytes, timeout: float = 60.0) -> Sent:
    try:
        code, text, _ = await asyncio.wait_for(
            send(port, "alice@example.gov", ["bob@example.org"], message), timeout)
        sent.code, sent.text = code, text
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as e:
        sent.code, sent.text = 0, f"no reply: {type(e).__name__}"     # never a 250: the client would retry
    return sent


@dataclass
class Reconciliation:
    sent: list[Sent]
    delivered: Counter = field(default_factory=Counter)     # token -> copies at the sink
    held: Counter = field(default_factory=Counter)          # token -> items in the quarantine
    held_kinds: dict[str, set[str]] = field(default_factory=dict)
    unscanned_delivery: list[str] = field(default_factory=list)
    notices: int = 0                                        # notices about held mail that reached the sink

    @property
    def codes(self) -> Counter:
        return Counter(s.code // 100 * 100 if s.code else 0 for s in self.sent)

    def summary(self) -> dict[str, object]:
        by_kind: dict[str, Counter] = {}
        for s in self.sent:
            by_kind.setdefault(s.kind, Counter())[str(s.code)] += 1
        return {"sent": len(self.sent), "replies": dict(Counter(str(s.code) for s in self.sent)),
                "at_sink": sum(self.delivered.values()), "held": sum(self.held.values()),
                "by_kind": {k: dict(v) for k, v in by_kind.items()}}


async def reconcile(sent: list[Sent], sink_messages, store) -> Reconciliation:
    r = Reconciliation(sent)
    for m in sink_messages:
        head = b"\n" + m.data.split(b"\r\n\r\n", 1)[0]
        if b"\nX-Gateway-Notice:" in head:      # our notice about a held message (it quotes the subject)
            r.notices += 1
            continue
        found = TOKEN.search(m.data)
        if found:
            tok = found.group(1).decode()
            r.delivered[tok] += 1
            has_file = b"Content-Disposition: attachment" in m.data
            if has_file and b"\nX-Gateway-Scanned:" not in b"\n" + m.data.split(b"\r\n\r\n", 1)[0]:
                r.unscanned_delivery.append(tok)
    for item in await store.list(limit=100000):
        found = TOKEN.search(item.subject.encode())
        if found:
            tok = found.group(1).decode()
            r.held[tok] += 1
            r.held_kinds[tok] = {f.kind for f in item.findings}
    return r


def check(r: Reconciliation) -> None:
    """The promises, message by message."""
    problems = []
    for s in r.sent:
        copies = r.delivered[s.token] + r.held[s.token]
        if s.code == 250:
            if copies != 1:
                problems.append(f"{s.kind} {s.token}: 250 but {r.delivered[s.token]} at the sink and "
                                f"{r.held[s.token]} held")
        else:
            if not (s.code == 0 or 400 <= s.code < 600):
                problems.append(f"{s.kind} {s.token}: reply {s.code} {s.text}")
            if r.delivered[s.token]:
                problems.append(f"{s.kind} {s.token}: {s.code} but delivered")
            # A message the client was told to retry may be in the quarantine only if the client saw no reply.
            if r.held[s.token] and s.code != 0:
                problems.append(f"{s.kind} {s.token}: {s.code} but held")
        if s.kind == "virus" and r.delivered[s.token]:
            problems.append(f"virus {s.token} delivered")
        if s.kind == "virus" and r.held[s.token]:
            kinds = r.held_kinds[s.token]
            if not any(k == "virus" or k.startswith("unscanned.") for k in kinds):
                problems.append(f"virus {s.token} held as {kinds}")
    problems += [f"delivered without X-Gateway-Scanned: {t}" for t in r.unscanned_delivery]
    assert not problems, "\n".join(problems[:30])
