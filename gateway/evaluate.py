"""`gateway evaluate DIR`: the full policy over a labelled corpus; precision, recall, F1 per category.

The corpus is a folder with `manifest.tsv` (columns path, label, source; path relative to the folder),
as /work/shared/corpus; a folder without one is read as `<label>/<source>-<id>.eml`. Each message goes
through the real pipeline and policy (parse, every enabled detector, decide) in the direction asked for
(outbound by default: the content categories are about what staff send out), with an envelope from a
department sender to an outside recipient.

A message is *predicted* to be in category C when the policy's verdict is not `deliver` and a finding
of category C contributed to it: the finding's kind is matched by the rule that decided, or by a
`tag` rule passed on the way. Labels map to categories by name ("chain" = chain_letter). Items labelled
`ham` are negatives for every category; the false-positive rate on ham is the share of ham whose
verdict is not `deliver`. Items labelled `malformed` are parser-robustness fixtures, not content
negatives: they count only for crashes and time.

Besides that table, the same figures per source and per direction, and *held* (the deciding rule
quarantines or rejects for C) apart from *tagged* (C only tagged, the mail delivered): one source or
one direction can hide another's losses, and a tag is not a hold.
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
HOLD = frozenset({Action.QUARANTINE, Action.REJECT})


@dataclass
class Item:
    path: str
    label: str
    source: str


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def _prf(tp: int, fp: int, fn: int) -> dict:
    p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4)}


@dataclass
class Tally:
    """Counts for one slice of the corpus (all of it, one source, one direction)."""
    items: int = 0
    labels: Counter = field(default_factory=Counter)
    tp: Counter = field(default_factory=Counter)
    fp: Counter = field(default_factory=Counter)
    fn: Counter = field(default_factory=Counter)
    held_tp: Counter = field(default_factory=Counter)
    held_fp: Counter = field(default_factory=Counter)
    tagged_tp: Counter = field(default_factory=Counter)
    tagged_fp: Counter = field(default_factory=Counter)
    ham_flagged: int = 0
    ham_held: int = 0
    ham_tagged: int = 0

    def add(self, label: str, verdict: Verdict | None, predicted: set[str], held: set[str],
            tagged: set[str]) -> None:
        self.items += 1
        self.labels[label] += 1
        if label == "malformed" or verdict is None:
            return
        if label == "ham" and verdict.action is not Action.DELIVER:
            self.ham_flagged += 1
            self.ham_held += verdict.action in HOLD
            self.ham_tagged += verdict.action is Action.TAG
        for c in predicted:
            (self.tp if c == label else self.fp)[c] += 1
        for c in held:
            (self.held_tp if c == label else self.held_fp)[c] += 1
        for c in tagged:
            (self.tagged_tp if c == label else self.tagged_fp)[c] += 1
        if label not in NOT_CONTENT and label not in predicted:
            self.fn[label] += 1

    def categories(self) -> list[str]:
        found = set(self.labels) | set(self.tp) | set(self.fp)
        return sorted(found - NOT_CONTENT)

    def block(self) -> dict:
        per: dict[str, dict] = {}
        actions: dict[str, dict] = {}
        for c in self.categories():
            tp, fp, fn = self.tp[c], self.fp[c], self.fn[c]
            per[c] = {"items": self.labels[c], "tp": tp, "fp": fp, "fn": fn, **_prf(tp, fp, fn)}
            htp, hfp, hfn = self.held_tp[c], self.held_fp[c], self.labels[c] - self.held_tp[c]
            actions[c] = {"held": {"tp": htp, "fp": hfp, "fn": hfn, **_prf(htp, hfp, hfn)},
                          "tagged": {"tp": self.tagged_tp[c], "fp": self.tagged_fp[c]}}
        ham = self.labels["ham"]
        return {"items": self.items, "labels": dict(self.labels), "categories": per,
                "ham": {"items": ham, "flagged": self.ham_flagged,
                        "false_positive_rate": round(self.ham_flagged / ham, 4) if ham else 0.0},
                "actions": {"categories": actions, "ham": {"held": self.ham_held, "tagged": self.ham_tagged}}}


@dataclass
class Run:
    """One direction's pass over the corpus: the whole and each source."""
    direction: Direction
    total: Tally = field(default_factory=Tally)
    sources: dict[str, Tally] = field(default_factory=dict)

    def summary(self) -> dict:
        return {**self.total.block(), "sources": {s: t.block() for s, t in sorted(self.sources.items())}}


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
    runs: list[Run] = field(default_factory=list)

    def categories(self) -> list[str]:
        found = set(self.labels) | set(self.tp) | set(self.fp)
        return sorted(found - NOT_CONTENT)

    def summary(self) -> dict:
        per: dict[str, dict] = {}
        for c in self.categories():
            tp, fp, fn = self.tp[c], self.fp[c], self.fn[c]
            per[c] = {"items": self.labels[c], "tp": tp, "fp": fp, "fn": fn, **_prf(tp, fp, fn)}
        ham = self.labels["ham"]
        times = sorted(self.times_ms)
        first = self.runs[0].summary() if self.runs else Tally().block() | {"sources": {}}
        return {
            "items": self.items, "labels": dict(self.labels), "categories": per,
            "ham": {"items": ham, "flagged": self.ham_flagged,
                    "false_positive_rate": round(self.ham_flagged / ham, 4) if ham else 0.0},
            "time_ms": {"median": round(statistics.median(times), 3) if times else 0.0,
                        "p99": round(_percentile(times, 0.99), 3) if times else 0.0,
                        "max": round(times[-1], 3) if times else 0.0},
            "detector_median_ms": {k: round(statistics.median(v), 3) for k, v in sorted(self.detector_ms.items())},
            "errors": self.errors,
            "direction": self.runs[0].direction.value if self.runs else "",
            "actions": first["actions"], "sources": first["sources"],
            "directions": {r.direction.value: r.summary() for r in self.runs},
        }


