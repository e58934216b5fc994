"""Fixtures: a real next-hop sink and the real gateway on free loopback ports, per test."""

from __future__ import annotations

import dataclasses

import pytest

from gateway import config
from gateway.app import Gateway
from tests.support.clamav import clamd_server  # noqa: F401  (session fixture: the real clamd)
from tests.support.peers import Sink
from tests.support.review_fixtures import ThreadSink
from tests.support.settings import SESSION_CLAMD, make_settings


@pytest.fixture(scope="session", autouse=True)
def _session_clamd(clamd_server):  # noqa: F811
    SESSION_CLAMD["address"] = clamd_server.address




@pytest.fixture
async def sink():
    s = await Sink().start()
    yield s
    await s.stop()


@pytest.fixture
def thread_sink():
    """A sink in its own thread, for tests that drive the gateway synchronously (the CLI, TestClient)."""
    s = ThreadSink().start()
    yield s
    s.stop()


@dataclasses.dataclass
class Running:
    gateway: Gateway
    settings: config.Settings

    @property
    def port(self) -> int:
        return config.split_host_port(self.settings.smtp.listen)[1]

    @property
    def store(self):
        return self.gateway.store


@pytest.fixture
async def start_gateway(tmp_path, sink, clamd_server):  # noqa: F811
    """start_gateway(**sections) -> a Running gateway in this event loop, stopped after the test.
    Files are scanned by the session's real clamd unless a test names another in [antivirus]."""
    started: list[Gateway] = []

    async def start(**sections: dict) -> Running:
        sections["antivirus"] = {"clamd": clamd_server.address, **sections.get("antivirus", {})}
        settings = make_settings(tmp_path, sink.port, **sections)
        gateway = await Gateway.create(settings)
        await gateway.start_smtp()
        started.append(gateway)
        return Running(gateway, settings)

    yield start
    for gateway in started:
        await gateway.close()


@pytest.fixture
async def gw(start_gateway):
    return await start_gateway()
