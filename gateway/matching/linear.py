"""Small explainable linear models: logistic regression over binary word unigrams and bigrams.

A model file (policies/models/NAME.json, written by scripts/train_content.py) holds a bias and feature
weights; score = sigmoid(bias + offset + the weights of the features present). The features that
contributed most are the evidence, which is what makes the model explainable.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

from gateway.matching.weighted import LexiconError

TOKEN = re.compile(r"[a-z](?:[a-z0-9'-]*[a-z0-9])?")


def tokens(text: str, limit: int = 20000) -> list[str]:
    """Lower-case word tokens (the model's unigrams), at most `limit`."""
    return TOKEN.findall(text.lower())[:limit]


def features(words: list[str]) -> set[str]:
    """Binary unigram and bigram features ("free", "click here")."""
    feats = set(words)
    feats.update(map(" ".join, itertools.pairwise(words)))
    return feats


class LinearModel:
    """A logistic regression over binary unigram/bigram features, loaded from a small JSON file."""

    def __init__(self, bias: float, weights: dict[str, float], source: str = "<model>") -> None:
        self.bias = bias
        self.weights = weights
        self.unigrams = frozenset(k for k in weights if " " not in k)
        self.bigrams = frozenset(tuple(k.split(" ")) for k in weights if k.count(" ") == 1)
        self.source = source

    @classmethod
    def load(cls, path: Path | str) -> LinearModel:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(float(data["bias"]), {str(k): float(v) for k, v in data["weights"].items()}, str(path))
        except OSError as e:
            raise LexiconError(f"{path}: cannot read model: {e.strerror}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise LexiconError(f"{path}: not a linear model file ({e})") from None

    def contributions(self, text: str) -> list[tuple[str, float]]:
        """The features present in the text that carry a weight, strongest positive first."""
        weights = self.weights
        words = tokens(text)
        # The features of `features(words)` that have a weight, without making a string of every bigram.
        present = [(w, weights[w]) for w in self.unigrams.intersection(words)]
        present += [(f"{a} {b}", weights[f"{a} {b}"]) for a, b in self.bigrams.intersection(itertools.pairwise(words))]
        present.sort(key=lambda fw: -fw[1])
        return present

    def logit(self, contributions: list[tuple[str, float]]) -> float:
        return self.bias + sum(w for _, w in contributions)


def sigmoid(x: float) -> float:
    if x < -40:
        return 0.0
    if x > 40:
        return 1.0
    return 1.0 / (1.0 + math.exp(-x))
