"""The gateway as a real process: SIGHUP (or `gateway reload`) swaps the policy in without dropping mail,
a bad policy is refused with its file and line, and the SMTP port answers soon after start."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.paths import ROOT
from tests.support.peers import free_port, make_message, send, start_gateway_process

DELIVER = '[internal]\ndefault = "deliver"\n'
REJECT = '[internal]\ndefault = "reject"\n'
BAD = '[internal]\n\ndefault = "explode"\n'      # line 3


def config(tmp_path: Path, port: int, sink_port: int, workers: int) -> str:
    return (f'[smtp]\nlisten = "127.0.0.1:{port}"\nworkers = {workers}\npidfile = "{tmp_path / "gateway.pid"}"\n'
            f'[relay]\nnext_hop = "127.0.0.1:{sink_port}"\n'
            f'[quarantine]\nurl = "sqlite:///{tmp_path / "q.db"}"\n'
            f'[policy]\nsite = "{tmp_path / "site.toml"}"\n'
            f'[review]\nenabled = false\n')


async def one(port: int, n: int) -> int:
    code, text, _ = await send(port, "alice@example.gov", ["bob@example.gov"],
                               make_message(subject=f"note {n}", sender="alice@example.gov", to="bob@example.gov"))
    return code


async def wait_log(tmp_path: Path, pattern: str, count: int = 1, timeout: float = 30.0) -> list[str]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = re.findall(pattern, (tmp_path / "gateway.log").read_text())
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{pattern!r} x{count} not in the log:\n" + (tmp_path / "gateway.log").read_text()[-3000:])


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 40)


async def test_sighup_swaps_policy_in_every_worker_without_dropping_mail(tmp_path, sink):
    (tmp_path / "site.toml").write_text(DELIVER)
    port = free_port()
    proc = await start_gateway_process(tmp_path, port, config(tmp_path, port, sink.port, workers=2))
    await wait_log(tmp_path, r"pipeline ready in process", count=2)
    results: list[tuple[float, float, int]] = []       # (sent at, answered at, code)
    running = True

    async def loop(base: int) -> None:
        n = base
        while running:
            started = time.monotonic()
            code = await one(port, n)
            results.append((started, time.monotonic(), code))
            n += 1

    try:
        senders = [asyncio.create_task(loop(i * 100_000)) for i in range(3)]
        await asyncio.sleep(1.5)
        (tmp_path / "site.toml").write_text(REJECT)
        hup = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        pids = await wait_log(tmp_path, r"policy reloaded in process (\d+)", count=3)
        reloaded = time.monotonic()
        print(f"reload: SIGHUP to every process on the new policy in {reloaded - hup:.2f} s")
        await asyncio.sleep(1.0)
        running = False
        await asyncio.gather(*senders)            # a connection error would raise here
        after = [await one(port, 900_000 + i) for i in range(20)]
    finally:
        await stop(proc)
    assert len(set(pids)) == 3, pids              # the supervisor and both workers
    assert set(after) == {550}, after
    assert {code for _, _, code in results} <= {250, 550}, results
    assert all(code == 250 for _, answered, code in results if answered < hup)
    assert all(code == 550 for start, _, code in results if start > reloaded)
    assert any(code == 250 for *_, code in results) and any(code == 550 for *_, code in results)
    delivered = sum(1 for *_, code in results if code == 250)
    await sink.wait_for(delivered)
    assert len(sink.messages) == delivered        # every 250 reached the next hop


async def test_bad_policy_is_refused_with_its_line_and_gateway_reload_uses_the_pidfile(tmp_path, sink):
    site = tmp_path / "site.toml"
    site.write_text(DELIVER)
    port = free_port()
    proc = await start_gateway_process(tmp_path, port, config(tmp_path, port, sink.port, workers=1))
    pidfile = tmp_path / "gateway.pid"
    try:
        assert pidfile.read_text().strip() == str(proc.pid)
        await wait_log(tmp_path, r"pipeline ready in process")
        site.write_text(BAD)
        proc.send_signal(signal.SIGHUP)
        refused = await wait_log(tmp_path, r"policy reload refused.*")
        assert f"{site}:3" in refused[0] and "explode" in refused[0], refused
        assert await one(port, 1) == 250          # the old policy still applies
        site.write_text(REJECT)
        command = [sys.executable, "-m", "gateway.cli", "reload", "--config", str(tmp_path / "gateway.toml")]
        done = subprocess.run(command,
                              cwd=ROOT, capture_output=True, text=True, timeout=30,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr
        await wait_log(tmp_path, r"policy reloaded in process (\d+)")
        assert await one(port, 2) == 550
    finally:
        await stop(proc)
    assert proc.returncode == 0
    assert not pidfile.exists()                   # removed at exit


async def test_smtp_answers_within_three_seconds_of_start(tmp_path, sink):
    (tmp_path / "site.toml").write_text(DELIVER)
    port = free_port()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(config(tmp_path, port, sink.port, workers=2))
    started = time.monotonic()
    with (tmp_path / "gateway.log").open("ab") as out:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.cli", "run", "--config", str(cfg),
                                                    cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=out)
    try:
        while True:
            assert proc.returncode is None, (tmp_path / "gateway.log").read_text()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            if writer.get_extra_info("sockname") == writer.get_extra_info("peername"):
                writer.close()          # TCP connected to itself (a free ephemeral port, retried)
                continue
            greeting = await asyncio.wait_for(reader.readline(), 10)
            writer.close()
            if greeting.startswith(b"220"):
                break
        listening = time.monotonic() - started
        print(f"start to SMTP greeting: {listening:.2f} s")
        assert await one(port, 1) == 250          # a message while the workers warm up waits, then goes on
    finally:
        await stop(proc)
    assert listening <= 3.0
    assert len(sink.messages) == 1


async def test_review_app_alone_reloads_on_sighup(tmp_path, sink):
    site = tmp_path / "site.toml"
    site.write_text(DELIVER)
    review_port = free_port()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(config(tmp_path, free_port(), sink.port, workers=1).replace(
        "[review]\nenabled = false\n", f'[review]\nlisten = "127.0.0.1:{review_port}"\n'))
    with (tmp_path / "gateway.log").open("ab") as out:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.cli", "review", "--config", str(cfg),
                                                    cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=out)
    try:
        await wait_log(tmp_path, r"review app listening")
        site.write_text(BAD)
        proc.send_signal(signal.SIGHUP)
        refused = await wait_log(tmp_path, r"policy reload refused.*")
        assert f"{site}:3" in refused[0], refused
        site.write_text(REJECT)
        proc.send_signal(signal.SIGHUP)
        await wait_log(tmp_path, r"policy reloaded in process (\d+)")
        assert proc.returncode is None
    finally:
        await stop(proc)
