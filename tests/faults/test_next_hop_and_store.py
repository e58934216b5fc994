"""Faults: next hop slow, hung or flapping; the quarantine locked or its disk full; SIGTERM drains.
Each asserts that no message is lost: every 250 is at the sink or in the quarantine, anything else
got a 4xx/5xx, and nothing is delivered unscanned."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess

import pytest

from tests.faults.test_kill_during_data import start_process
from tests.support.peers import RawClient, make_message, send
from tests.test_cli import MALFORMED


async def test_slow_next_hop_within_timeout_still_delivers(gw, sink, monkeypatch):
    original = sink.handle_DATA

    async def slow(server, session, envelope):
        await asyncio.sleep(1.0)
        return await original(server, session, envelope)
    monkeypatch.setattr(sink, "handle_DATA", slow)
    code, _, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], make_message())
    assert code == 250 and len(sink.messages) == 1


async def test_hung_next_hop_gives_451_after_the_relay_timeout(start_gateway, sink):
    gw = await start_gateway(relay={"timeout": 1.0})
    sink.mode = "hang"
    code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], make_message())
    assert code == 451
    assert await gw.store.list() == []


async def test_flapping_next_hop_loses_nothing(gw, sink):
    outcomes = []
    for i in range(12):
        if i % 3 == 1:
            await sink.stop()
        elif sink.server is None:
            await sink.start()
        code, _, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"],
                                make_message(subject=f"flap {i}"))
        outcomes.append((i, code))
    if sink.server is None:
        await sink.start()
    delivered = {m.data.split(b"Subject: ")[1].split(b"\r\n")[0].decode() for m in sink.messages}
    for i, code in outcomes:
        assert code in (250, 451), (i, code)
        assert (f"flap {i}" in delivered) == (code == 250), (i, code)
    assert sum(code == 451 for _, code in outcomes) >= 4
    assert len(sink.messages) == len(delivered)       # exactly once each


async def test_locked_quarantine_answers_451_then_accepts(gw, sink):
    db = gw.settings.quarantine.url.removeprefix("sqlite://")
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], MALFORMED)
        assert code == 451 and "4.3.0" in text
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert sink.messages == []
    code, _, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], MALFORMED)
    assert code == 250
    assert len(await gw.store.list()) == 1


@pytest.fixture
def tiny_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root (CI and the dev machines run as root)")
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_full_disk_quarantine_write_answers_451_never_250(start_gateway, sink, tiny_disk):
    gw = await start_gateway(quarantine={"url": f"sqlite:///{tiny_disk / 'q.db'}"})
    big = MALFORMED + (b"A" * 76 + b"\r\n") * 5000
    code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], big)
    assert code == 451 and "4.3.0" in text
    assert sink.messages == []
    code, _, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], MALFORMED)
    assert code == 250                    # a small message still fits: the store is usable after the error


async def test_sigterm_drains_sessions_in_flight(tmp_path, sink):
    proc, port = await start_process(tmp_path, sink.port)
    client = await RawClient.connect(port)
    await client.cmd("EHLO client.test")
    await client.cmd("MAIL FROM:<alice@example.gov>")
    await client.cmd("RCPT TO:<bob@example.org>")
    proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    with pytest.raises(OSError):                       # new sessions are refused
        await asyncio.open_connection("127.0.0.1", port)
    code, text = await client.send_data(make_message(subject="in flight"))
    assert code == 250, text                           # the session in flight finishes
    await client.close()
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    assert len(sink.messages) == 1 and b"in flight" in sink.messages[0].data
