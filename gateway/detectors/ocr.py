"""ocr: pictures whose text could not be read within the per-message OCR limits ([ocr] in gateway.toml).

The reading itself is gateway/message/ocr.py, shared with the text extraction that the content detectors
use; this detector only makes sure that what was left unread is a finding, never a silent pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from gateway.config import Settings
from gateway.detectors.base import OptionError, options_with_defaults
from gateway.message import ocr
from gateway.model import Finding, Mail


class Ocr:
    name: ClassVar[str] = "ocr"
    waits: ClassVar[bool] = True        # on tesseract and poppler child processes
    kinds: ClassVar[frozenset[str]] = frozenset({"unscanned.ocr_limits"})

    def __init__(self, settings: Settings, options: Mapping[str, Any]) -> None:
        options_with_defaults(self.name, options, {})
        self.settings = settings
        if settings.ocr.enabled:
            problem = ocr.engine_problem(settings.ocr)
            if problem:         # found when the gateway starts, not by tempfailing every scanned message
                raise OptionError(f"detector {self.name!r}: {problem}")

    async def check(self, mail: Mail) -> list[Finding]:
        result = await ocr.message_ocr(mail, self.settings)
        return [Finding(kind="unscanned.ocr_limits", detector=self.name, part=label,
                        detail=f"Not all text in {label} could be checked: {why}")
                for label, why in result.skipped]
