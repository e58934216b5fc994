"""Pipeline: direction, concurrent detectors with timeouts, failures as error.<detector>, the log line."""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

import pytest

from gateway import config
from gateway.detectors import REGISTRY
from gateway.model import Direction, Envelope, Finding
from gateway.pipeline import direction_of
from tests.support.peers import make_message, send

SETTINGS = config.from_dict({"domains": {"local": ["example.gov"]}, "networks": {"internal": ["10.0.0.0/8"]}})


@pytest.mark.parametrize(("client", "sender", "rcpts", "expected"), [
    ("10.1.2.3", "alice@example.gov", ["bob@example.org"], Direction.OUTBOUND),
    ("10.1.2.3", "alice@example.gov", ["bob@example.gov", "x@example.org"], Direction.OUTBOUND),
    ("10.1.2.3", "alice@example.gov", ["bob@example.gov"], Direction.INTERNAL),
    ("10.1.2.3", "alice@sub.example.gov", ["bob@EXAMPLE.GOV"], Direction.INTERNAL),
    ("192.0.2.7", "x@outside.test", ["bob@example.gov"], Direction.INBOUND),
    ("192.0.2.7", "alice@example.gov", ["bob@example.gov"], Direction.INBOUND),   # claims a local sender
    ("10.1.2.3", "", ["bob@example.gov"], Direction.INBOUND),                     # a bounce
    ("192.0.2.7", "x@example.gov.evil.test", ["bob@example.gov"], Direction.INBOUND),
])
def test_direction(client, sender, rcpts, expected):
    envelope = Envelope(mail_from=sender, rcpt_tos=tuple(rcpts), client_address=client)
    assert direction_of(SETTINGS, envelope) is expected


class Exploding:
    name: ClassVar[str] = "exploding"
    kinds: ClassVar[frozenset[str]] = frozenset({"test.boom"})

    def __init__(self, settings, options) -> None:
        pass

    async def check(self, mail) -> list[Finding]:
        raise ValueError("cannot read")


class Hanging(Exploding):
    name: ClassVar[str] = "hanging"

    async def check(self, mail) -> list[Finding]:
        await asyncio.sleep(3600)
        return []


@pytest.fixture
def extra_detectors(monkeypatch, tmp_path):
    monkeypatch.setitem(REGISTRY, "exploding", Exploding)
    monkeypatch.setitem(REGISTRY, "hanging", Hanging)
    site = tmp_path / "site.toml"
    site.write_text('[detectors]\nenabled = ["mime", "size", "exploding", "hanging"]\n')
    return site


async def test_failing_and_hanging_detectors_are_never_a_pass(start_gateway, sink, extra_detectors):
    gw = await start_gateway(policy={"site": str(extra_detectors)}, pipeline={"detector_timeout": 0.5})
    loop = asyncio.get_running_loop()
    started = loop.time()
    code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], make_message())
    assert loop.time() - started < 5          # the hang was cut off at the deadline
    assert code == 451 and "4.7.1" in text
    assert sink.messages == [] and await gw.store.list() == []
    inspection = await gw.gateway.pipeline.inspect(
        Envelope("alice@example.gov", ("bob@example.org",), "127.0.0.1"), make_message())
    kinds = {f.kind: f for f in inspection.verdict.findings}
    assert set(kinds) == {"error.exploding", "error.hanging"}
    assert "failed (ValueError)" in kinds["error.exploding"].detail
    assert "did not finish within 0.5 s" in kinds["error.hanging"].detail
    assert inspection.verdict.rule == "outbound/detector-error"


async def test_one_structured_log_line_per_message(gw, sink, caplog):
    caplog.set_level(logging.INFO, logger="gateway.message")
    code, _, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], make_message())
    assert code == 250
    [record] = [r for r in caplog.records if r.name == "gateway.message"]
    fields = record.fields
    assert fields["direction"] == "outbound" and fields["verdict"] == "deliver"
    assert fields["rule"] == "outbound/default" and fields["mail_from"] == "alice@example.gov"
    assert fields["rcpt_tos"] == ["bob@example.org"] and fields["client"] == "127.0.0.1"
    assert fields["reply"] == "250" and fields["size"] > 0
    assert {"parse", "detectors", "policy", "action", "detector.mime", "detector.size"} <= set(fields["ms"])
    [received] = sink.messages
    assert fields["id"].encode() in received.data


def test_json_log_format(capsys):
    import io
    import json

    from gateway import logs
    stream = io.StringIO()
    logs.setup(config.LogSettings(json=True), stream)
    logs.message(id="abc", verdict="deliver", kinds=["pii.ssn"])
    entry = json.loads(stream.getvalue())
    assert entry["id"] == "abc" and entry["kinds"] == ["pii.ssn"] and entry["logger"] == "gateway.message"
    logging.getLogger().handlers.clear()


class ArrivalCheck(Hanging):
    """Judges how the message arrived: were it re-run at release, it would hang (and fail the test)."""

    name: ClassVar[str] = "arrival"
    rescan: ClassVar[bool] = False


