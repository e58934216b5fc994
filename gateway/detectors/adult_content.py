"""adult_content: pornographic images, attached or inline (policy: "inappropriate materials including
pornography ... are neither accessed using the Internet nor transferred between department computers
and the Internet").

Each distinct image (by content hash) is scored once by the model the policy names (gateway/
adult_models.py) in the picture worker pool; an image whose score reaches the policy's threshold is
a finding. The finding names the image; the image itself is never put into the finding.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar

from gateway.config import Settings
from gateway.detectors.base import OptionError, options_with_defaults
from gateway.message import archives, images
from gateway.message.images import ImageError, Picture
from gateway.model import Finding, Mail
from gateway.scanners import adult_models

log = logging.getLogger("gateway.detectors.adult_content")

DEFAULTS = {
    "model": "skin",            # "skin" (built in) or "nudenet" (optional extra, AGPL-3.0)
    "threshold": 0.8,           # score from 0 to 1 at which an image is a finding
    "min_pixels": 10000,        # smaller images (icons, logos, tracking pixels) are not judged
    "max_images": 50,           # distinct images judged per message; more: unscanned.image_limits
}
_SCORES: OrderedDict[str, float | None] = OrderedDict()     # (model, content hash) -> score, gateway-wide
_SCORES_LOCK = threading.Lock()
_SCORES_SIZE = 4096


class AdultContent:
    name: ClassVar[str] = "adult_content"
    waits: ClassVar[bool] = True        # on its model, in a worker thread
    kinds: ClassVar[frozenset[str]] = frozenset({"adult_content.image", "unscanned.image_limits"})

    def __init__(self, settings: Settings, options: Mapping[str, Any]) -> None:
        opts = options_with_defaults(self.name, options, DEFAULTS)
        if not 0.0 <= opts["threshold"] <= 1.0:
            raise OptionError(f"detector {self.name!r}: option 'threshold' must be between 0 and 1")
        self.threshold = opts["threshold"]
        self.min_pixels = opts["min_pixels"]
        self.max_images = opts["max_images"]
        self.max_pixels = settings.ocr.max_pixels
        self.workers = settings.ocr.workers
        self.archive_limits = archives.limits_for(settings.antivirus)
        try:
            self.model = adult_models.load(opts["model"])
        except adult_models.ModelUnavailable as e:
            raise OptionError(f"detector {self.name!r}: option 'model': {e}") from None

    async def check(self, mail: Mail) -> list[Finding]:
        roots = images.archived_roots(mail.parsed)
        if not roots and not images.may_hold_pictures(mail.parsed):
            return []
        pictures = await images.run(self.workers, partial(images.pictures, pdf=False), mail.parsed,
                                     pool_name="adult")
        # a picture zipped is still a picture: the archive members, opened once per message
        pictures += await images.archived_pictures(mail, self.archive_limits, roots, pdf=False)
        if not pictures:
            return []
        distinct: dict[str, list[Picture]] = {}
        digests = await images.run(self.workers, _digests, pictures, pool_name="adult")  # megabytes: off the loop
        for picture, digest in zip(pictures, digests, strict=True):
            distinct.setdefault(f"{self.model.name}:{digest}", []).append(picture)
        keys = list(distinct)
        findings: list[Finding] = []
        if len(keys) > self.max_images:
            skipped = [p.label for key in keys[self.max_images:] for p in distinct[key]]
            findings.append(Finding(
                kind="unscanned.image_limits", detector=self.name, part=skipped[0],
                detail=f"{len(skipped)} images were not checked for adult content: over the limit of "
                       f"{self.max_images} distinct images per message"))
            keys = keys[:self.max_images]
        known = {key: _cached(key) for key in keys}
        missing = [key for key, score in known.items() if score is _MISSING]
        scores = await asyncio.gather(*(images.run(self.workers, self._score, distinct[key][0], pool_name="adult")
                                        for key in missing))
        for key, score in zip(missing, scores, strict=True):
            _remember(key, score)
            known[key] = score
        for key in keys:
            score = known[key]
            if score is None or score is _MISSING or score < self.threshold:
                continue
            for picture in distinct[key]:
                findings.append(Finding(
                    kind="adult_content.image", detector=self.name, part=picture.label, score=score,
                    detail=f"Image {picture.label} looks like adult content (score {score:.2f}, "
                           f"threshold {self.threshold:.2f}, {self.model.name} model)",
                    evidence=(f"{self.model.name} score {score:.2f}",)))
        return findings

    def _score(self, picture: Picture) -> float | None:
        """The model's score, or None for an image too small to judge or not decodable."""
        try:
            width, height = images.pixel_size(picture.data)
            if width * height < self.min_pixels:
                return None
            image = images.open_image(picture.data, self.max_pixels, draft=(256, 256))
            try:
                image = image.convert("RGB")     # every model gets RGB: its own failures are then the model's
            except Exception as e:
                raise ImageError(f"cannot be converted to RGB ({type(e).__name__})") from None
        except ImageError as e:
            log.debug("adult_content: %s: %s", picture.label, e)
            return None
        return float(self.model.score(image))


_MISSING = object()


def _digests(pictures: list[Picture]) -> list[str]:
    return [hashlib.sha256(p.data).hexdigest() for p in pictures]


def _cached(key: str):
    with _SCORES_LOCK:
        if key in _SCORES:
            _SCORES.move_to_end(key)
            return _SCORES[key]
        return _MISSING


def _remember(key: str, score: float | None) -> None:
    with _SCORES_LOCK:
        _SCORES[key] = score
        while len(_SCORES) > _SCORES_SIZE:
            _SCORES.popitem(last=False)
