"""The baseline: a no-op aiosmtpd relay (stock line reader, no parsing, no policy), one next-hop
connection per client session, N processes on SO_REUSEPORT like the gateway's workers."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import signal

import aiosmtplib
from aiosmtpd.smtp import SMTP


class Relay:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def handle_DATA(self, server, session, envelope):
        client = getattr(session, "next_hop", None)
        if client is None or not client.is_connected:
            client = aiosmtplib.SMTP(hostname=self.host, port=self.port, start_tls=False)
            await client.connect()
            session.next_hop = client
        try:
            await client.sendmail(envelope.mail_from, envelope.rcpt_tos, envelope.original_content)
        except (aiosmtplib.SMTPException, OSError):
            session.next_hop = None
            return "451 4.4.1 next hop failed"
        return "250 2.0.0 Ok"


class Session(SMTP):
    """Closes the session's next-hop connection when the client goes: left open, they piled up at the
    sink over a benchmark (20 per run) until smtp-sink stopped accepting and every relay waited."""

    async def _handle_client(self) -> None:
        try:
            await super()._handle_client()
        finally:
            client = getattr(self.session, "next_hop", None) if self.session else None
            if client is not None and client.is_connected:
                client.close()


async def serve(listen_port: int, hop_port: int) -> None:
    loop = asyncio.get_running_loop()
    relay = Relay("127.0.0.1", hop_port)
    server = await loop.create_server(lambda: Session(relay, data_size_limit=None, hostname="noop"), "127.0.0.1",
                                      listen_port, reuse_port=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


def worker(listen_port: int, hop_port: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(listen_port, hop_port))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--next-hop", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    procs = [multiprocessing.Process(target=worker, args=(args.port, args.next_hop)) for _ in range(args.workers)]
    for p in procs:
        p.start()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})    # after the fork: not inherited
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    for p in procs:
        p.terminate()
    for p in procs:
        p.join(10)
