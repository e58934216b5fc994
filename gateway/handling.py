"""One path for every message, whichever front end received it: inspect, decide, act, log, measure.

A front end only translates its protocol: it builds the `Envelope` and the raw bytes, calls
`Handling.handle` with a `Handoff` that says how a message that goes on leaves (the SMTP front end
sends it to the next hop; the milter gives the MTA header edits), and turns the SMTP reply it gets
back into its own protocol. Every reply text is written in gateway/actions.py.

A release from the quarantine decides differently (it compares its re-scan with the held verdict,
gateway/release.py) but records its delivery here too, with `front="release"`, so that a released
message shows in the same log line and metrics without being counted as a second received one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from gateway import logs, observability
from gateway.actions import TEMPFAIL_INTERNAL, Actions
from gateway.model import Envelope, Mail, Verdict
from gateway.pipeline import Pipeline

log = logging.getLogger("gateway.handling")
TEMPFAIL_STARTING = "451 4.3.2 Starting up, please try again later"


class Handoff(Protocol):
    """How one front end lets a message go on."""

    front: str          # "smtp" | "milter": the log line's `front` and the metrics' label
    holds: bool         # True: a quarantine verdict is handed on too (to the MTA's hold queue)

    async def pass_on(self, mail: Mail, verdict: Verdict, message: bytes) -> str:
        """Hand on the relayable form of the message; the SMTP reply for the client."""
        ...

    async def drop(self) -> None:
        """The message does not go on from here (held by us or refused): end what was opened for it."""
        ...

    async def failed(self) -> None:
        """An internal error: the message is answered 451 and nothing of it goes on."""
        ...


@dataclass(frozen=True)
class Handled:
    """What became of one received message: the reply, and (unless an internal error came first) the
    message and its verdict."""

    reply: str
    mail: Mail | None = None
    verdict: Verdict | None = None
    timings: dict[str, float] = field(default_factory=dict)


WARMUP_WAIT = 60.0
"""How long a message received while the process is still building its pipeline waits for it (then 451)."""


class Handling:
    """`pipeline` may be None while the process warms up (messages wait for `ready`) and is replaced on a
    policy reload: each message keeps the pipeline it started with."""

    def __init__(self, pipeline: Pipeline | None, actions: Actions) -> None:
        self.pipeline = pipeline
        self.actions = actions
        self.ready = asyncio.Event()
        if pipeline is not None:
            self.ready.set()

    def swap(self, pipeline: Pipeline) -> Pipeline | None:
        """The pipeline for the next messages; the one they replace (messages in flight keep it)."""
        old, self.pipeline = self.pipeline, pipeline
        self.ready.set()
        return old

    async def handle(self, envelope: Envelope, raw: bytes, handoff: Handoff, *, queue_id: str = "") -> Handled:
        """Inspect, decide, act, log and measure one message; never raises for our own errors (451)."""
        started = time.perf_counter()
        if self.pipeline is None:
            try:
                await asyncio.wait_for(self.ready.wait(), WARMUP_WAIT)
            except TimeoutError:
                await handoff.failed()
                observability.reply_only(TEMPFAIL_STARTING, handoff.front)
                return Handled(TEMPFAIL_STARTING)
        pipeline = self.pipeline
        try:
            inspection = await pipeline.inspect(envelope, raw)
            mail, verdict = inspection.mail, inspection.verdict
            action_start = time.perf_counter()
            reply = await self.actions.apply(mail, verdict, handoff)
        except Exception:
            log.exception("internal error while handling a message from %s%s", envelope.client_address,
                          f" (queue id {queue_id})" if queue_id else "")
            await handoff.failed()
            observability.reply_only(TEMPFAIL_INTERNAL, handoff.front)
            return Handled(TEMPFAIL_INTERNAL)
        timings = dict(inspection.timings)
        timings["action"] = _ms(action_start)
        timings["total"] = _ms(started)
        record(handoff.front, mail, verdict, reply, timings, queue_id=queue_id)
        return Handled(reply, mail, verdict, timings)


def record(front: str, mail: Mail, verdict: Verdict, reply: str, timings: dict[str, float], *,
           queue_id: str = "") -> None:
    """The one log line and the metrics of a message handled (received or released)."""
    envelope = mail.envelope
    fields: dict[str, object] = {"id": mail.id, "front": front}
    if queue_id:
        fields["queue_id"] = queue_id
    logs.message(**fields, client=envelope.client_address, helo=envelope.helo, direction=mail.direction.value,
                 mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos), size=mail.size,
                 verdict=verdict.action.value, rule=verdict.rule, kinds=list(verdict.kinds),
                 monitored=list(verdict.monitored), reply=reply.split(" ", 1)[0], ms=timings)
    observability.message(mail.direction.value, verdict.action.value, verdict.rule, verdict.kinds, timings,
                          mail.size, reply, front)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
