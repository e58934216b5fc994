"""antivirus: every file is scanned by clamd, or held (policy: Provisions for Retrieving and Transmitting
Information, "All files downloaded from the Internet must be checked for computer viruses").

Scanned through clamd's INSTREAM (gateway.scanners.clamd): every attachment and non-text part, and the raw
message once as a whole, so that what a MIME trick hides from our parser is still seen by clamd's.
clamd opens the archives itself (ScanArchive); gateway.message.archives reports what nobody can open
(encrypted, over the limits, unparsable). Anything not scanned is `unscanned.<reason>`, never clean.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, ClassVar

from gateway.config import Settings
from gateway.detectors.base import options_with_defaults
from gateway.headers import safe_value
from gateway.message import archives
from gateway.model import Finding, Mail, Verdict
from gateway.scanners import clamd

log = logging.getLogger("gateway.antivirus")

DEFAULTS = {"scan_whole_message": True}
WHOLE = "whole message"
# clamd's heuristic "signatures" that mean "could not look", not "found something".
HEURISTIC_KINDS = (("Heuristics.Limits.Exceeded", "limits_exceeded"), ("Heuristics.Encrypted.", "encrypted"))
# A message without files is still read by our own parser: a scanner outage does not hold it.
QUIET_WITHOUT_FILES = frozenset({"unscanned.scanner_unavailable", "unscanned.timeout"})
# What a notice may say (staff read it): what happened to the file, never the scanner's address or error.
EXPLAIN = {
    "scanner_unavailable": "The virus scanner was not available when the message arrived, so {what} could not "
                           "be checked for viruses",
    "timeout": "The virus scanner did not finish checking {what} in time, so it was not checked for viruses",
    "limits_exceeded": "{what} is too large or too complex for the virus scanner, so it was not checked for viruses",
    "encrypted": "{what} is encrypted (password-protected), so the virus scanner could not look inside it",
    "unparsable": "The virus scanner could not read {what}, so it was not checked for viruses",
}


class Cache:
    """content hash -> signature ("" = clean), for a short time; only definite answers are kept."""

    def __init__(self, seconds: float, entries: int) -> None:
        self.seconds, self.entries = seconds, entries
        self.items: OrderedDict[bytes, tuple[float, str]] = OrderedDict()

    def get(self, key: bytes) -> str | None:
        hit = self.items.get(key)
        if hit is None or hit[0] < time.monotonic():
            self.items.pop(key, None)
            return None
        return hit[1]

    def put(self, key: bytes, signature: str) -> None:
        if self.seconds <= 0:
            return
        self.items[key] = (time.monotonic() + self.seconds, signature)
        self.items.move_to_end(key)
        while len(self.items) > self.entries:
            self.items.popitem(last=False)


async def digest(data: bytes) -> bytes:
    if len(data) < 256 * 1024:
        return hashlib.sha256(data).digest()
    return await asyncio.to_thread(lambda: hashlib.sha256(data).digest())


class Antivirus:
    name: ClassVar[str] = "antivirus"
    waits: ClassVar[bool] = True        # on clamd
    kinds: ClassVar[frozenset[str]] = frozenset({
        "virus", "unscanned.scanner_unavailable", "unscanned.timeout", "unscanned.limits_exceeded",
        "unscanned.encrypted", "unscanned.unparsable"})

    def __init__(self, settings: Settings, options: Mapping[str, Any]) -> None:
        opts = options_with_defaults(self.name, options, DEFAULTS)
        av = settings.antivirus
        self.whole = opts["scan_whole_message"]
        self.limits = archives.limits_for(av)
        self.clamd = clamd.Clamd(av.clamd, timeout=av.timeout, stream_max_length=av.stream_max_length,
                                 max_concurrency=av.max_concurrency) if av.clamd else None
        self.cache = Cache(av.cache_seconds, av.cache_entries)
        self.version_seconds = av.version_seconds
        self._version: tuple[float, str] = (0.0, "")
        self.health_timeout = settings.metrics.healthz_timeout
        self.probed: clamd.Version | None = None     # clamd's VERSION at the last health probe that passed

    async def check(self, mail: Mail) -> list[Finding]:
        inventory = await archives.inventory(mail, self.limits)
        findings = [Finding(kind=f"unscanned.{p.kind}", detector=self.name, part=p.label, detail=p.detail)
                    for p in inventory.problems]
        files = [f for f in inventory.files if f.depth == 0]
        if self.clamd is None:
            return findings + [self.unscanned("scanner_unavailable", f.label, archives.shown(f.name) or
                                              "the attachment", "no scanner is configured") for f in files]
        targets = [(f.label, archives.shown(f.name) or "the attachment", f.data) for f in files]
        if self.whole:
            targets.append((WHOLE, "the message as a whole", mail.raw))
        results = await asyncio.gather(*(self.scan(data) for _, _, data in targets), self.version(),
                                       return_exceptions=True)
        version = results.pop()
        for (label, name, _), result in zip(targets, results, strict=True):
            for finding in self.explain(label, name, result):
                if label == WHOLE and (any(f.kind == finding.kind for f in findings) or
                                       (not files and finding.kind in QUIET_WITHOUT_FILES)):
                    continue    # the whole-message scan only adds what the file scans missed
                findings.append(finding)
        if isinstance(version, str) and version and files:
            mail.context.scanner_version = version
        return findings

    def explain(self, label: str, name: str, result: object) -> list[Finding]:
        if isinstance(result, clamd.Unavailable):
            return [self.unscanned("scanner_unavailable", label, name, str(result))]
        if isinstance(result, clamd.ScanTimeout):
            return [self.unscanned("timeout", label, name, str(result))]
        if isinstance(result, clamd.LimitsExceeded):
            return [self.unscanned("limits_exceeded", label, name, str(result))]
        if isinstance(result, clamd.ClamdError):
            return [self.unscanned("unparsable", label, name, str(result))]
        if isinstance(result, BaseException):
            raise result
        signature = str(result)
        if not signature:
            return []
        for prefix, reason in HEURISTIC_KINDS:
            if signature.startswith(prefix):
                return [self.unscanned(reason, label, name, f"clamd reported {signature}")]
        return [Finding(kind="virus", detector=self.name, part=label, evidence=(signature,),
                        detail=f"Virus {signature} found in {name}")]

    def unscanned(self, reason: str, label: str, name: str, why: str) -> Finding:
        """The finding in staff language; the technical reason (socket, host, clamd's reply) goes to the log."""
        log.warning("%s not checked for viruses (%s): %s", label, reason, why)
        detail = EXPLAIN[reason].format(what=name if name.startswith("the ") else f"the file {name}")
        return Finding(kind=f"unscanned.{reason}", detector=self.name, part=label, detail="T" + detail[1:])

    async def scan(self, data: bytes) -> str:
        key = await digest(data)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        result = await self.clamd.instream(data)
        self.cache.put(key, result.signature)
        return result.signature

    async def version(self) -> str:
        expires, value = self._version
        if value and expires > time.monotonic():
            return value
        value = safe_value(await self.clamd.version(), 200)
        self._version = (time.monotonic() + self.version_seconds, value)
        return value


    async def health(self) -> str | None:
        """/healthz and /metrics: clamd answers PING (and VERSION, for the signature age) within
        [metrics] healthz_timeout; "off" when no scanner is configured (files are held, by design)."""
        if self.clamd is None:
            return "off"
        self.probed = None
        # a little inside the caller's bound, so that clamd's silence is seen (and counted) here
        self.probed = await self.clamd.probe(self.health_timeout * 0.9)
        return None

    def health_details(self) -> dict[str, Any]:
        """What /healthz shows besides ok/failing: clamd's version and how old its newest signatures are."""
        if self.clamd is None:
            return {"scanner": "off"}
        if self.probed is None:
            return {"scanner": "clamd", "version": None, "signatures": None}
        age = self.probed.age()
        return {"scanner": "clamd", "version": self.probed.reply,
                "signatures": self.probed.signatures,
                "signatures_published": (time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.probed.published))
                                         if self.probed.published is not None else "unknown"),
                "signature_age_seconds": round(age) if age is not None else "unknown"}

    def scrape_values(self) -> dict[str, float]:
        """Read at scrape time, after health(): NaN while the age is unknown (no date from clamd)."""
        if self.clamd is None:
            return {}
        age = self.probed.age() if self.probed is not None else None
        return {"gateway_clamd_signature_age_seconds": math.nan if age is None else age}


def scanned_header(mail: Mail, verdict: Verdict) -> list[tuple[str, str]]:
    """X-Gateway-Scanned on relayed messages that had files: which scanner, which signatures."""
    version = mail.context.scanner_version
    if version and mail.parsed.attachments:
        return [("X-Gateway-Scanned", str(version))]
    return []
