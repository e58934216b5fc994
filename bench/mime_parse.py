"""MIME parse cost and defects on the development corpus: gateway.mime.parse per message, median and
p99 per folder, and how many messages of each folder carry a structural defect (what the `mime`
detector would hold as malformed.*). Prints numbers (docs/architecture.md, "Hostile MIME").

Usage:  .venv/bin/python bench/mime_parse.py [--corpus ../shared/corpus] [--repeat 3] [folders ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway import mime

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
if not DEFAULT_CORPUS.exists():
    DEFAULT_CORPUS = Path("/work/shared/corpus")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--repeat", type=int, default=3, help="parse each message this many times; best time counts")
    ap.add_argument("folders", nargs="*", default=["ham", "commercial", "confidential", "malformed"])
    args = ap.parse_args()
    for folder in args.folders:
        files = sorted((args.corpus / folder).glob("*.eml"))
        times: list[float] = []
        defects: Counter = Counter()
        flagged: list[str] = []
        for path in files:
            raw = path.read_bytes()
            best = float("inf")
            for _ in range(max(1, args.repeat)):
                start = time.perf_counter()
                parsed = mime.parse(raw)
                best = min(best, time.perf_counter() - start)
            times.append(best * 1000)
            reasons = list(parsed.defects) + ([f"limits:{parsed.limit_exceeded}"] if parsed.limit_exceeded else [])
            defects.update(set(reasons))
            if reasons:
                flagged.append(f"{path.name}: {', '.join(reasons)}")
        if not files:
            print(f"{folder}: no messages")
            continue
        print(f"{folder}: {len(files)} messages, parse ms median {statistics.median(times):.3f} "
              f"p99 {percentile(times, 0.99):.3f} max {max(times):.1f} total {sum(times) / 1000:.2f} s; "
              f"with defects {len(flagged)} ({100 * len(flagged) / len(files):.2f} %)")
        for reason, count in defects.most_common():
            print(f"    {reason}: {count}")
        for line in flagged[:15]:
            print(f"    - {line}")


if __name__ == "__main__":
    main()
