#!/usr/bin/env python3
"""Train the small explainable linear model of the `commercial` detector.

Usage: .venv/bin/python scripts/train_content.py [CORPUS_DIR] [--out policies/models/commercial.json]
                                                 [--folds 5] [--seed 1]

Data and provenance (see /work/shared/corpus/README.md for the corpus):
  positives  commercial/spamassassin-spam2-*  SpamAssassin public corpus spam_2 (CC0-1.0 contents, PDDL-1.0)
  negatives  ham/spamassassin-easyham2-*      SpamAssassin public corpus easy_ham_2 (CC0-1.0 / PDDL-1.0)
             ham/enron-*                      Enron e-mail (U.S. public record, released by FERC)
Both licences permit shipping derived weights. Only the message text (subject and body, as the gateway
extracts it) and three bulk-mail signals are used; no header addresses, no list names.

Model: logistic regression over BINARY word unigram and bigram features, trained with the commercial
lexicon's weights as a fixed offset (so the model learns only what the hand-written lexicon misses),
strong L2 regularisation, features kept only if they occur in at least MIN_DF messages, contain no
digit, and are not corpus-identifying (STOP below: list and company names that would teach the model
where a message came from instead of what it says). After training, only the TOP_K strongest weights
are kept and the model is refitted on them, so the shipped file stays small and every feature that
counts can be shown as evidence. The script prints K-fold cross-validated precision, recall and ham
false-positive rate at the detector's default threshold before fitting the final model on all data.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway import mime  # noqa: E402
from gateway.detectors.commercial import DEFAULTS, signals  # noqa: E402
from gateway.matching.linear import features, sigmoid, tokens  # noqa: E402
from gateway.matching.normaliser import for_lexicons as normalise  # noqa: E402
from gateway.matching.weighted import Lexicon, distinct  # noqa: E402
from gateway.message.text import extract  # noqa: E402
from gateway.model import Direction, Envelope, Mail  # noqa: E402

MIN_DF = 8
TOP_K = 1200
L2 = 3e-3
EPOCHS = 12
_STOP_WORDS = (
    "enron ect hou corp na spamassassin sourceforge exmh razor ilug irish linux.ie fork xent zzzz geocrawler "
    "listinfo mailman yahoogroups egroups lists list-id jm jmason netnoteinc sf sfnet slashdot freshmeat "
    "redhat rpm apt debian spamassassin-talk spamassassin-devel razor-users exmh-users exmh-workers"
)
STOP = frozenset(_STOP_WORDS.split())


def load(corpus: Path) -> list[tuple[set[str], float, int]]:
    """(features, lexicon offset, label) for every commercial and ham item."""
    lexicon = Lexicon.load(ROOT / "policies" / DEFAULTS["lexicon"])
    rows = []
    for line in (corpus / "manifest.tsv").read_text().splitlines()[1:]:
        path, label, _ = line.split("\t", 2)
        if label not in ("commercial", "ham"):
            continue
        raw = (corpus / path).read_bytes()
        parsed = mime.parse(raw)
        mail = Mail("train", Envelope("a@example.org", ("b@example.gov",)), raw, parsed, Direction.INBOUND, 0.0)
        text = extract(mail).joined()[: DEFAULTS["max_chars"]]
        offset = sum(h.entry.weight for h in distinct(lexicon.scan(normalise(text))))
        feats = {f for f in features(tokens(text[: DEFAULTS["model_chars"]])) if usable(f)}
        feats.update(signals(parsed))
        rows.append((feats, offset, 1 if label == "commercial" else 0))
    return rows


def usable(feature: str) -> bool:
    return not any(c.isdigit() for c in feature) and not any(w in STOP for w in feature.split())


def fit(rows, vocab: set[str], seed: int) -> tuple[float, dict[str, float]]:
    """Logistic regression by AdaGrad SGD with L2, on binary features restricted to vocab."""
    rng = random.Random(seed)
    weights: dict[str, float] = {}
    grads: dict[str, float] = {}
    bias, bias_g = 0.0, 0.0
    order = list(range(len(rows)))
    rate = 0.3
    for _ in range(EPOCHS):
        rng.shuffle(order)
        for i in order:
            feats, offset, y = rows[i]
            present = [f for f in feats if f in vocab]
            z = bias + offset + sum(weights.get(f, 0.0) for f in present)
            error = sigmoid(z) - y
            bias_g += error * error
            bias -= rate * error / math.sqrt(bias_g + 1e-8)
            for f in present:
                w = weights.get(f, 0.0)
                g = error + L2 * w * len(rows) / 100
                grads[f] = grads.get(f, 0.0) + g * g
                weights[f] = w - rate * g / math.sqrt(grads[f] + 1e-8)
    return bias, weights


def train(rows, seed: int) -> tuple[float, dict[str, float]]:
    df: dict[str, int] = {}
    for feats, _, _ in rows:
        for f in feats:
            df[f] = df.get(f, 0) + 1
    vocab = {f for f, n in df.items() if n >= MIN_DF}
    bias, weights = fit(rows, vocab, seed)
    kept = set(sorted(weights, key=lambda f: -abs(weights[f]))[:TOP_K])
    bias, weights = fit(rows, kept, seed)
    return bias, {f: round(w, 4) for f, w in weights.items() if abs(w) >= 0.01}


def predict(bias: float, weights: dict[str, float], feats: set[str], offset: float) -> float:
    return sigmoid(bias + offset + sum(weights.get(f, 0.0) for f in feats))


def cross_validate(rows, folds: int, seed: int, threshold: float) -> None:
    rng = random.Random(seed)
    index = list(range(len(rows)))
    rng.shuffle(index)
    scored = []
    for k in range(folds):
        test = set(index[k::folds])
        bias, weights = train([rows[i] for i in index if i not in test], seed)
        scored += [(predict(bias, weights, rows[i][0], rows[i][1]), rows[i][2]) for i in test]
    for t in sorted({0.5, 0.6, 0.7, 0.8, 0.9, threshold}):
        tp = sum(1 for p, y in scored if p >= t and y == 1)
        fp = sum(1 for p, y in scored if p >= t and y == 0)
        fn = sum(1 for p, y in scored if p < t and y == 1)
        ham = sum(1 for _, y in scored if y == 0)
        p = tp / max(1, tp + fp)
        r = tp / max(1, tp + fn)
        print(f"{folds}-fold CV at threshold {t}: P {p:.3f} R {r:.3f} F1 {2 * p * r / max(1e-9, p + r):.3f} "
              f"ham FP {fp}/{ham} ({100 * fp / max(1, ham):.2f}%)")


def main() -> int:
    parser = argparse.ArgumentParser(description="Train the commercial detector's linear model")
    parser.add_argument("corpus", nargs="?", type=Path, default=ROOT.parents[1] / "shared" / "corpus")
    parser.add_argument("--out", type=Path, default=ROOT / "policies" / DEFAULTS["model"])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rows = load(args.corpus)
    print(f"{len(rows)} messages: {sum(r[2] for r in rows)} commercial, {sum(1 - r[2] for r in rows)} ham")
    if args.folds > 1:
        cross_validate(rows, args.folds, args.seed, DEFAULTS["threshold"])
    bias, weights = train(rows, args.seed)
    top = sorted(weights.items(), key=lambda fw: -fw[1])
    print("strongest commercial features:", ", ".join(f for f, _ in top[:25]))
    print("strongest ham features:", ", ".join(f for f, _ in top[-15:]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "about": "commercial detector: logistic regression over binary word unigrams/bigrams; "
                 "trained by scripts/train_content.py with policies/lexicons/commercial.txt as a fixed offset",
        "provenance": "SpamAssassin public corpus spam_2 and easy_ham_2 (CC0-1.0/PDDL-1.0); "
                      "Enron e-mail (U.S. public record); via /work/shared/corpus manifest",
        "trained": datetime.now(UTC).strftime("%Y-%m-%d"),
        "settings": {"min_df": MIN_DF, "top_k": TOP_K, "l2": L2, "epochs": EPOCHS, "seed": args.seed},
        "bias": round(bias, 4),
        "weights": dict(sorted(weights.items())),
    }, indent=0, ensure_ascii=False) + "\n")
    print(f"wrote {args.out} ({len(weights)} features)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
