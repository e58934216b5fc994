"""The chain-letter memory is the quarantine store's: a letter seen by one gateway (worker, node) is
caught as a near-duplicate by another sharing the store, on SQLite and PostgreSQL; a store that fails
never makes the check fail (per-process memory and a warning instead); the memory stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

import pytest

from gateway.model import Direction
from tests.detectors.test_chain_letter import SOFT
from tests.support.contentkit import detector, header, mail
from tests.support.peers import make_message, send
from tests.support.quarantine_fixtures import opened, store_url

EDITED = SOFT.replace("three cases", "four cases").replace("My cousin's", "A friend's")


async def _send(port: int, sender: str, subject: str, body: str) -> None:
    message = make_message(subject=subject, body=body, sender=sender, to="staff@example.gov")
    code, _, _ = await send(port, sender, ["staff@example.gov"], message, source="127.0.0.2")
    assert code == 250


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_letter_seen_by_one_gateway_is_caught_by_another_sharing_the_store(start_gateway, sink, tmp_path,
                                                                                  backend):
    async with contextlib.AsyncExitStack() as stack:
        url = await store_url(backend, tmp_path / "shared", stack) if backend == "postgresql" \
            else f"sqlite:///{tmp_path / 'shared.db'}"
        first = await start_gateway(quarantine={"url": url})
        second = await start_gateway(quarantine={"url": url})
        await _send(first.port, "a@outside.test", "FW: please read", SOFT)
        await _send(second.port, "b@elsewhere.test", "Fwd: FW: please read!!", EDITED)
        one, two = await sink.wait_for(2)
        assert b"X-Gateway-Verdict: deliver" in one.data and b"X-Gateway-Findings" not in one.data
        findings = header(two.data, "X-Gateway-Findings")
        assert findings.startswith("chain_letter.duplicate (Chain letter (") and "copy 2 of a letter" in findings
        assert b"Subject: [Chain letter] Fwd: FW: please read!!" in two.data
        assert await first.store.letter_count() == 1
        for running in (first, second):       # closed here, before the PostgreSQL database is dropped
            await running.gateway.close()


async def test_a_closed_store_still_delivers_with_a_warning_and_remembers_per_process(gw, sink, caplog):
    await gw.store.close()
    caplog.set_level(logging.WARNING, logger="gateway.detectors.chain_letter")
    await _send(gw.port, "a@outside.test", "FW: please read", SOFT)
    await _send(gw.port, "b@elsewhere.test", "Fwd: FW: please read!!", EDITED)
    one, two = await sink.wait_for(2)
    assert b"X-Gateway-Verdict: deliver" in one.data and b"X-Gateway-Findings" not in one.data
    assert b"error." not in two.data
    assert header(two.data, "X-Gateway-Findings").startswith("chain_letter.duplicate (")
    warnings = [r for r in caplog.records if "chain-letter memory in the store unavailable" in r.getMessage()]
    assert len(warnings) == 1            # once per outage minute, not once per message


class _HangingStore:
    async def letter_candidates(self, *args, **kwargs):
        await asyncio.sleep(3600)


class _BrokenStore:
    async def letter_candidates(self, *args, **kwargs):
        raise OSError("connection refused")


@pytest.mark.parametrize("store", [_HangingStore(), _BrokenStore()], ids=["hanging", "broken"])
async def test_a_hanging_or_broken_store_falls_back_within_the_timeout(store, caplog):
    chain = detector("chain_letter", memory_timeout=0.2)
    findings = []
    start = time.monotonic()
    for subject, body in (("FW: please read", SOFT), ("Fwd: FW: please read!!", EDITED)):
        message = mail(make_message(subject=subject, body=body, sender="a@outside.test", to="staff@example.gov"),
                       direction=Direction.INBOUND)
        message.context.letters = store
        findings.append(await chain.check(message))
    assert time.monotonic() - start < 4.0     # two timeouts of 0.2 s, far below the detector timeout
    assert findings[0] == [] and [f.kind for f in findings[1]] == ["chain_letter.duplicate"]
    assert "chain-letter memory in the store unavailable" in caplog.text


def _letter(rng: random.Random) -> str:
    words = ["alpha", "river", "stone", "cloud", "paper", "green", "eleven", "market", "window", "silver",
             "garden", "pencil", "orange", "bridge", "candle", "forest", "yellow", "rocket", "summer", "planet"]
    return " ".join(rng.choice(words) for _ in range(80)) + ". Tell everyone you know about this."


async def _check(chain, store, subject: str, body: str):
    message = mail(make_message(subject=subject, body=body, sender="a@outside.test", to="staff@example.gov"))
    message.context.letters = store
    return await chain.check(message)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_the_shared_memory_keeps_memory_size_letters_and_forgets_after_memory_days(tmp_path, backend):
    async with contextlib.AsyncExitStack() as stack:
        store = await opened(await store_url(backend, tmp_path, stack))
        try:
            chain = detector("chain_letter", memory_size=3)
            rng = random.Random(7)
            letters = [_letter(rng) for _ in range(6)]
            for i, body in enumerate(letters):
                assert await _check(chain, store, f"FW {i}", body) == []
            assert await store.letter_count() == 3
            async with store._tx() as conn:
                assert (await conn.fetch("SELECT COUNT(DISTINCT letter_id) FROM letter_hash"))[0][0] == 3
            assert chain.memory.letters == {}         # the store answered: nothing kept per process
            # the oldest letters were forgotten, the newest is matched
            [found] = await _check(chain, store, "FW again", letters[-1] + " Really.")
            assert found.kind == "chain_letter.duplicate" and "'FW 5'" in found.evidence[-1]
            assert await _check(chain, store, "FW again", letters[0] + " Really.") == []
            # a letter first seen longer than memory_days ago is not matched, and is purged at the next one
            async with store._tx() as conn:
                await conn.execute("UPDATE letter SET first_seen = ?", time.time() - 31 * 86400)
            assert await _check(chain, store, "FW once more", letters[-1] + " Truly.") == []
            assert await store.letter_count() == 1     # the letter just remembered: the old ones are gone
        finally:
            await store.close()


async def test_an_ordinary_memo_through_two_gateways_is_not_remembered(start_gateway, sink, tmp_path):
    memo = ("The quarterly safety inspection of the east wing will take place on Monday morning. Please clear the "
            "corridors, close the fire doors and make sure the first-aid kits are stocked. Fwd to your team. ") * 3
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = await start_gateway(quarantine={"url": url})
    second = await start_gateway(quarantine={"url": url})
    await _send(first.port, "facilities@outside.test", "Fwd: Inspection", memo)
    await _send(second.port, "facilities@outside.test", "Fwd: Inspection", memo)
    for received in await sink.wait_for(2):
        assert b"X-Gateway-Verdict: deliver" in received.data
    assert await first.store.letter_count() == 0
