"""The gateway as a real process: killed with SIGKILL during DATA, the client never sees a 250."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from tests.support.peers import RawClient, free_port, start_gateway_process


async def start_process(tmp_path: Path, sink_port: int) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    proc = await start_gateway_process(tmp_path, port, (
        f'[smtp]\nlisten = "127.0.0.1:{port}"\n[relay]\nnext_hop = "127.0.0.1:{sink_port}"\n'
        f'[quarantine]\nurl = "sqlite:///{tmp_path / "q.db"}"\n'
        f'[review]\nlisten = "127.0.0.1:{free_port()}"\n'))
    return proc, port


async def test_sigkill_during_data_leaves_client_without_250(tmp_path, sink):
    proc, port = await start_process(tmp_path, sink.port)
    client = await RawClient.connect(port)
    try:
        assert (await client.cmd("EHLO client.test"))[0] == 250
        assert (await client.cmd("MAIL FROM:<alice@example.gov>"))[0] == 250
        assert (await client.cmd("RCPT TO:<bob@example.org>"))[0] == 250
        assert (await client.cmd("DATA"))[0] == 354
        client.writer.write(b"From: alice@example.gov\r\nSubject: half\r\n\r\nfirst half of the body\r\n")
        await client.writer.drain()
        await asyncio.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        try:
            client.writer.write(b"second half\r\n.\r\n")
            await client.writer.drain()
        except ConnectionError:
            pass
        code, text = await client.reply(timeout=5)
        assert code != 250, text
        assert code == 0          # the connection closed without any reply
    finally:
        client.writer.close()
    await asyncio.sleep(0.1)
    assert sink.messages == []


async def test_sigterm_stops_the_process_cleanly(tmp_path, sink):
    proc, port = await start_process(tmp_path, sink.port)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0
