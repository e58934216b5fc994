"""The per-message context: what the pipeline shares among the detectors of one message, and what
they leave for the actions.

The pipeline makes one for every message it parses (`Pipeline.mail`) with its settings and its
content lexicons. Work that several detectors need (the text, the archive inventory, OCR, the
lexicon scan) is computed by the first that asks and awaited by the others; the side outputs
(sender authentication results, the scanner's version) are read by the actions for our headers.
The gateway's store rides along too (`letters`), so that a detector remembering something for every
worker and node (chain_letter) reaches it without a process global. A `Mail` built outside a pipeline
(tests, benchmarks) has an empty context: each detector then passes its own settings, and shared work
is still done once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.matching.contentscan import ScanGroup
    from gateway.matching.weighted import Hit
    from gateway.message.archives import Inventory
    from gateway.message.ocr import OcrResult
    from gateway.message.plaintext import MessageText
    from gateway.quarantine import Store
    from gateway.senderauth.authresults import AuthResults


@dataclass(eq=False)
class Context:
    settings: Settings | None = None            # the pipeline's settings (the text limits, OCR)
    lexicons: ScanGroup | None = None           # the pipeline's content lexicons, scanned together
    # shared work, started by the first detector that asks
    text: asyncio.Future[MessageText] | None = None
    archives: asyncio.Future[Inventory] | None = None
    ocr: asyncio.Future[OcrResult] | None = None
    letters: Store | None = None                # the gateway's store: chain letters remembered department-wide
    lexicon_hits: asyncio.Future[tuple[str, dict[str, list[Hit]]]] | None = None
    # side outputs, for the actions' headers
    auth: AuthResults | None = None             # the auth detector's results: Authentication-Results
    scanner_version: str = ""                   # clamd's version when it scanned files: X-Gateway-Scanned
    received_auth: str = ""                     # on a release: our Authentication-Results value at receipt

    def shared(self, key: str) -> asyncio.Future[Any] | None:
        return getattr(self, key)

    def share(self, key: str, future: asyncio.Future[Any]) -> None:
        if key not in ("text", "archives"):
            raise KeyError(key)
        setattr(self, key, future)
