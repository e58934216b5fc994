"""The coverage-guided fuzz target (fuzz/fuzz_mime.py, atheris) run briefly, as a subprocess: it must end by
itself with no crash, hang or memory blow-up. Longer runs on demand: see docs/operations.md."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.paths import ROOT

SECONDS = int(os.environ.get("FUZZ_SECONDS", "20"))


def test_fuzz_mime_runs_clean(tmp_path):
    pytest.importorskip("atheris", reason="atheris is in the test extra (Linux wheels); run scripts/setup test")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz_mime.py"), f"-max_total_time={SECONDS}", "-max_len=16384",
         "-timeout=10", "-rss_limit_mb=1536", "-seed=1", f"-artifact_prefix={tmp_path}/", str(corpus)],
        cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 120)
    tail = proc.stderr[-3000:]
    findings = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-", "leak-"))]
    assert proc.returncode == 0 and not findings, tail
    runs = [line for line in proc.stderr.splitlines() if line.startswith("Done ")]
    assert runs, tail                                      # "Done 1234 runs in 20 second(s)"
    print(f"\nfuzz_mime: {runs[-1]}; corpus {len(list(corpus.iterdir()))} inputs")
    assert int(runs[-1].split()[1]) > 100