def _percentile(ordered: list[float], q: float) -> float:
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def source_of(path: str) -> str:
    """A file's source from its name: the part before the first '-' (`spamassassin-easyham2-1.eml`)."""
    name = Path(path).name
    return name.split("-", 1)[0] if "-" in name else ""


def read_manifest(folder: Path) -> list[Item]:
    manifest = folder / "manifest.tsv"
    if not manifest.is_file():
        return read_layout(folder)
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if rows and rows[0][:2] == ["path", "label"]:
        rows = rows[1:]
    return [Item(r[0], r[1], (r[2] if len(r) > 2 else "") or source_of(r[0])) for r in rows if len(r) >= 2 and r[0]]


def read_layout(folder: Path) -> list[Item]:
    """A folder without a manifest: `<label>/<source>-<id>.eml`."""
    return [Item(p.relative_to(folder).as_posix(), p.parent.name, source_of(p.name))
            for p in sorted(folder.glob("*/*.eml")) if p.is_file()]


def predicted_categories(policy: Policy, verdict: Verdict) -> set[str]:
    """Categories of the findings that made the verdict: matched by the deciding rule or a tag rule."""
    if verdict.action is Action.DELIVER:
        return set()
    rules = [policy.rule(verdict.rule)] + [policy.rule(q) for q in verdict.tag_rules]
    rules = [r for r in rules if r is not None]
    return {f.category for f in verdict.findings if any(r.matches(f.kind) for r in rules)}


def held_and_tagged(policy: Policy, verdict: Verdict) -> tuple[set[str], set[str]]:
    """Categories the verdict holds for (the deciding rule quarantines or rejects) and only tags for."""
    if verdict.action is Action.DELIVER:
        return set(), set()
    deciding = policy.rule(verdict.rule)
    decided = {f.category for f in verdict.findings if deciding is not None and deciding.matches(f.kind)}
    taggers = [r for r in (policy.rule(q) for q in verdict.tag_rules) if r is not None]
    tagged = {f.category for f in verdict.findings if any(r.matches(f.kind) for r in taggers)}
    if verdict.action in HOLD:
        return decided, tagged - decided
    if verdict.action is Action.TAG:
        return set(), decided | tagged
    return set(), set()


def envelope_for(pipeline: Pipeline, direction: Direction) -> Envelope:
    local = pipeline.settings.local_domains[0] if pipeline.settings.local_domains else "example.gov"
    if direction is Direction.INBOUND:
        return Envelope("sender@example.org", (f"staff@{local}",), client_address="192.0.2.10")
    if direction is Direction.INTERNAL:
        return Envelope(f"staff@{local}", (f"colleague@{local}",), client_address="127.0.0.1")
    return Envelope(f"staff@{local}", ("someone@example.org",), client_address="127.0.0.1")


async def evaluate(pipeline: Pipeline, folder: Path, direction: Direction | tuple[Direction, ...] = Direction.OUTBOUND,
                   keep_mistakes: bool = False) -> Result:
    """The first direction fills the overall table (as before); every direction gets its own section."""
    directions = (direction,) if isinstance(direction, Direction) else tuple(direction)
    result = Result()
    items = read_manifest(folder)
    for n, d in enumerate(directions):
        run = Run(d)
        result.runs.append(run)
        await _one_direction(pipeline, folder, items, run, result if n == 0 else None, keep_mistakes)
    return result


