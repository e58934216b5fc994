"""Set-up shared by the release tests: a gateway whose own clamd is down while mail arrives (so files are
held as unscanned) and comes up before the release, a config file for the CLI, and the review accounts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from gateway import accounts, config
from gateway.app import Gateway
from gateway.quarantine import HeldItem, open_store
from tests.support.clamav import ClamdServer
from tests.support.peers import free_port, send
from tests.support.review_fixtures import PASSWORDS, ROLES, ThreadSink


@dataclass
class Site:
    settings: config.Settings
    config: str                # the same settings as a gateway.toml, for the CLI
    scanner: ClamdServer       # not started: clamd is down until the test starts it
    sink: ThreadSink
    tokens: dict[str, str]

    def run(self, coro_fn):
        """`await coro_fn(store)` on a fresh connection to the site's store."""
        async def go():
            store = open_store(self.settings.quarantine.url)
            await store.open()
            try:
                return await coro_fn(store)
            finally:
                await store.close()
        return asyncio.run(go())

    def item(self, item_id: str) -> HeldItem:
        return self.run(lambda s: s.get(item_id, with_raw=False))

    def receive(self, message: bytes, *, mail_from: str = "x@outside.test",
                rcpts: tuple[str, ...] = ("staff@example.gov",)) -> HeldItem:
        """The message through a real SMTP session of a gateway on these settings; returns what it held."""
        async def go() -> HeldItem:
            gateway = await Gateway.create(self.settings)
            await gateway.start_smtp()
            try:
                before = {i.id for i in await gateway.store.list()}
                port = config.split_host_port(self.settings.smtp.listen)[1]
                code, text, _ = await send(port, mail_from, list(rcpts), message, source="127.0.0.2")
                assert code == 250, text
                [item] = [i for i in await gateway.store.list() if i.id not in before]
                return item
            finally:
                await gateway.close()
        return asyncio.run(go())


def make_release_site(tmp_path: Path, sink: ThreadSink) -> Site:
    scanner = ClamdServer(tmp_path / "own-clamd")
    db = tmp_path / "quarantine.db"
    text = (f'[smtp]\nlisten = "127.0.0.1:{free_port()}"\nhostname = "gateway.test"\n'
            f'[relay]\nnext_hop = "127.0.0.1:{sink.port}"\ntimeout = 5.0\n'
            '[domains]\nlocal = ["example.gov"]\n[networks]\ninternal = ["127.0.0.1/32"]\n'
            f'[quarantine]\nurl = "sqlite:///{db}"\n[auth]\nresolver = "none"\n'
            f'[antivirus]\nclamd = "{scanner.address}"\ncache_seconds = 0\n'
            f'[review]\nlisten = "127.0.0.1:{free_port()}"\nsecret_key = "test-secret-key-0123456789"\n')
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    site = Site(config.load(str(path)), str(path), scanner, sink, {})

    async def users(store):
        for name, password in PASSWORDS.items():
            await accounts.add_user(store, name, ROLES[name], password)
            site.tokens[name] = await accounts.new_token(store, name)
    site.run(users)
    return site
