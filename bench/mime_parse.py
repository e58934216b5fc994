"""MIME parse cost and defects on the development corpus: gateway.message.mime.parse per message, median and
p99 per folder, and how many messages of each folder carry a structural defect (what the `mime`
detector would hold as malformed.*). Prints numbers (docs/architecture.md, "Hostile MIME").

With --baseline REV, gateway/message/mime.py as of that git revision is timed on the same messages in the
same run (interleaved, so both see the same machine load).

Usage:  .venv/bin/python bench/mime_parse.py [--corpus ../shared/corpus] [--repeat 3] [--baseline REV] [folders ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.message import mime

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
if not DEFAULT_CORPUS.exists():
    DEFAULT_CORPUS = Path("/work/shared/corpus")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def baseline_module(rev: str):
    """gateway/message/mime.py as of git revision `rev`, imported as module `mime_baseline`."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "-C", str(root), "show", f"{rev}:gateway/message/mime.py"], check=True,
                            capture_output=True).stdout
    path = Path(tempfile.mkdtemp()) / "mime_baseline.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("mime_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mime_baseline"] = module
    spec.loader.exec_module(module)
    return module


def best_ms(parse, raw: bytes, repeat: int):
    best, parsed = float("inf"), None
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        parsed = parse(raw)
        best = min(best, time.perf_counter() - start)
    return best * 1000, parsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--repeat", type=int, default=3, help="parse each message this many times; best time counts")
    ap.add_argument("--baseline", help="also time gateway/message/mime.py as of this git revision")
    ap.add_argument("folders", nargs="*", default=["ham", "commercial", "confidential", "malformed"])
    args = ap.parse_args()
    old = baseline_module(args.baseline) if args.baseline else None
    for folder in args.folders:
        files = sorted((args.corpus / folder).glob("*.eml"))
        times: list[float] = []
        old_times: list[float] = []
        defects: Counter = Counter()
        flagged: list[str] = []
        for path in files:
            raw = path.read_bytes()
            if old is not None:
                old_times.append(best_ms(old.parse, raw, args.repeat)[0])
            ms, parsed = best_ms(mime.parse, raw, args.repeat)
            times.append(ms)
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
        if old_times:
            print(f"    baseline {args.baseline}: parse ms median {statistics.median(old_times):.3f} "
                  f"p99 {percentile(old_times, 0.99):.3f} max {max(old_times):.1f} total {sum(old_times) / 1000:.2f} s")
        for reason, count in defects.most_common():
            print(f"    {reason}: {count}")
        for line in flagged[:15]:
            print(f"    - {line}")


if __name__ == "__main__":
    main()
