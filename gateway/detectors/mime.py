"""mime: hold what we cannot read unambiguously (a filter that cannot read a message cannot vouch for it)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from gateway.config import Settings
from gateway.detectors.base import options_with_defaults
from gateway.model import Finding, Mail

EXPLAIN = {
    "missing_final_boundary": "A multipart section has no closing boundary, so clients may disagree "
                              "on where parts end",
    "missing_start_boundary": "A multipart section never starts its first part",
    "no_boundary": "A multipart section declares no boundary",
    "multipart_invariant": "A part declared as multipart has no parts",
    "ambiguous_boundary": "A nested multipart reuses, or is a prefix of, an enclosing boundary",
    "conflicting_type": "A part has conflicting Content-Type headers",
    "conflicting_transfer_encoding": "A part has conflicting Content-Transfer-Encoding headers",
    "conflicting_disposition": "A part has conflicting Content-Disposition headers",
    "invalid_encoding": "An attachment's base64 encoding is invalid, so its content is ambiguous",
    "unknown_encoding": "An attachment declares a transfer encoding that mail clients do not agree on",
    "encoded_message": "An attached message is itself base64 or quoted-printable encoded, which mail "
                       "clients read differently",
    "partial": "The message is a fragment (message/partial) that cannot be checked as a whole",
    "epilogue_parts": "Text after a multipart's closing boundary holds further MIME parts",
    "boundary_lookalike": "A line looks like a multipart boundary but is not one, so mail clients may split "
                          "the message differently",
    "header_syntax": "A part's headers are broken (for example a space before the colon), so mail clients "
                     "may decode the part differently",
    "ambiguous_encoding": "An attachment's transfer encoding is written oddly, so mail clients decode it into "
                          "different files; every reading was checked",
    "ambiguous_mime": "The message's structure can be read in more than one way (two boundary parameters, an "
                      "oddly written multipart type), and the readings hold different files; every reading "
                      "was checked",
    "encoded_block": "A yEnc or BinHex block in the text could not be decoded",
    "undecodable": "A part could not be decoded",
    "limits_exceeded": "The message exceeds the parser's limits",
    "smtp_smuggling": "The message contains a bare end-of-data sequence used for SMTP smuggling",
}
# An end-of-data look-alike with a bare CR or LF: "\n.\n", "\n.\r\n", "\r.\r", "\r\n.\r"...
_SMUGGLING = re.compile(rb"(?:\r\n|\n|\r)\.(?:\r(?!\n)|\n)|(?<!\r)\n\.\r\n|\r(?!\n)\.\r\n")


def has_smuggling(raw: bytes) -> bool:
    """An end-of-data look-alike needs a bare CR or LF; pure CRLF mail (nearly all) skips the regex."""
    crlf = raw.count(b"\r\n")
    if raw.count(b"\n") == crlf and raw.count(b"\r") == crlf:
        return False
    return _SMUGGLING.search(raw) is not None


class MimeStructure:
    name: ClassVar[str] = "mime"
    kinds: ClassVar[frozenset[str]] = frozenset({"malformed.*"})

    def __init__(self, settings: Settings, options: Mapping[str, Any]) -> None:
        options_with_defaults(self.name, options, {})

    async def check(self, mail: Mail) -> list[Finding]:
        parsed = mail.parsed
        reasons = list(parsed.defects)
        if parsed.limit_exceeded:
            reasons.append("limits_exceeded")
        if mail.envelope.smuggling or has_smuggling(mail.raw):
            reasons.append("smtp_smuggling")
        findings = []
        for reason in dict.fromkeys(reasons):
            detail = EXPLAIN.get(reason, reason.replace("_", " "))
            if reason == "limits_exceeded":
                detail += f" ({parsed.limit_exceeded.replace('_', ' ')})"
            findings.append(Finding(kind=f"malformed.{reason}", detector=self.name, detail=detail))
        return findings
