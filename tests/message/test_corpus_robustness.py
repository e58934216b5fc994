"""Robustness: the parser fixtures of the corpus through the whole pipeline with the shipped policy (no crash,
no hang, bounded memory, a sane verdict), and the per-message time budget ([pipeline] message_timeout)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest

from gateway import policy as policy_module
from gateway.detectors import REGISTRY
from gateway.message import mime
from gateway.model import Action, Envelope, Finding
from gateway.pipeline import PARSE_INLINE_BYTES, Pipeline
from tests.support.paths import CORPUS
from tests.support.peers import make_message, send
from tests.support.settings import make_settings

PAGE = os.sysconf("SC_PAGE_SIZE")
RSS_GROWTH_BOUND = 256 * 1024 * 1024     # peak resident memory growth while the corpus goes through
LEAK_BOUND = 48 * 1024 * 1024            # resident growth of a second pass over the same messages
PER_MESSAGE_SECONDS = 30.0               # a hang guard well above the slowest fixture (gargantua.eml, ~2 s)
SAMPLE_EVERY = 25                        # of the other corpus folders, every 25th file


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class RssSampler:
    """The process's resident set size sampled every few milliseconds from a thread: the peak of a pass."""

    def __init__(self) -> None:
        self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


# The corpus sits next to the checkout (/work/shared/corpus beside /work/main); a worktree one level deeper
# finds it by $GATEWAY_CORPUS or the usual place.
CORPUS_DIR = next((p for p in (Path(os.environ.get("GATEWAY_CORPUS", CORPUS)), CORPUS, Path("/work/shared/corpus"))
                   if (p / "malformed").is_dir()), CORPUS)


def corpus_files() -> list[Path]:
    if not (CORPUS_DIR / "malformed").is_dir():
        pytest.skip(f"the development corpus is not at {CORPUS_DIR} (set GATEWAY_CORPUS)")
    files = sorted((CORPUS_DIR / "malformed").glob("*.eml"))
    for folder in ("ham", "commercial", "abusive", "pii", "confidential"):
        files += sorted((CORPUS_DIR / folder).glob("*.eml"))[::SAMPLE_EVERY]
    return files


@pytest.fixture
async def pipeline(tmp_path, clamd_server):
    settings = make_settings(tmp_path, 25, antivirus={"clamd": clamd_server.address})
    p = Pipeline(settings, policy_module.load(settings))
    yield p
    await p.close()


INBOUND = Envelope("someone@outside.test", ("carol@example.gov",), "192.0.2.9", "mx.outside.test")
OUTBOUND = Envelope("alice@example.gov", ("bob@example.org",), "127.0.0.1", "ws1.example.gov")


async def run_pass(pipeline: Pipeline, files: list[Path]) -> dict[str, int]:
    """Each file inbound and, for the malformed ones, outbound too: a verdict with a rule, in time."""
    verdicts: dict[str, int] = {}
    for path in files:
        raw = path.read_bytes()
        envelopes = (INBOUND, OUTBOUND) if path.parent.name == "malformed" else (INBOUND,)
        for envelope in envelopes:
            started = time.perf_counter()
            inspection = await asyncio.wait_for(pipeline.inspect(envelope, raw), PER_MESSAGE_SECONDS)
            verdict = inspection.verdict
            assert isinstance(verdict.action, Action) and verdict.rule, path
            assert verdict.rule.split("/")[0] == inspection.mail.direction.value, (path, verdict.rule)
            assert time.perf_counter() - started < PER_MESSAGE_SECONDS
            # Anything that could not be checked is never delivered as if clean.
            if any(k.startswith("error.") for k in verdict.kinds):
                assert verdict.action not in (Action.DELIVER, Action.TAG), (path, verdict)
            verdicts[f"{verdict.action}"] = verdicts.get(f"{verdict.action}", 0) + 1
    return verdicts


