"""`gateway evaluate DIR`: the full policy over a labelled corpus; precision, recall, F1 per category.

The corpus is a folder with `manifest.tsv` (columns path, label, source; path relative to the folder),
as /work/shared/corpus. Each message goes through the real pipeline and policy (parse, every enabled
detector, decide) in the direction asked for (outbound by default: the content categories are about
what staff send out), with an envelope from a department sender to an outside recipient.

A message is *predicted* to be in category C when the policy's verdict is not `deliver` and a finding
of category C contributed to it: the finding's kind is matched by the rule that decided, or by a
`tag` rule passed on the way. Labels map to categories by name ("chain" = chain_letter). Items labelled
`ham` are negatives for every category; the false-positive rate on ham is the share of ham whose
verdict is not `deliver`. Items labelled `malformed` are parser-robustness fixtures, not content
negatives: they count only for crashes and time.
"""

from __future__ import annotations

import csv
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gateway.model import Action, Direction, Envelope, Verdict
from gateway.pipeline import Pipeline
from gateway.policy import Policy

LABEL_CATEGORY = {"chain": "chain_letter"}
NOT_CONTENT = frozenset({"ham", "malformed"})


@dataclass
class Item:
    path: str
    label: str
    source: str


@dataclass
class Result:
    items: int = 0
    labels: Counter = field(default_factory=Counter)
    tp: Counter = field(default_factory=Counter)
    fp: Counter = field(default_factory=Counter)
    fn: Counter = field(default_factory=Counter)
    ham_flagged: int = 0
    errors: list[str] = field(default_factory=list)
    times_ms: list[float] = field(default_factory=list)
    detector_ms: dict[str, list[float]] = field(default_factory=dict)
    mistakes: list[dict] = field(default_factory=list)

    def categories(self) -> list[str]:
        found = set(self.labels) | set(self.tp) | set(self.fp)
        return sorted(found - NOT_CONTENT)

    def summary(self) -> dict:
        per: dict[str, dict] = {}
        for c in self.categories():
            tp, fp, fn = self.tp[c], self.fp[c], self.fn[c]
            p = tp / (tp + fp) if tp + fp else 0.0
            r = tp / (tp + fn) if tp + fn else 0.0
            f1 = 2 * p * r / (p + r) if p + r else 0.0
            per[c] = {"items": self.labels[c], "tp": tp, "fp": fp, "fn": fn,
                      "precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4)}
        ham = self.labels["ham"]
        times = sorted(self.times_ms)
        return {
            "items": self.items, "labels": dict(self.labels), "categories": per,
            "ham": {"items": ham, "flagged": self.ham_flagged,
                    "false_positive_rate": round(self.ham_flagged / ham, 4) if ham else 0.0},
            "time_ms": {"median": round(statistics.median(times), 3) if times else 0.0,
                        "p99": round(_percentile(times, 0.99), 3) if times else 0.0,
                        "max": round(times[-1], 3) if times else 0.0},
            "detector_median_ms": {k: round(statistics.median(v), 3) for k, v in sorted(self.detector_ms.items())},
            "errors": self.errors,
        }


def _percentile(ordered: list[float], q: float) -> float:
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def read_manifest(folder: Path) -> list[Item]:
    manifest = folder / "manifest.tsv"
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if rows and rows[0][:2] == ["path", "label"]:
        rows = rows[1:]
    return [Item(r[0], r[1], r[2] if len(r) > 2 else "") for r in rows if len(r) >= 2 and r[0]]


def predicted_categories(policy: Policy, verdict: Verdict) -> set[str]:
    """Categories of the findings that made the verdict: matched by the deciding rule or a tag rule."""
    if verdict.action is Action.DELIVER:
        return set()
    rules = [policy.rule(verdict.rule)] + [policy.rule(q) for q in verdict.tag_rules]
    rules = [r for r in rules if r is not None]
    return {f.category for f in verdict.findings if any(r.matches(f.kind) for r in rules)}


def envelope_for(pipeline: Pipeline, direction: Direction) -> Envelope:
    local = pipeline.settings.local_domains[0] if pipeline.settings.local_domains else "example.gov"
    if direction is Direction.INBOUND:
        return Envelope("sender@example.org", (f"staff@{local}",), client_address="192.0.2.10")
    if direction is Direction.INTERNAL:
        return Envelope(f"staff@{local}", (f"colleague@{local}",), client_address="127.0.0.1")
    return Envelope(f"staff@{local}", ("someone@example.org",), client_address="127.0.0.1")


async def evaluate(pipeline: Pipeline, folder: Path, direction: Direction = Direction.OUTBOUND,
                   keep_mistakes: bool = False) -> Result:
    result = Result()
    envelope = envelope_for(pipeline, direction)
    for item in read_manifest(folder):
        label = LABEL_CATEGORY.get(item.label, item.label)
        try:
            raw = (folder / item.path).read_bytes()
        except OSError as e:
            result.errors.append(f"{item.path}: {e.strerror}")
            continue
        start = time.perf_counter()
        try:
            inspection = await pipeline.inspect(envelope, raw, direction=direction)
        except Exception as e:       # the pipeline must never raise on mail: that is a bug to report
            result.errors.append(f"{item.path}: {type(e).__name__}: {e}")
            continue
        result.times_ms.append((time.perf_counter() - start) * 1000)
        for name, ms in inspection.timings.items():
            if name.startswith("detector."):
                result.detector_ms.setdefault(name[9:], []).append(ms)
        result.items += 1
        result.labels[label] += 1
        if label == "malformed":
            continue
        verdict = inspection.verdict
        predicted = predicted_categories(pipeline.policy, verdict)
        if label == "ham" and verdict.action is not Action.DELIVER:
            result.ham_flagged += 1
        wrong = False
        for c in predicted:
            if c == label:
                result.tp[c] += 1
            else:
                result.fp[c] += 1
                wrong = True
        if label not in NOT_CONTENT and label not in predicted:
            result.fn[label] += 1
            wrong = True
        if keep_mistakes and (wrong or (label == "ham" and verdict.action is not Action.DELIVER)):
            result.mistakes.append({"path": item.path, "label": label, "predicted": sorted(predicted),
                                    "verdict": verdict.action.value, "rule": verdict.rule,
                                    "kinds": list(verdict.kinds)})
    return result


def render(summary: dict) -> str:
    lines = [f"{summary['items']} messages: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["labels"].items())),
             "",
             f"{'category':<14} {'items':>6} {'tp':>5} {'fp':>5} {'fn':>5} {'precision':>9} {'recall':>7} {'F1':>6}"]
    for c, m in summary["categories"].items():
        lines.append(f"{c:<14} {m['items']:>6} {m['tp']:>5} {m['fp']:>5} {m['fn']:>5} "
                     f"{m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>6.3f}")
    ham = summary["ham"]
    t = summary["time_ms"]
    lines += ["", f"ham: {ham['flagged']} of {ham['items']} not delivered "
                  f"(false-positive rate {ham['false_positive_rate'] * 100:.2f} %)",
              f"time per message: median {t['median']:.2f} ms, p99 {t['p99']:.2f} ms, max {t['max']:.2f} ms",
              "detector medians: " + ", ".join(f"{k} {v:.3f} ms" for k, v in summary["detector_median_ms"].items())]
    if summary["errors"]:
        lines += ["", f"errors ({len(summary['errors'])}):"] + [f"  {e}" for e in summary["errors"][:20]]
    return "\n".join(lines)
