"""size: messages and attachments over the limits the policy sets (policy: discretion with large files)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from gateway.config import Settings
from gateway.detectors.base import options_with_defaults
from gateway.model import Finding, Mail

DEFAULTS = {"max_message_bytes": 25 * 1024 * 1024, "max_attachment_bytes": 10 * 1024 * 1024}


def human(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class Size:
    name: ClassVar[str] = "size"
    kinds: ClassVar[frozenset[str]] = frozenset({"oversize.message", "oversize.attachment"})

    def __init__(self, settings: Settings, options: Mapping[str, Any]) -> None:
        opts = options_with_defaults(self.name, options, DEFAULTS)
        self.max_message = opts["max_message_bytes"]
        self.max_attachment = opts["max_attachment_bytes"]

    async def check(self, mail: Mail) -> list[Finding]:
        findings = []
        if mail.size > self.max_message:
            findings.append(Finding(
                kind="oversize.message", detector=self.name, score=float(mail.size),
                detail=f"Message is {human(mail.size)}, over the {human(self.max_message)} limit"))
        for part in mail.parsed.attachments:
            if len(part.payload) > self.max_attachment:
                findings.append(Finding(
                    kind="oversize.attachment", detector=self.name, part=part.label,
                    score=float(len(part.payload)),
                    detail=f"Attachment is {human(len(part.payload))}, over the "
                           f"{human(self.max_attachment)} limit"))
        return findings