async def test_corpus_through_the_pipeline_no_crash_no_hang_bounded_memory(pipeline):
    files = corpus_files()
    assert len([f for f in files if f.parent.name == "malformed"]) >= 190
    await run_pass(pipeline, files[:5])                  # warm up: lexicons, clamd connection, caches
    before = rss()
    with RssSampler() as sampler:
        verdicts = await run_pass(pipeline, files)
    after_first = rss()
    growth = sampler.peak - before
    print(f"\n{len(files)} corpus files: verdicts {verdicts}; peak RSS growth {growth / 2**20:.1f} MB")
    assert growth < RSS_GROWTH_BOUND, f"peak RSS grew by {growth / 2**20:.0f} MB"
    # A second pass over the malformed fixtures must not keep growing (no per-message leak).
    malformed = [f for f in files if f.parent.name == "malformed"]
    await run_pass(pipeline, malformed)
    leaked = rss() - after_first
    assert leaked < LEAK_BOUND, f"RSS grew by {leaked / 2**20:.0f} MB on a second pass"
    assert verdicts.get("deliver", 0) + verdicts.get("tag", 0) > 0       # ordinary mail is still delivered


class Stuck:
    """A detector that answers, but only after the message budget: slower than the budget, inside its own
    (longer) detector timeout."""

    name: ClassVar[str] = "stuck"
    kinds: ClassVar[frozenset[str]] = frozenset({"test.stuck"})

    def __init__(self, settings, options) -> None:
        pass

    async def check(self, mail) -> list[Finding]:
        await asyncio.sleep(5)
        return []


@pytest.fixture
def stuck_policy(monkeypatch, tmp_path):
    monkeypatch.setitem(REGISTRY, "stuck", Stuck)
    site = tmp_path / "site.toml"
    site.write_text('[detectors]\nenabled = ["mime", "size", "stuck"]\n')
    return site


async def test_message_over_its_time_budget_answers_451_and_is_not_delivered(start_gateway, sink, stuck_policy):
    gw = await start_gateway(policy={"site": str(stuck_policy)},
                             pipeline={"detector_timeout": 30.0, "message_timeout": 0.5})
    loop = asyncio.get_running_loop()
    started = loop.time()
    code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], make_message())
    assert loop.time() - started < 4
    assert code == 451, text
    assert sink.messages == [] and await gw.store.list() == []
    inspection = await gw.gateway.pipeline.inspect(OUTBOUND, make_message())
    assert [f.kind for f in inspection.verdict.findings] == ["error.pipeline"]
    assert "did not finish within 0.5 s" in inspection.verdict.findings[0].detail
    assert inspection.verdict.action is Action.TEMPFAIL and inspection.verdict.rule == "outbound/detector-error"


async def test_a_parse_stuck_past_the_budget_is_error_pipeline(tmp_path, clamd_server, monkeypatch):
    settings = make_settings(tmp_path, 25, pipeline={"message_timeout": 0.3},
                             antivirus={"clamd": clamd_server.address})
    pipeline = Pipeline(settings, policy_module.load(settings))
    real_parse = mime.parse

    def slow_parse(raw, limits=None):
        if raw:
            time.sleep(1.0)                # a pathological parse (in the worker thread)
        return real_parse(raw, limits) if limits else real_parse(raw)
    monkeypatch.setattr(mime, "parse", slow_parse)
    big = make_message(body="A line of an ordinary long report.\n" * 1200)    # parsed in a thread (not inline)
    assert len(big) >= PARSE_INLINE_BYTES
    try:
        started = time.perf_counter()
        inspection = await pipeline.inspect(INBOUND, big)
        assert time.perf_counter() - started < 0.9        # answered at the budget, not when the parse ended
        assert inspection.verdict.kinds == ("error.pipeline",)
        assert inspection.verdict.action is Action.TEMPFAIL
        assert inspection.mail.size == len(big) and inspection.mail.direction.value == "inbound"
        # A small message is parsed inline: a parse that overruns the budget is still "could not check".
        inspection = await pipeline.inspect(INBOUND, make_message())
        assert inspection.verdict.kinds == ("error.pipeline",) and inspection.verdict.action is Action.TEMPFAIL
    finally:
        await asyncio.sleep(0.8)           # let the worker thread finish before the monkeypatch is undone
        await pipeline.close()
