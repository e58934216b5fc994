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

from gateway import authresults, dkimsign
from gateway import policy as policy_module
from gateway.actions import Actions, header_sources
from gateway.config import Settings, split_host_port
from gateway.detectors.antivirus import scanned_header
from gateway.milter.session import MilterServer
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
    milter: MilterServer | None = None

    @classmethod
    async def create(cls, settings: Settings) -> Gateway:
        policy = policy_module.load(settings)
        pipeline = Pipeline(settings, policy)
        finishers = dkimsign.finishers(settings)      # reads the DKIM/ARC keys: a bad one stops start-up here
        store = open_store(settings.quarantine.url)
        await store.open()
        actions = Actions(settings, store, finishers=finishers,
                          extra_headers=header_sources(authresults.extra_headers(settings), scanned_header))
        gateway = cls(settings, store, pipeline, actions)
        if settings.notify.enabled:           # notices about held mail (gateway/notify/, docs/notifications.md)
            from gateway.notify.plan import Planner
            actions.planner = Planner(settings)
        recovered = await gateway.release_service().recover()
        if recovered:
            log.warning("interrupted releases back to held: %s", ", ".join(recovered))
        return gateway

    def release_service(self):
        """Release/delete/note/legal hold for the CLI, the review app and the API (gateway/release.py)."""
        from gateway.release import ReleaseService
        return ReleaseService(self.settings, self.store, self.pipeline, self.actions)

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

    async def start_milter(self, sock: socket.socket | None = None) -> MilterServer:
        self.milter = MilterServer(self.settings, self.pipeline, self.actions)
        await self.milter.start(sock)
        return self.milter

    async def start(self) -> None:
        """The front ends the settings enable: [smtp] enabled, [milter] enabled, or both."""
        if self.settings.smtp.enabled:
            await self.start_smtp()
        if self.settings.milter.enabled:
            await self.start_milter()

    async def drain(self, deadline: float = 30.0) -> None:
        """Stop accepting; let sessions in flight finish, up to `deadline` seconds."""
        for server in self.servers:
            server.close()
        if self.milter:
            self.milter.stop_accepting()
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while ((self.limiter and self.limiter.active) or (self.milter and self.milter.active)) and loop.time() < end:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        if self.milter:
            await self.milter.close()
        await self.pipeline.close()
        await self.store.close()


async def run(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):       # first, so a SIGTERM during start-up still drains
        loop.add_signal_handler(sig, stop.set)
    gateway = await Gateway.create(settings)
    notifier = None
    if settings.notify.enabled:          # sends the outbox's due notices; one per node (gateway/notify/notifier.py)
        from gateway.notify.notifier import Notifier
        notifier = Notifier(settings, gateway.store)      # a missing translation catalog stops start-up here
    await gateway.start()
    if notifier is not None:
        await notifier.start()
    review = None
    if settings.review.enabled:          # the ITSD review app and API on [review] listen (gateway/review/)
        from gateway.review.server import start as start_review
        review = await start_review(gateway)
    await stop.wait()
    log.info("stopping: draining sessions in flight")
    await gateway.drain()
    if review is not None:
        review[0].should_exit = True
        await review[1]
    if notifier is not None:
        await notifier.stop()
    await gateway.close()
