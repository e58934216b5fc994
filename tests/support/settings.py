"""Test settings: the gateway on free loopback ports, the sink as next hop, the session's real clamd."""

from __future__ import annotations

from pathlib import Path

from gateway import config
from tests.support.peers import free_port

SESSION_CLAMD: dict[str, str] = {}      # the session's real clamd, set by the autouse fixture below


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
