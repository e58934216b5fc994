"""A bounded soak test: the gateway as a real process under a mix of good and bad mail for SOAK_SECONDS (default
60; SOAK_SECONDS=600 for the ten-minute run), while the next hop flaps and clamd is killed and restarted.

At the end, message by message (a unique token in the subject and Message-ID): every 250 is at the sink or in
the quarantine exactly once, every other reply is 4xx/5xx, no virus reached the sink and no file reached it
without X-Gateway-Scanned. Loopback only; stops by itself.

    SOAK_SECONDS=600 .venv/bin/python -m pytest -q -s tests/faults/test_soak.py
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.support.clamav import ClamdServer
from tests.support.loadmail import Sent, build, check, reconcile, send_one, token
from tests.support.peers import free_port, start_gateway_process
from tests.support.quarantine_fixtures import opened

SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
WORKERS = int(os.environ.get("SOAK_WORKERS", "4"))
MAX_SIZE = 256 * 1024
WEIGHTS = {"clean": 30, "attachment": 25, "virus": 12, "malformed": 10, "pii": 13, "oversize": 10}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SECONDS + 240)]


async def start_process(tmp_path: Path, sink_port: int, clamd: str) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    proc = await start_gateway_process(tmp_path, port, (
        f'[smtp]\nlisten = "127.0.0.1:{port}"\nmax_message_size = {MAX_SIZE}\n'
        f'[relay]\nnext_hop = "127.0.0.1:{sink_port}"\ntimeout = 5.0\n'
        f'[quarantine]\nurl = "sqlite:///{tmp_path / "q.db"}"\n'
        f'[antivirus]\nclamd = "{clamd}"\ntimeout = 5.0\ncache_seconds = 0.0\n'
        f'[auth]\nresolver = "none"\n[domains]\nlocal = ["example.gov"]\n'
        f'[review]\nenabled = false\n[log]\nlevel = "WARNING"\n'))
    return proc, port


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def test_soak_mixed_mail_with_faults_loses_nothing(tmp_path, sink):
    clamd = ClamdServer(tmp_path / "clamd").start()
    proc, port = await start_process(tmp_path, sink.port, clamd.address)
    rng = random.Random(int(os.environ.get("SOAK_SEED", "10")))
    kinds, weights = zip(*WEIGHTS.items(), strict=True)
    sent: list[Sent] = []
    faults = {"next hop down": 0, "clamd killed": 0}
    loop = asyncio.get_running_loop()
    end = loop.time() + SECONDS

    async def worker() -> None:
        while loop.time() < end:
            s = Sent(token(), rng.choices(kinds, weights)[0])
            sent.append(s)
            await send_one(port, s, build(s.kind, s.token, oversize_bytes=MAX_SIZE + 1024))

    async def injector() -> None:
        n = 0
        while loop.time() < end - 6:
            await asyncio.sleep(min(6.0, max(0.0, end - 6 - loop.time())))
            n += 1
            if n % 3 == 2:                          # clamd killed, back 2 s later
                clamd.process.kill()
                clamd.process.wait()
                faults["clamd killed"] += 1
                await asyncio.sleep(2)
                await asyncio.to_thread(clamd.start)
            else:                                   # the next hop goes away for 1.5 s
                await sink.stop()
                faults["next hop down"] += 1
                await asyncio.sleep(1.5)
                await sink.start()

    started = time.monotonic()
    try:
        await asyncio.gather(injector(), *(worker() for _ in range(WORKERS)))
        if sink.server is None:
            await sink.start()
        elapsed = time.monotonic() - started
        rss = peak_rss_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0     # drain (30 s) plus stopping the workers
        store = await opened(f"sqlite:///{tmp_path / 'q.db'}")
        try:
            r = await reconcile(sent, sink.messages, store)
        finally:
            await store.close()
        summary = r.summary()
        print(f"\nsoak {elapsed:.0f} s, {WORKERS} clients, faults {faults}: {summary}; "
              f"{len(sent) / elapsed:.1f} msg/s; gateway peak RSS {rss:.0f} MB")
        check(r)
        by_kind = summary["by_kind"]
        assert set(by_kind.get("oversize", {})) <= {"552", "451", "0"}          # never accepted
        assert by_kind.get("clean", {}).get("250", 0) > 0 and by_kind.get("virus", {}).get("250", 0) > 0
        assert r.codes[200] > len(sent) / 2
        assert faults["next hop down"] >= 1 and (SECONDS < 30 or faults["clamd killed"] >= 1)
    finally:
        if proc.returncode is None:
            proc.kill()
            with contextlib.suppress(Exception):
                await proc.wait()
        clamd.stop()
