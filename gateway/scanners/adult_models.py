"""Models for the adult_content detector: a small interface and the backends a site can choose.

A model scores one decoded image (Pillow, first frame) from 0.0 (clearly not adult content) to 1.0.
It runs in the picture worker pool, so `score` may block; it must never download anything.

- "skin" (default, built in): a classical skin-tone heuristic in the tradition of Ap-apid's "An
  Algorithm for Nudity Detection" (2005) and nude.js: how much of the picture is skin-coloured (Kovac
  et al.'s RGB rule together with a YCbCr range), how much of that is one connected region, and
  whether that region has the texture of a photograph rather than a flat fill. No weights, no
  third-party code, same licence as the gateway. It is coarse: close-up portraits and beach photos
  score high, drawings score low; tune the policy threshold, or run the rule in monitor mode first.
- "nudenet" (optional: `pip install .[adult]`): NudeNet 3.4's bundled 320n.onnx detector (YOLOv8n,
  runs on onnxruntime). Its wheel's metadata says MIT but it carries the AGPL-3.0 licence, which
  the maintainer confirms applies because of YOLOv8 (notAI-tech/NudeNet issue #177). A site must
  accept the AGPL before enabling it, so it is never installed or chosen by default.

Adding a backend: a class with `name` and `score(image) -> float`, and one entry in MODELS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class AdultModel(Protocol):
    name: str

    def score(self, image) -> float: ...      # image: PIL.Image.Image; 0.0 .. 1.0


class ModelUnavailable(RuntimeError):
    """The chosen model cannot be loaded here (its optional package is not installed)."""


def _ramp(value: float, low: float, high: float) -> float:
    """0 below low, 1 above high, linear in between."""
    if value <= low:
        return 0.0
    if value >= high:
        return 1.0
    return (value - low) / (high - low)


class SkinModel:
    name = "skin"
    SIDE = 96               # the picture is judged at this size: the decision is about large areas

    def score(self, image) -> float:
        small = image.convert("RGB")
        small.thumbnail((self.SIDE, self.SIDE))
        width, height = small.size
        raw = small.tobytes()
        pixels = list(zip(raw[0::3], raw[1::3], raw[2::3], strict=True))
        total = len(pixels)
        if total < 64:
            return 0.0
        skin = [_is_skin(r, g, b) for r, g, b in pixels]
        count = sum(skin)
        fraction = count / total
        if fraction < 0.15:
            return 0.0
        largest = _largest_region(skin, width, height)
        luma = [0.299 * r + 0.587 * g + 0.114 * b for (r, g, b), s in zip(pixels, skin, strict=True) if s]
        mean = sum(luma) / len(luma)
        spread = (sum((v - mean) ** 2 for v in luma) / len(luma)) ** 0.5
        # much skin, mostly in one body-sized region, with the shading of a photograph
        return round(_ramp(fraction, 0.15, 0.45) * _ramp(largest / count, 0.35, 0.65) * _ramp(spread, 3.0, 10.0), 4)


def _is_skin(r: int, g: int, b: int) -> bool:
    # Kovac, Peer & Solina (2003), uniform daylight; and the usual YCbCr skin cluster.
    if not (r > 95 and g > 40 and b > 20 and r > g and r > b and r - g > 15
            and max(r, g, b) - min(r, g, b) > 15):
        return False
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return 77 <= cb <= 127 and 133 <= cr <= 173


def _largest_region(mask: list[bool], width: int, height: int) -> int:
    """Pixels in the largest 4-connected region of the mask."""
    seen = bytearray(len(mask))
    best = 0
    for start, on in enumerate(mask):
        if not on or seen[start]:
            continue
        seen[start] = 1
        stack = [start]
        size = 0
        while stack:
            i = stack.pop()
            size += 1
            x = i % width
            for j in (i - width, i + width, i - 1 if x > 0 else -1, i + 1 if x < width - 1 else -1):
                if 0 <= j < len(mask) and mask[j] and not seen[j]:
                    seen[j] = 1
                    stack.append(j)
        best = max(best, size)
    return best


class NudeNetModel:
    """NudeNet's detector (AGPL-3.0, optional extra): the most confident exposed-body-part box."""

    name = "nudenet"
    EXPOSED = frozenset({"FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "FEMALE_BREAST_EXPOSED",
                         "BUTTOCKS_EXPOSED", "ANUS_EXPOSED"})

    def __init__(self) -> None:
        try:
            import numpy
            from nudenet import NudeDetector
        except ImportError as e:
            raise ModelUnavailable(
                "the 'nudenet' model needs the optional extra: pip install 'gateway[adult]' "
                f"(AGPL-3.0; see docs/images.md) ({e})") from None
        self.numpy = numpy
        self.detector = NudeDetector()      # loads the 320n.onnx bundled in the wheel; no download

    def score(self, image) -> float:
        rgb = image.convert("RGB")
        bgr = self.numpy.asarray(rgb)[:, :, ::-1].copy()     # OpenCV's channel order, decoded by Pillow
        found = self.detector.detect(bgr)
        return round(max((float(d["score"]) for d in found if d.get("class") in self.EXPOSED), default=0.0), 4)


MODELS: dict[str, Callable[[], AdultModel]] = {
    "skin": SkinModel,
    "nudenet": NudeNetModel,
}


def load(name: str) -> AdultModel:
    """Build the named model; ModelUnavailable when its optional package is missing."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ModelUnavailable(f"unknown adult-content model {name!r} (known: {', '.join(MODELS)})") from None
    return factory()
