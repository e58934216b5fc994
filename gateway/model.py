"""The gateway's vocabulary: frozen values that pass between front end, pipeline, policy and actions.

No logic lives here beyond trivial derived properties and the masking of a finding's evidence
(gateway/evidence.py, imported when first used), so every module can import it freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from gateway.context import Context

if TYPE_CHECKING:
    from gateway.message.mime import ParsedMessage


class Direction(StrEnum):
    INBOUND = "inbound"      # from outside to the department
    OUTBOUND = "outbound"    # from the department to outside
    INTERNAL = "internal"    # department to department


class Action(StrEnum):
    DELIVER = "deliver"
    TAG = "tag"
    QUARANTINE = "quarantine"
    REJECT = "reject"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True, slots=True)
class Envelope:
    mail_from: str                      # "" for the null sender (bounces)
    rcpt_tos: tuple[str, ...]
    client_address: str = ""
    helo: str = ""
    smtp_utf8: bool = False
    smuggling: bool = False             # the front end saw an end-of-data look-alike before normalising line ends


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str                 # dotted, first part is the category: "pii.ssn", "virus", "unscanned.encrypted"
    detector: str             # "pii"
    detail: str               # for a human: "SSN near 'social security' in body (2 matches)"
    part: str | None = None   # "attachment 2: report.pdf"
    score: float | None = None
    evidence: tuple[str, ...] = ()   # short excerpts, sensitive values masked: "SSN ***-**-6789"

    def __post_init__(self) -> None:
        # The one masking step every finding passes, whoever made it and when it was stored: what
        # people see must not show a value the pii or credentials detectors recognise (gateway/evidence.py).
        from gateway.evidence import mask

        object.__setattr__(self, "detail", mask(self.detail))
        if self.evidence:
            object.__setattr__(self, "evidence", tuple(mask(e) for e in self.evidence))

    @property
    def category(self) -> str:
        return self.kind.split(".", 1)[0]

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "detector": self.detector, "detail": self.detail,
                "part": self.part, "score": self.score, "evidence": list(self.evidence)}

    @classmethod
    def from_dict(cls, d: dict) -> Finding:
        return cls(kind=d["kind"], detector=d["detector"], detail=d["detail"], part=d.get("part"),
                   score=d.get("score"), evidence=tuple(d.get("evidence") or ()))


@dataclass(frozen=True, slots=True)
class Mail:
    """One message as the pipeline sees it: envelope, the bytes as received, the parsed tree, direction."""

    id: str
    envelope: Envelope
    raw: bytes
    parsed: ParsedMessage
    direction: Direction
    received_at: float
    context: Context = field(default_factory=Context, compare=False, repr=False)   # per-message, mutable

    @property
    def size(self) -> int:
        return len(self.raw)


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    rule: str                             # always set: "outbound/confidential" or "inbound/default"
    findings: tuple[Finding, ...]
    tags: tuple[str, ...] = ()            # subject prefixes from tag rules, in order
    notify: frozenset[str] = frozenset()  # who the notifier tells: "sender", "recipients", "itsd", ...
    notice: str = ""                      # the rule's explanation for people, citing the policy provision
    reply: str = ""                       # the rule's text for reject / tempfail replies
    monitored: tuple[str, ...] = ()       # "rule -> action" that monitor-mode rules would have done
    tag_rules: tuple[str, ...] = ()       # tag rules that matched on the way to the final rule
    options: dict[str, object] = field(default_factory=dict, compare=False)  # rule extras (approvals, ...)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.kind for f in self.findings))
