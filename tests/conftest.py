"""Fixtures: a real next-hop sink and the real gateway on free loopback ports, per test."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway import config
from gateway.app import Gateway
from tests.clamav import clamd_server  # noqa: F401  (session fixture: the real clamd)
from tests.peers import Sink, free_port

DATA = Path(__file__).parent / "data"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


SESSION_CLAMD: dict[str, str] = {}      # the session's real clamd, set by the autouse fixture below


@pytest.fixture(scope="session", autouse=True)
def _session_clamd(clamd_server):  # noqa: F811
    SESSION_CLAMD["address"] = clamd_server.address


def make_settings(tmp_path: Path, sink_port: int, **sections: dict) -> config.Settings:
    """Test settings: free listen port, the sink as next hop, a throwaway SQLite quarantine, and files
    scanned by the session's real clamd (unless a test names another scanner in [antivirus])."""
    data: dict[str, dict] = {
        "smtp": {"listen": f"127.0.0.1:{free_port()}", "hostname": "gateway.test"},
        "relay": {"next_hop": f"127.0.0.1:{sink_port}", "timeout": 5.0},
        "domains": {"local": ["example.gov"]},
        "networks": {"internal": ["127.0.0.1/32"]},
        "quarantine": {"url": f"sqlite:///{tmp_path / 'quarantine.db'}"},
        "auth": {"resolver": "none"},       # no network here: sender authentication sees no DNS records
        "antivirus": {"clamd": SESSION_CLAMD["address"]} if SESSION_CLAMD else {},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return config.from_dict(data, source="<test>")


@pytest.fixture
async def sink():
    s = await Sink().start()
    yield s
    await s.stop()


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
