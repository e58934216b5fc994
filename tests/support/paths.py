"""Where things are: the checkout, the test data, and the development corpus (one finder for all tests)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


def find_corpus() -> Path:
    """$GATEWAY_CORPUS, else shared/corpus beside the checkout or beside any folder above it (worktrees sit
    deeper than the main checkout). The returned path may not exist: tests that need it skip."""
    if os.environ.get("GATEWAY_CORPUS"):
        return Path(os.environ["GATEWAY_CORPUS"])
    for parent in ROOT.parents:
        if (parent / "shared" / "corpus").is_dir():
            return parent / "shared" / "corpus"
    return ROOT.parent / "shared" / "corpus"


CORPUS = find_corpus()