async def test_release_rescan_keeps_arrival_findings_and_reruns_the_rest(monkeypatch, tmp_path):
    from gateway import policy as policy_module
    from gateway.pipeline import Pipeline

    monkeypatch.setitem(REGISTRY, "arrival", ArrivalCheck)
    site = tmp_path / "site.toml"
    site.write_text('[detectors]\nenabled = ["mime", "size", "arrival"]\n[detectors.size]\nmax_message_bytes = 10\n')
    settings = config.from_dict({"policy": {"site": str(site)}, "pipeline": {"detector_timeout": 0.5}})
    pipeline = Pipeline(settings, policy_module.load(settings))
    earlier = (Finding("test.boom", "arrival", "judged at receipt"), Finding("oversize.attachment", "size", "old"))
    inspection = await pipeline.inspect(Envelope("alice@example.gov", ("bob@example.org",), "127.0.0.1"),
                                        make_message(), earlier=earlier)
    kinds = [(f.kind, f.detector) for f in inspection.verdict.findings]
    assert ("test.boom", "arrival") in kinds                    # kept from receipt, not re-run (no error.arrival)
    assert ("oversize.message", "size") in kinds                # the size detector ran again with today's limits
    assert ("oversize.attachment", "size") not in kinds         # ... and its old findings were not carried over


async def test_small_work_runs_inline_and_large_work_in_a_thread():
    import threading

    from gateway import offload
    from tests.support import contentmail as cm

    here = threading.get_ident()
    assert await offload.run(10, threading.get_ident) == here
    assert await offload.run(offload.INLINE_BYTES, threading.get_ident) != here
    assert await offload.run(100, threading.get_ident, inline_below=50) != here
    # Attachments are opened in a thread whatever their size (unar, pypdf, oletools cost what the file holds).
    plain = cm.mail(cm.message("A short note."))
    shared = offload.once(plain, "text", 10, threading.get_ident)
    assert shared.done() and await shared == here          # done at once, no task
    assert offload.once(plain, "text", 10, lambda: 1 / 0) is shared     # once per message and key
    assert await offload.once(plain, "archives", offload.INLINE_BYTES, threading.get_ident) != here
    empty_zip = b"PK\x05\x06" + bytes(18)
    attached = cm.mail(cm.message("See the file.", attachments=(("a.zip", "application/zip", empty_zip),)))
    assert attached.parsed.attachments
    assert await offload.once(attached, "text", 10, threading.get_ident) != here
    failed = offload.once(cm.mail(cm.message("x")), "text", 10, lambda: 1 / 0)     # every asker gets the error
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            await failed


async def test_a_message_nested_past_the_parsers_recursion_is_held_not_delivered():
    from gateway import policy as policy_module
    from gateway.model import Action
    from gateway.pipeline import Pipeline

    settings = config.from_dict({"domains": {"local": ["example.gov"]}, "antivirus": {"clamd": ""}})
    nested = b"Content-Type: text/plain\r\n\r\nhi\r\n"
    for i in range(1500):
        b = f"n{i}".encode()
        nested = (b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n\r\n--' + b + b"\r\n" + nested
                  + b"\r\n--" + b + b"--")
    raw = b"From: a@example.org\r\nTo: b@example.gov\r\nSubject: deep\r\n" + nested
    inspection = await Pipeline(settings, policy_module.load(settings)).inspect(
        Envelope("a@example.org", ("b@example.gov",), "203.0.113.5"), raw)
    assert inspection.verdict.action is Action.QUARANTINE
    assert "malformed.limits_exceeded" in inspection.verdict.kinds


class Waiter(Exploding):
    """Waits on something else (as clamd or DNS would): runs as its own task."""

    name: ClassVar[str] = "waiter"
    waits: ClassVar[bool] = True
    arrived: asyncio.Event

    async def check(self, mail) -> list[Finding]:
        await asyncio.sleep(0.05)
        Waiter.arrived.set()
        return [Finding("test.waited", self.name, "the waiting detector ran")]


class InTurn(Exploding):
    """CPU work run in turn; it can only finish if the waiting detector runs meanwhile."""

    name: ClassVar[str] = "in_turn"

    async def check(self, mail) -> list[Finding]:
        await Waiter.arrived.wait()
        return [Finding("test.in_turn", self.name, "ran after the waiting detector")]


async def test_waiting_detectors_run_concurrently_with_those_in_turn_and_a_hang_stops_the_rest(monkeypatch, tmp_path):
    from gateway import policy as policy_module
    from gateway.pipeline import Pipeline

    Waiter.arrived = asyncio.Event()
    for cls in (Waiter, InTurn, Hanging):
        monkeypatch.setitem(REGISTRY, cls.name, cls)
    envelope = Envelope("alice@example.gov", ("bob@example.org",), "127.0.0.1")

    async def findings(enabled: str) -> list[tuple[str, str]]:
        site = tmp_path / "site.toml"
        site.write_text(f"[detectors]\nenabled = [{enabled}]\n")
        settings = config.from_dict({"policy": {"site": str(site)}, "pipeline": {"detector_timeout": 0.5}})
        inspection = await Pipeline(settings, policy_module.load(settings)).inspect(envelope, make_message())
        return [(f.kind, f.detector) for f in inspection.verdict.findings]

    # in_turn waits for an event only the waiting detector sets: run one after the other, it would time out
    assert await findings('"in_turn", "mime", "waiter"') == [("test.in_turn", "in_turn"), ("test.waited", "waiter")]
    # a detector still running at the deadline stops those after it: they could not check either (never a pass)
    Waiter.arrived = asyncio.Event()
    found = await findings('"waiter", "hanging", "mime"')
    assert found == [("test.waited", "waiter"), ("error.hanging", "hanging"), ("error.mime", "mime")]
