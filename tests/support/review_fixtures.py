"""Shared set-up for the review app tests: a store with users and held items, a sink in its own
thread (the app under TestClient or uvicorn runs its own event loop), and a logged-in client."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller
from argon2 import PasswordHasher

from gateway import accounts, config
from gateway.quarantine import HeldItem, open_store
from tests.support.peers import Sink, free_port

# Cheap argon2 parameters for the tests only (verification reads them from each hash), so that
# hashing three users per test does not dominate the run; production uses argon2-cffi's defaults.
accounts._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

PASSWORDS = {"ada": "ada-admin-password", "rita": "rita-review-password", "rolf": "rolf-review-password"}
ROLES = {"ada": "admin", "rita": "reviewer", "rolf": "reviewer"}


class ThreadSink:
    """The recording next hop, served from a thread of its own."""

    def __init__(self) -> None:
        self.sink = Sink()
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=free_port())

    @property
    def port(self) -> int:
        return self.controller.port

    @property
    def messages(self):
        return self.sink.messages

    def start(self) -> ThreadSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


@dataclass
class Site:
    settings: config.Settings
    url: str
    sink: ThreadSink
    items: dict[str, HeldItem] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def run(self, coro_fn):
        """Run `await coro_fn(store)` on a fresh connection to the same store (from test code)."""
        async def go():
            store = open_store(self.url)
            await store.open()
            try:
                return await coro_fn(store)
            finally:
                await store.close()
        return asyncio.run(go())


def make_site(tmp_path: Path, sink: ThreadSink, items: dict[str, HeldItem], *, url: str = "",
              notify: dict | None = None, **review) -> Site:
    url = url or f"sqlite:///{tmp_path / 'review.db'}"
    settings = config.from_dict({
        "quarantine": {"url": url}, "relay": {"next_hop": f"127.0.0.1:{sink.port}", "timeout": 5.0},
        "smtp": {"listen": f"127.0.0.1:{free_port()}"}, "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        **({"notify": notify} if notify else {}),
        "domains": {"local": ["example.gov"]}, "networks": {"internal": ["127.0.0.1/32"]},
        "review": {"listen": f"127.0.0.1:{free_port()}", "secret_key": "test-secret-key-0123456789", **review},
    }, source="<test>")
    site = Site(settings, url, sink, items)

    async def prepare(store):
        for name, password in PASSWORDS.items():
            await accounts.add_user(store, name, ROLES[name], password)
            site.tokens[name] = await accounts.new_token(store, name)
        for item in items.values():
            await store.hold(item)
    site.run(prepare)
    return site


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def login(client, name: str, password: str | None = None):
    page = client.get("/login")
    return client.post("/login", data={"csrf": csrf_of(page.text), "name": name,
                                       "password": PASSWORDS.get(name, "") if password is None else password,
                                       "next": "/"})


class ThreadedGateway:
    """The whole gateway (SMTP front end and review app) on an event loop in a thread of its own,
    so that synchronous clients (smtplib, the browser driver) can talk to it from the test."""

    def __init__(self, settings: config.Settings) -> None:
        import threading
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.gateway = None
        self.review = None

    def _call(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ThreadedGateway:
        from gateway.app import Gateway
        from gateway.review.server import start

        async def go():
            self.gateway = await Gateway.create(self.settings)
            await self.gateway.start_smtp()
            self.review = await start(self.settings, self.gateway.release_service())
        self.thread.start()
        self._call(go())
        return self

    def stop(self) -> None:
        async def go():
            if self.review:
                self.review[0].should_exit = True
                await self.review[1]
            if self.gateway:
                await self.gateway.close()
        try:
            self._call(go())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    @property
    def smtp_port(self) -> int:
        return config.split_host_port(self.settings.smtp.listen)[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.review.listen}"


def review_app(settings: config.Settings):
    """The review app over a release service it opens in its lifespan (for TestClient)."""
    from gateway.app import release_service_for
    from gateway.review.app import create_app

    return create_app(settings, lambda: release_service_for(settings))
