"""scan(mail) -> findings: every enabled detector under a timeout; those that wait on something else
(clamd, DNS, child processes) concurrently, the CPU-bound rest one after the other meanwhile.

A detector that raises or times out yields `error.<detector>`: "could not check" is a result that
the policy acts on, never a pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, replace

from gateway import offload
from gateway.config import Settings
from gateway.context import Context
from gateway.detectors import REGISTRY
from gateway.detectors.base import Detector, OptionError
from gateway.matching.contentscan import ScanGroup
from gateway.message import mime
from gateway.model import Direction, Envelope, Finding, Mail, Verdict
from gateway.policy import Policy, PolicyError
from gateway.quarantine import Store
from gateway.senderauth.authresults import AuthResults

log = logging.getLogger("gateway.pipeline")


PARSE_INLINE_BYTES = 32 * 1024
"""Messages smaller than this are parsed on the event loop (a thread hop costs more than their parse)."""


def direction_of(settings: Settings, envelope: Envelope) -> Direction:
    """outbound: any recipient outside; internal: local sender from an internal client to local
    recipients; inbound: everything else (mail from outside, or claiming a local sender from outside)."""
    if any(not settings.is_local(r) for r in envelope.rcpt_tos):
        return Direction.OUTBOUND
    if settings.is_internal_client(envelope.client_address) and settings.is_local(envelope.mail_from):
        return Direction.INTERNAL
    return Direction.INBOUND


def new_id() -> str:
    """A quarantine and log id that sorts by time: 12 hex digits of milliseconds, 8 random."""
    return f"{int(time.time() * 1000):012x}{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Inspection:
    mail: Mail
    verdict: Verdict
    timings: dict[str, float]          # stage or detector -> milliseconds
    # side outputs of the detectors, for our headers (also in mail.context, where the actions read them)
    auth: AuthResults | None = None    # sender authentication, for Authentication-Results
    scanner_version: str = ""          # clamd's version when it scanned files, for X-Gateway-Scanned


class Pipeline:
    def __init__(self, settings: Settings, policy: Policy, *, store: Store | None = None) -> None:
        self.settings = settings
        self.policy = policy
        self.store = store          # shared memory for detectors (chain letters), handed on in each context
        self.active = 0                 # messages being inspected: a replaced pipeline closes at 0
        self.limits = mime.Limits(
            max_depth=settings.pipeline.max_depth, max_parts=settings.pipeline.max_parts,
            max_header_bytes=settings.pipeline.max_header_bytes,
            max_decoded_bytes=settings.pipeline.max_decoded_bytes)
        self.detectors: list[Detector] = []
        for name in policy.detectors:
            try:
                self.detectors.append(REGISTRY[name](settings, policy.detector_options.get(name, {})))
            except OptionError as e:
                where = policy.option_sources.get(name, policy.sources[0] if policy.sources else "policy")
                raise PolicyError(f"{where}: {e}") from None
        # The content detectors' lexicons, scanned together once per message; owned by this pipeline, so
        # that a policy reload builds new ones.
        self.lexicons = ScanGroup("content-lexicons")
        for detector in self.detectors:
            lexicon = getattr(detector, "shared_lexicon", None)
            if lexicon is not None:
                self.lexicons.add(detector.name, lexicon)
        if self.lexicons.members:
            self.lexicons.prepare()
        for detector in self.detectors:
            prepare = getattr(detector, "prepare", None)
            if prepare is not None:
                prepare()

    async def close(self) -> None:
        for detector in self.detectors:
            closer = getattr(detector, "close", None)
            if closer:
                await closer()

    def mail(self, envelope: Envelope, raw: bytes, *, direction: Direction | None = None,
             mail_id: str | None = None, received_at: float | None = None) -> Mail:
        if envelope.mail_from == "<>":      # the null sender (bounces) as aiosmtpd hands it on: "" everywhere
            envelope = replace(envelope, mail_from="")
        return Mail(id=mail_id or new_id(), envelope=envelope, raw=raw, parsed=mime.parse(raw, self.limits),
                    direction=direction or direction_of(self.settings, envelope),
                    received_at=received_at or time.time(), context=self.context())

    def context(self) -> Context:
        """A new message's context: this pipeline's settings and content lexicons."""
        return Context(settings=self.settings, lexicons=self.lexicons if self.lexicons.members else None,
                       letters=self.store)

    async def inspect(self, envelope: Envelope, raw: bytes, *, direction: Direction | None = None,
                      mail_id: str | None = None, received_at: float | None = None,
                      earlier: tuple[Finding, ...] | None = None) -> Inspection:
        """Parse, scan and decide. `earlier` marks a re-scan (release from the quarantine): detectors
        that judge how the message arrived (`rescan = False`, e.g. DKIM/SPF) are not run again, and
        their findings from receipt are kept."""
        self.active += 1
        try:
            return await self._inspect(envelope, raw, direction, mail_id, received_at, earlier)
        finally:
            self.active -= 1

    async def _inspect(self, envelope: Envelope, raw: bytes, direction: Direction | None, mail_id: str | None,
                       received_at: float | None, earlier: tuple[Finding, ...] | None) -> Inspection:
        timings: dict[str, float] = {}
        mail_id = mail_id or new_id()
        received_at = received_at or time.time()
        budget = self.settings.pipeline.message_timeout
        holder: list[Mail] = []
        try:
            async with asyncio.timeout(budget):
                findings = await self._examine(envelope, raw, direction, mail_id, received_at, earlier, timings,
                                               holder)
        except TimeoutError:
            # The per-message budget: whatever did not finish (a parse or a detector stuck on hostile input)
            # is "could not check", so the policy answers tempfail and the sending MTA retries later.
            log.warning("inspection of %s did not finish within %gs", mail_id, budget)
            if not holder:             # stuck in the parser: a Mail without a parsed tree, for the reply and logs
                holder.append(Mail(id=mail_id, envelope=envelope, raw=raw, parsed=mime.parse(b"", self.limits),
                                   direction=direction or direction_of(self.settings, envelope),
                                   received_at=received_at, context=self.context()))
            findings = [Finding(kind="error.pipeline", detector="pipeline",
                                detail=f"The inspection of this message did not finish within {budget:g} s")]
        mail = holder[0]
        start = time.perf_counter()
        verdict = self.policy.decide(mail.direction, findings)
        timings["policy"] = _ms(start)
        return Inspection(mail, verdict, timings, mail.context.auth, mail.context.scanner_version)

    async def _examine(self, envelope: Envelope, raw: bytes, direction: Direction | None, mail_id: str,
                       received_at: float, earlier: tuple[Finding, ...] | None, timings: dict[str, float],
                       holder: list[Mail]) -> list[Finding]:
        start = time.perf_counter()
        # Parsed in a worker thread unless small, so that a pathological message cannot stall the event
        # loop and the message budget above can still answer for it. Small is where the worst case is
        # short: 400 nested multiparts in 26 KB take 0.15 s, deeper ones stop at the depth limit.
        mail = await offload.run(len(raw), lambda: self.mail(envelope, raw, direction=direction, mail_id=mail_id,
                                                             received_at=received_at), PARSE_INLINE_BYTES)
        holder.append(mail)
        timings["parse"] = _ms(start)
        start = time.perf_counter()
        if earlier is None:
            findings = await self.scan(mail, timings)
        else:
            kept = {d.name for d in self.detectors if not getattr(d, "rescan", True)}
            findings = await self.scan(mail, timings, skip=kept)
            findings = [f for f in earlier if f.detector in kept] + findings
        timings["detectors"] = _ms(start)
        return findings

    async def scan(self, mail: Mail, timings: dict[str, float] | None = None,
                   skip: frozenset[str] | set[str] = frozenset()) -> list[Finding]:
        """Detectors that wait on something else (clamd, DNS, child processes, worker threads) run as
        concurrent tasks; the rest, CPU work on the event loop, run one after the other meanwhile: a task
        and a timer each cost more than most of them take (about 0.3 ms per message in all)."""
        detectors = [d for d in self.detectors if d.name not in skip]
        waiting = {d.name: asyncio.ensure_future(self._run(d, mail, timings))
                   for d in detectors if getattr(d, "waits", False)}
        try:
            found = await self._in_turn([d for d in detectors if d.name not in waiting], mail, timings)
            for name, task in waiting.items():
                found[name] = await task
        finally:
            for task in waiting.values():
                task.cancel()
        return [f for d in detectors for f in found[d.name]]

    async def _in_turn(self, detectors: list[Detector], mail: Mail,
                       timings: dict[str, float] | None) -> dict[str, list[Finding]]:
        """Each detector in turn, all under one deadline (the same as when they all started together):
        one that is still running at the deadline, and any not started by then, could not check."""
        found: dict[str, list[Finding]] = {}
        timeout = self.settings.pipeline.detector_timeout
        try:
            async with asyncio.timeout(timeout):
                for detector in detectors:
                    found[detector.name] = await self._guarded(detector, mail, timings)
        except TimeoutError:
            for detector in detectors:
                if detector.name not in found:
                    found[detector.name] = _timed_out(detector, timeout, mail)
        return found

    async def _run(self, detector: Detector, mail: Mail, timings: dict[str, float] | None) -> list[Finding]:
        timeout = self.settings.pipeline.detector_timeout
        try:
            async with asyncio.timeout(timeout):
                return await self._guarded(detector, mail, timings)
        except TimeoutError:
            return _timed_out(detector, timeout, mail)

    async def _guarded(self, detector: Detector, mail: Mail, timings: dict[str, float] | None) -> list[Finding]:
        start = time.perf_counter()
        try:
            return list(await detector.check(mail))
        except Exception as e:
            log.exception("detector %s failed on %s", detector.name, mail.id)
            return [Finding(kind=f"error.{detector.name}", detector=detector.name,
                            detail=f"The {detector.name} check failed ({type(e).__name__})")]
        finally:
            if timings is not None:
                timings[f"detector.{detector.name}"] = _ms(start)


def _timed_out(detector: Detector, timeout: float, mail: Mail) -> list[Finding]:
    log.warning("detector %s timed out after %.0fs on %s", detector.name, timeout, mail.id)
    return [Finding(kind=f"error.{detector.name}", detector=detector.name,
                    detail=f"The {detector.name} check did not finish within {timeout:g} s")]


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
