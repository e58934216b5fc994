"""Faults not covered in faults/test_next_hop_and_store.py / faults/test_kill_during_data.py: clamd killed, hung
or slow while mail flows; the PostgreSQL quarantine going away under a running gateway; the gateway killed
with SIGKILL while a quarantine write is in flight. Each checks that no message is lost and none is delivered
unscanned (tests/support/loadmail.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.support.clamav import ClamdServer, HangingScanner
from tests.support.loadmail import Sent, build, check, reconcile, send_one, token
from tests.support.paths import ROOT
from tests.support.peers import RawClient, free_port, send, start_gateway_process
from tests.support.quarantine_fixtures import PG_ADMIN, PgDatabase, opened
from tests.test_cli import MALFORMED


async def load(port: int, kinds: list[str], between=None, batch: int = 4) -> list[Sent]:
    """Send the messages `batch` at a time; `between(n)` runs after batch n (to inject a fault)."""
    sent: list[Sent] = []
    for n, start in enumerate(range(0, len(kinds), batch)):
        group = [Sent(token(), k) for k in kinds[start:start + batch]]
        await asyncio.gather(*(send_one(port, s, build(s.kind, s.token)) for s in group))
        sent += group
        if between:
            await between(n)
    return sent


class SlowProxy:
    """A unix socket in front of the real clamd that waits `delay` seconds before passing each connection on."""

    def __init__(self, path: Path, target: str, delay: float) -> None:
        self.path, self.target, self.delay = path, target.removeprefix("unix://"), delay
        self.server = None

    @property
    def address(self) -> str:
        return f"unix://{self.path}"

    async def start(self) -> SlowProxy:
        async def pipe(reader, writer):
            with contextlib.suppress(Exception):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        async def handle(reader, writer):
            await asyncio.sleep(self.delay)
            try:
                up_reader, up_writer = await asyncio.open_unix_connection(self.target)
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        self.server = await asyncio.start_unix_server(handle, path=str(self.path))
        return self

    async def stop(self) -> None:
        if self.server:
            self.server.close()


MIX = ["attachment", "virus", "clean", "attachment", "virus", "attachment"] * 4      # 24 messages


async def test_clamd_killed_and_restarted_while_mail_flows(start_gateway, sink, tmp_path):
    own = ClamdServer(tmp_path / "clamd").start()
    try:
        gw = await start_gateway(antivirus={"clamd": own.address, "timeout": 5.0, "cache_seconds": 0})

        async def fault(n: int) -> None:
            if n == 1:
                own.process.kill()                  # clamd dies between two batches ...
                own.process.wait()
            if n == 3:
                await asyncio.to_thread(own.start)  # ... and comes back two batches later
        sent = await load(gw.port, MIX, fault)
        r = await reconcile(sent, sink.messages, gw.store)
        print(f"\nclamd killed and restarted: {r.summary()}")
        check(r)
        held_kinds = {k for kinds in r.held_kinds.values() for k in kinds}
        assert "unscanned.scanner_unavailable" in held_kinds        # files during the outage were held ...
        assert "virus" in held_kinds                                 # ... and viruses found before and after
        assert r.codes[200] == len(sent)                             # the store answered for every one
        assert sum(r.delivered.values()) >= 8                        # mail flowed before and after
    finally:
        own.stop()


async def test_hung_clamd_holds_files_as_unscanned_and_delivers_nothing_unscanned(start_gateway, sink, tmp_path):
    hanging = await HangingScanner(tmp_path / "hang.sock").start()
    try:
        gw = await start_gateway(antivirus={"clamd": hanging.address, "timeout": 0.5})
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = await load(gw.port, ["attachment", "virus", "clean", "attachment"] * 2)
        assert loop.time() - started < 30
        r = await reconcile(sent, sink.messages, gw.store)
        check(r)
        for s in sent:
            if s.kind in ("attachment", "virus"):
                assert r.held[s.token] == 1 and any(k.startswith("unscanned.") for k in r.held_kinds[s.token])
            else:
                assert r.delivered[s.token] == 1          # a message without files needs no scanner
        assert hanging.connections > 0
    finally:
        await hanging.stop()


async def test_slow_clamd_still_scans_everything(start_gateway, sink, tmp_path, clamd_server):
    slow = await SlowProxy(tmp_path / "slow.sock", clamd_server.address, delay=0.4).start()
    try:
        gw = await start_gateway(antivirus={"clamd": slow.address, "timeout": 5.0, "cache_seconds": 0})
        sent = await load(gw.port, ["attachment", "virus", "clean"] * 3)
        r = await reconcile(sent, sink.messages, gw.store)
        check(r)
        for s in sent:
            if s.kind == "virus":
                assert r.held[s.token] == 1 and "virus" in r.held_kinds[s.token]
            else:
                assert s.code == 250 and r.delivered[s.token] == 1
    finally:
        await slow.stop()


async def test_postgres_quarantine_going_away_answers_451_never_250(start_gateway, sink):
    db = PgDatabase()
    url = await db.__aenter__()
    try:
        gw = await start_gateway(quarantine={"url": url})
        code, _, _ = await send_out(gw.port, MALFORMED)
        assert code == 250 and len(await gw.store.list()) == 1
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            # The server drops every connection of the gateway (a restart, a failover): a write answers 451 or,
            # once the pool has reconnected, 250 and is then stored; never a 250 that is not stored.
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                                db.name)
            codes = [(await send_out(gw.port, MALFORMED))[0] for _ in range(3)]
            assert set(codes) <= {250, 451}, codes
            assert len(await gw.store.list()) == 1 + codes.count(250)
            # The database is gone for good: every quarantine write answers 451.
            await admin.execute(f'DROP DATABASE "{db.name}" WITH (FORCE)')
            results = await asyncio.gather(*(send_out(gw.port, MALFORMED) for _ in range(4)))
            assert [c for c, _, _ in results] == [451] * 4, results
            assert all("4.3.0" in text for _, text, _ in results)
        finally:
            await admin.close()
        assert sink.messages == []
    finally:
        await db.__aexit__(None, None, None)


async def send_out(port: int, message: bytes):
    return await send(port, "alice@example.gov", ["bob@example.org"], message)


# --- SIGKILL while a quarantine write is in flight ----------------------------------------------------------

async def gateway_process(tmp_path: Path, sink_port: int, quarantine_url: str, clamd: str):
    port = free_port()
    proc = await start_gateway_process(tmp_path, port, (
        f'[smtp]\nlisten = "127.0.0.1:{port}"\n[relay]\nnext_hop = "127.0.0.1:{sink_port}"\n'
        f'[quarantine]\nurl = "{quarantine_url}"\n[antivirus]\nclamd = "{clamd}"\n'
        f'[auth]\nresolver = "none"\n[domains]\nlocal = ["example.gov"]\n'
        f'[review]\nenabled = false\n'))
    return proc, port


class SqliteLock:
    """Holds the quarantine's write lock from outside, so the gateway's write waits (in flight)."""

    def __init__(self, url: str) -> None:
        self.path = url.removeprefix("sqlite://")

    async def __aenter__(self):
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("BEGIN EXCLUSIVE")
        return self

    async def __aexit__(self, *exc):
        self.conn.execute("ROLLBACK")
        self.conn.close()


class PgLock:
    def __init__(self, url: str) -> None:
        self.url = url

    async def __aenter__(self):
        self.conn = await asyncpg.connect(self.url)
        self.tx = self.conn.transaction()
        await self.tx.start()
        await self.conn.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
        return self

    async def __aexit__(self, *exc):
        await self.tx.rollback()
        await self.conn.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_sigkill_while_a_quarantine_write_is_in_flight(tmp_path, sink, clamd_server, backend):
    async with contextlib.AsyncExitStack() as stack:
        url = (f"sqlite:///{tmp_path / 'q.db'}" if backend == "sqlite"
               else await stack.enter_async_context(PgDatabase()))
        proc, port = await gateway_process(tmp_path, sink.port, url, clamd_server.address)
        try:
            code, _, _ = await send_out(port, MALFORMED)         # one held before: the store works
            assert code == 250
            lock = SqliteLock(url) if backend == "sqlite" else PgLock(url)
            async with lock:
                client = await RawClient.connect(port)
                await client.cmd("EHLO client.test")
                await client.cmd("MAIL FROM:<alice@example.gov>")
                await client.cmd("RCPT TO:<bob@example.org>")
                assert (await client.cmd("DATA"))[0] == 354
                client.writer.write(MALFORMED.replace(b"Subject: report", b"Subject: in flight") + b"\r\n.\r\n")
                await client.writer.drain()
                with pytest.raises(TimeoutError):                      # the write waits on the lock ...
                    await client.reply(timeout=1.0)
                os.kill(proc.pid, signal.SIGKILL)                      # ... and the gateway dies there
                await proc.wait()
                code, text = await client.reply(timeout=5)
                assert code == 0, text                                 # no 250: the sender keeps the message
                client.writer.close()
            # After a restart the store is consistent: the interrupted write left nothing, the earlier item is
            # whole, and new writes work.
            proc, port = await gateway_process(tmp_path, sink.port, url, clamd_server.address)
            code, _, _ = await send_out(port, MALFORMED.replace(b"Subject: report", b"Subject: after"))
            assert code == 250
            store = await opened(url)
            try:
                items = await store.list()
                assert sorted(i.subject for i in items) == ["after", "report"]
                assert all(i.raw and i.findings for i in [await store.get(i.id) for i in items])
            finally:
                await store.close()
            if backend == "sqlite":
                check_conn = sqlite3.connect(url.removeprefix("sqlite://"))
                assert check_conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                check_conn.close()
            mail = [m for m in sink.messages if b"\r\nX-Gateway-Notice:" not in m.data.split(b"\r\n\r\n")[0]]
            assert mail == []           # only our notices about the held items reached the next hop
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 20)
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()


async def test_gateway_whose_postgres_is_unreachable_does_not_start_accepting_mail(tmp_path, sink, clamd_server):
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"           # nothing listens there
    port = free_port()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[smtp]\nlisten = "127.0.0.1:{port}"\n[relay]\nnext_hop = "127.0.0.1:{sink.port}"\n'
                   f'[quarantine]\nurl = "{dead}"\n[antivirus]\nclamd = "{clamd_server.address}"\n'
                   f'[review]\nenabled = false\n')
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.cli", "run", "--config", str(cfg),
                                                cwd=ROOT, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        code = await asyncio.wait_for(proc.wait(), 30)
        stderr = (await proc.stderr.read()).decode(errors="replace")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code != 0 and "quarantine" in stderr.lower(), stderr[-500:]
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