async def _one_direction(pipeline: Pipeline, folder: Path, items: list[Item], run: Run, result: Result | None,
                         keep_mistakes: bool) -> None:
    direction = run.direction
    envelope = envelope_for(pipeline, direction)
    for item in items:
        label = LABEL_CATEGORY.get(item.label, item.label)
        try:
            raw = (folder / item.path).read_bytes()
        except OSError as e:
            if result is not None:
                result.errors.append(f"{item.path}: {e.strerror}")
            continue
        start = time.perf_counter()
        try:
            inspection = await pipeline.inspect(envelope, raw, direction=direction)
        except Exception as e:       # the pipeline must never raise on mail: that is a bug to report
            if result is not None:
                result.errors.append(f"{item.path}: {type(e).__name__}: {e}")
            continue
        elapsed = (time.perf_counter() - start) * 1000
        verdict = inspection.verdict
        predicted = predicted_categories(pipeline.policy, verdict) if label != "malformed" else set()
        held, tagged = held_and_tagged(pipeline.policy, verdict) if label != "malformed" else (set(), set())
        run.total.add(label, verdict, predicted, held, tagged)
        run.sources.setdefault(item.source or "-", Tally()).add(label, verdict, predicted, held, tagged)
        if result is None:
            continue
        result.times_ms.append(elapsed)
        for name, ms in inspection.timings.items():
            if name.startswith("detector."):
                result.detector_ms.setdefault(name[9:], []).append(ms)
        result.items += 1
        result.labels[label] += 1
        if label == "malformed":
            continue
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
    for direction, block in summary.get("directions", {}).items():
        lines += ["", f"direction {direction}: held (quarantine, reject) and tagged (delivered with a tag)"]
        lines += _held_tagged_table(block)
        w = max([6, *map(len, block["sources"])])
        lines += ["", f"by source, {direction}:",
                  f"{'source':<{w}} {'category':<14} {'items':>6} {'tp':>5} {'fp':>5} {'fn':>5} "
                  f"{'precision':>9} {'recall':>7} {'F1':>6} {'held':>5} {'tagged':>6}"]
        for source, s in block["sources"].items():
            for c, m in s["categories"].items():
                a = s["actions"]["categories"][c]
                lines.append(f"{source:<{w}} {c:<14} {m['items']:>6} {m['tp']:>5} {m['fp']:>5} {m['fn']:>5} "
                             f"{_f(m['precision'], m['tp'] + m['fp']):>9} {_f(m['recall'], m['items']):>7} "
                             f"{_f(m['f1'], m['tp'] + m['fp'] + m['fn']):>6} "
                             f"{a['held']['tp'] + a['held']['fp']:>5} {a['tagged']['tp'] + a['tagged']['fp']:>6}")
            h = s["ham"]
            if h["items"]:
                lines.append(f"{source:<{w}} {'ham':<14} {h['items']:>6} not delivered {h['flagged']} "
                             f"(held {s['actions']['ham']['held']}, tagged {s['actions']['ham']['tagged']})")
    return "\n".join(lines)


def _f(value: float, denominator: int) -> str:
    """A ratio, or '-' where nothing was counted (a source with no items of the category has no recall)."""
    return f"{value:.3f}" if denominator else "-"


def _held_tagged_table(block: dict) -> list[str]:
    lines = [f"{'category':<14} {'items':>6} {'precision':>9} {'recall':>7} {'F1':>6} {'held':>5} {'tagged':>6} "
             f"{'missed':>6} {'held fp':>7} {'tagged fp':>9} {'held P':>6} {'held R':>6} {'held F1':>7}"]
    for c, m in block["categories"].items():
        a = block["actions"]["categories"][c]
        held, tagged = a["held"], a["tagged"]
        lines.append(f"{c:<14} {m['items']:>6} {_f(m['precision'], m['tp'] + m['fp']):>9} "
                     f"{_f(m['recall'], m['items']):>7} {_f(m['f1'], m['tp'] + m['fp'] + m['fn']):>6} "
                     f"{held['tp']:>5} {tagged['tp']:>6} {m['fn']:>6} {held['fp']:>7} "
                     f"{tagged['fp']:>9} {_f(held['precision'], held['tp'] + held['fp']):>6} "
                     f"{_f(held['recall'], m['items']):>6} {_f(held['f1'], held['tp'] + held['fp'] + m['items']):>7}")
    h, ha = block["ham"], block["actions"]["ham"]
    lines.append(f"ham: {h['flagged']} of {h['items']} not delivered: held {ha['held']}, tagged {ha['tagged']}")
    return lines
