"""Run the content detectors of issue 4 (second half) over a labelled corpus and print P/R/F1.

Usage: .venv/bin/python bench/measure_categories.py [CORPUS_DIR] [--detectors a,b,...] [--show-fp N]
                                                    [--show-fn N] [--policy-dir DIR]

For each detector, "predicted positive" = the detector returned a finding of its category. Precision,
recall and F1 are computed over all items whose label is ham or a content category (malformed fixtures
are left out: they are parser tests, not content negatives). "ham FP" counts ham items on which ANY
of the detectors fired. Timing: per message, all detectors together, text extraction included,
median and p99 in milliseconds. Detectors run with the shipped policy's options.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from gateway import config
from gateway.detectors import REGISTRY
from gateway.message import mime
from gateway.model import Direction, Envelope, Mail
from gateway.policy import load as load_policy

DETECTORS = ("commercial", "political", "abusive", "chain_letter", "social_login", "external_email")
DIRECTION = {"external_email": Direction.OUTBOUND}
DEFAULT_CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"


def read_manifest(corpus: Path) -> list[tuple[Path, str]]:
    rows = []
    for line in (corpus / "manifest.tsv").read_text().splitlines()[1:]:
        path, label, _source = line.split("\t", 2)
        rows.append((corpus / path, label))
    return rows


def make_mail(raw: bytes, direction: Direction) -> Mail:
    parsed = mime.parse(raw)
    sender = mime.decode_header_value(parsed.message.get("From", "")) or "someone@example.org"
    address = sender.rpartition("<")[2].rstrip(">").strip() or "someone@example.org"
    rcpt = "someone@example.net" if direction is Direction.OUTBOUND else "staff@example.gov"
    return Mail(id="bench", envelope=Envelope(address, (rcpt,)), raw=raw, parsed=parsed, direction=direction,
                received_at=time.time())


async def run(args: argparse.Namespace) -> int:
    settings = config.Settings()
    if args.policy_dir:
        settings = config.from_dict({"policy": {"dir": args.policy_dir}})
    policy = load_policy(settings)
    names = args.detectors.split(",") if args.detectors else list(DETECTORS)
    detectors = {n: REGISTRY[n](settings, policy.detector_options.get(n, {})) for n in names}
    rows = [r for r in read_manifest(args.corpus) if r[1] != "malformed"]
    fired: dict[str, set[int]] = {n: set() for n in names}
    labels = [label for _, label in rows]
    times: list[float] = []
    for i, (path, label) in enumerate(rows):
        raw = path.read_bytes()
        mails = {d: make_mail(raw, d) for d in {DIRECTION.get(n, Direction.INBOUND) for n in names}}
        start = time.perf_counter()
        for n, det in detectors.items():
            findings = await det.check(mails[DIRECTION.get(n, Direction.INBOUND)])
            if any(f.category == n for f in findings):
                fired[n].add(i)
                if label != n and args.show_fp:
                    print(f"FP {n} [{label}] {path.name}: {findings[0].detail[:150]}", file=sys.stderr)
        times.append((time.perf_counter() - start) * 1000)
    print(f"{'category':<16}{'P':>7}{'R':>7}{'F1':>7}{'TP':>6}{'FP':>6}{'FN':>6}{'ham FP':>8}")
    for n in names:
        positives = {i for i, label in enumerate(labels) if label == n}
        tp = len(fired[n] & positives)
        fp = len(fired[n] - positives)
        fn = len(positives - fired[n])
        ham_fp = sum(1 for i in fired[n] if labels[i] == "ham")
        p = tp / (tp + fp) if tp + fp else float("nan")
        r = tp / (tp + fn) if tp + fn else float("nan")
        f1 = 2 * p * r / (p + r) if tp else float("nan")
        print(f"{n:<16}{p:>7.3f}{r:>7.3f}{f1:>7.3f}{tp:>6}{fp:>6}{fn:>6}{ham_fp:>8}")
        if args.show_fn:
            for i in sorted(positives - fired[n])[: args.show_fn]:
                print(f"FN {n} {rows[i][0].name}", file=sys.stderr)
    ham = [i for i, label in enumerate(labels) if label == "ham"]
    any_fp = sum(1 for i in ham if any(i in fired[n] for n in names))
    print(f"ham items {len(ham)}; ham with any finding: {any_fp} ({100 * any_fp / max(1, len(ham)):.2f}%)")
    times.sort()
    print(f"time per message, all these detectors: median {statistics.median(times):.2f} ms, "
          f"p99 {times[int(len(times) * 0.99) - 1]:.2f} ms, max {times[-1]:.1f} ms ({len(times)} messages)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--detectors", default="")
    parser.add_argument("--policy-dir", default="")
    parser.add_argument("--show-fp", action="store_true")
    parser.add_argument("--show-fn", type=int, default=0)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
