"""Helpers for the content-detector tests: build a real Mail from message bytes and run one detector
with the shipped policy's options (the same path the pipeline takes)."""

from __future__ import annotations

import email
import time

from gateway import config
from gateway.detectors import REGISTRY
from gateway.message import mime
from gateway.model import Direction, Envelope, Finding, Mail
from gateway.policy import load as load_policy
from tests.support.peers import make_message

SETTINGS = config.Settings()
POLICY = load_policy(SETTINGS)


def detector(name: str, **options):
    return REGISTRY[name](SETTINGS, {**POLICY.detector_options.get(name, {}), **options})


def mail(raw: bytes, *, direction: Direction = Direction.INBOUND, mail_from: str = "someone@example.org",
         rcpts: tuple[str, ...] = ("staff@example.gov",)) -> Mail:
    return Mail(id="test", envelope=Envelope(mail_from, rcpts), raw=raw, parsed=mime.parse(raw),
                direction=direction, received_at=time.time())


async def run(name_or_detector, subject: str = "Hello", body: str = "", *, extra_headers: str = "",
              sender: str = "someone@example.org", to: str = "staff@example.gov", raw: bytes | None = None,
              direction: Direction = Direction.INBOUND, mail_from: str | None = None,
              rcpts: tuple[str, ...] | None = None) -> list[Finding]:
    det = detector(name_or_detector) if isinstance(name_or_detector, str) else name_or_detector
    raw = raw or make_message(subject=subject, body=body, sender=sender, to=to, extra_headers=extra_headers)
    return await det.check(mail(raw, direction=direction, mail_from=mail_from or sender, rcpts=rcpts or (to,)))


def header(data: bytes, name: str) -> str:
    """A header of a message that reached the sink, unfolded (long values are folded on the wire)."""
    value = email.message_from_bytes(data).get(name, "")
    return " ".join(str(value).split())
