"""Findings as a reviewer reads them: grouped per part and per detector (one .exe gives one group,
not five rows), and the one-line reason a queue row shows. The store and the audit keep every
finding; this only shapes what people see. Evidence is already masked (gateway/evidence.py)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.model import Finding

# Lower comes first as "the" reason: what a reviewer must judge before what only says "not scanned".
_WEIGHT = {"virus": 0, "unscanned": 9, "malformed": 8}


@dataclass(frozen=True)
class Group:
    part: str
    detector: str
    kinds: tuple[str, ...]
    details: tuple[str, ...]
    evidence: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {"part": self.part, "detector": self.detector, "kinds": list(self.kinds),
                "details": list(self.details), "evidence": list(self.evidence)}


def grouped(findings: tuple[Finding, ...] | list[Finding]) -> list[Group]:
    """One group per (part, detector), in first-seen order; kinds, details and evidence each once."""
    groups: dict[tuple[str, str], list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.part or "message", f.detector), []).append(f)
    return [Group(part, detector, tuple(dict.fromkeys(f.kind for f in fs)), tuple(dict.fromkeys(f.detail for f in fs)),
                  tuple(dict.fromkeys(e for f in fs for e in f.evidence))[:5])
            for (part, detector), fs in groups.items()]


def top(findings: tuple[Finding, ...] | list[Finding]) -> Finding | None:
    """The finding that best says why: a virus first, "unscanned" and "malformed" last, then by score."""
    if not findings:
        return None
    return min(findings, key=lambda f: (_WEIGHT.get(f.category, 5), -(f.score or 0.0)))


def reason(rule: str, findings: tuple[Finding, ...] | list[Finding]) -> dict[str, str]:
    """The row's reason: the rule, the top finding in words and its (masked) evidence."""
    f = top(findings)
    if f is None:
        return {"rule": rule, "finding": "no findings", "evidence": "", "more": ""}
    others = len(grouped(findings)) - 1
    return {"rule": rule, "finding": f.detail or f.kind, "evidence": f.evidence[0] if f.evidence else "",
            "more": f"+{others} more" if others > 0 else ""}
