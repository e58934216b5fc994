"""Assemble and run the gateway: settings -> store, policy, pipeline, actions -> listeners.

SIGTERM drains: the listener stops accepting, sessions in flight finish (up to a deadline), then
the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
from dataclasses import dataclass, field

from gateway import policy as policy_module
from gateway.actions import Actions
from gateway.config import Settings, split_host_port
from gateway.detectors.antivirus import scanned_header
from gateway.pipeline import Pipeline
from gateway.quarantine import Store, open_store
from gateway.smtp import ConnectionLimiter, GatewaySMTP, Handler

log = logging.getLogger("gateway.app")


@dataclass
class Gateway:
    settings: Settings
    store: Store
    pipeline: Pipeline
    actions: Actions
    servers: list[asyncio.base_events.Server] = field(default_factory=list)
    limiter: ConnectionLimiter | None = None

    @classmethod
    async def create(cls, settings: Settings) -> Gateway:
        policy = policy_module.load(settings)
        pipeline = Pipeline(settings, policy)
        store = open_store(settings.quarantine.url)
        await store.open()
        return cls(settings, store, pipeline, Actions(settings, store, extra_headers=scanned_header))

    def tls_context(self) -> ssl.SSLContext | None:
        smtp = self.settings.smtp
        if not smtp.tls_cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(smtp.tls_cert, smtp.tls_key)
        return context

    async def start_smtp(self, sock: socket.socket | None = None) -> None:
        smtp = self.settings.smtp
        self.limiter = ConnectionLimiter(smtp.max_connections, smtp.max_connections_per_client)
        handler = Handler(self.settings, self.pipeline, self.actions)
        tls = self.tls_context()
        hostname = smtp.hostname or socket.gethostname()

        def factory() -> GatewaySMTP:
            return GatewaySMTP(handler, self.limiter, smtp.data_timeout,
                               data_size_limit=smtp.max_message_size, enable_SMTPUTF8=True,
                               hostname=hostname, tls_context=tls, require_starttls=smtp.require_tls,
                               timeout=smtp.command_timeout)

        loop = asyncio.get_running_loop()
        if sock is None:
            host, port = split_host_port(smtp.listen)
            server = await loop.create_server(factory, host, port, reuse_address=True,
                                              reuse_port=smtp.workers > 1)
        else:
            server = await loop.create_server(factory, sock=sock)
        self.servers.append(server)
        log.info("SMTP listening on %s, relaying to %s", smtp.listen, self.settings.relay.next_hop)

    async def drain(self, deadline: float = 30.0) -> None:
        """Stop accepting; let sessions in flight finish, up to `deadline` seconds."""
        for server in self.servers:
            server.close()
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while self.limiter and self.limiter.active and loop.time() < end:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        await self.pipeline.close()
        await self.store.close()


async def run(settings: Settings) -> None:
    gateway = await Gateway.create(settings)
    await gateway.start_smtp()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: draining sessions in flight")
    await gateway.drain()
    await gateway.close()
