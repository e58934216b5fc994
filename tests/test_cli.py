"""The command line: check (offline pipeline), quarantine list, --config anywhere, GATEWAY_CONFIG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.peers import make_message

GATEWAY = [sys.executable, "-m", "gateway.cli"]

MALFORMED = (b"From: alice@example.gov\r\nTo: bob@example.org\r\nSubject: report\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n"
             b"see attached\r\n")


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*GATEWAY, *args], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def cfg(tmp_path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[quarantine]\nurl = "sqlite:///{tmp_path / "q.db"}"\n[domains]\nlocal = ["example.gov"]\n')
    return path


def test_check_json_reports_verdict_rule_and_findings(tmp_path, cfg):
    (tmp_path / "mails").mkdir()
    (tmp_path / "mails" / "bad.eml").write_bytes(MALFORMED)
    (tmp_path / "mails" / "good.eml").write_bytes(make_message())
    result = run("check", str(tmp_path / "mails"), "--json", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_name = {Path(x["path"]).name: x for x in lines}
    assert by_name["good.eml"]["verdict"] == "deliver" and by_name["good.eml"]["findings"] == []
    bad = by_name["bad.eml"]
    assert bad["verdict"] == "quarantine" and bad["rule"] == "outbound/malformed"
    [f] = bad["findings"]
    assert f["kind"] == "malformed.missing_final_boundary" and f["detector"] == "mime"
    assert set(f) == {"kind", "detector", "detail", "part", "score", "evidence"}


def test_check_direction_from_envelope_options(tmp_path, cfg):
    mail = tmp_path / "m.eml"
    mail.write_bytes(MALFORMED)
    out = run("check", "--mail-from", "x@outside.test", "--rcpt", "staff@example.gov", str(mail), "--json",
              "--config", str(cfg))
    assert json.loads(out.stdout)["rule"] == "inbound/malformed"
    out = run("check", "--direction", "internal", str(mail), "--json", "--config", str(cfg))
    assert json.loads(out.stdout)["rule"] == "internal/malformed"


def test_check_text_output_explains(tmp_path, cfg):
    mail = tmp_path / "m.eml"
    mail.write_bytes(MALFORMED)
    out = run("check", str(mail), "--config", str(cfg))
    assert "quarantine" in out.stdout and "malformed.missing_final_boundary [mime]" in out.stdout


async def test_held_message_listed_by_quarantine_list_json(gw, sink, tmp_path):
    from tests.support.peers import send

    code, _, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], MALFORMED)
    assert code == 250
    cfg = tmp_path / "list.toml"
    cfg.write_text(f'[quarantine]\nurl = "{gw.settings.quarantine.url}"\n')
    result = run("quarantine", "list", "--json", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    [item] = [json.loads(line) for line in result.stdout.splitlines()]
    assert item["status"] == "held" and item["direction"] == "outbound" and item["rule"] == "outbound/malformed"
    assert item["mail_from"] == "alice@example.gov" and item["rcpt_tos"] == ["bob@example.org"]
    assert item["subject"] == "report" and "malformed.missing_final_boundary" in item["kinds"]
    assert {"id", "received_at"} <= set(item)
    # the environment variable is the fallback for --config
    env_result = run("quarantine", "list", "--json", env={"GATEWAY_CONFIG": str(cfg)})
    assert env_result.stdout == result.stdout


def test_unknown_config_key_is_named(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[smtp]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n")
    result = run("policy", "lint", "--config", str(cfg))
    assert result.returncode == 2
    assert str(cfg) in result.stderr and "unknown key 'lisen'" in result.stderr


def test_config_option_accepted_after_subcommand_options(tmp_path, cfg):
    result = run("quarantine", "list", "--json", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    result = run("policy", "lint", "--config", str(cfg))
    assert result.returncode == 0 and "policy ok" in result.stdout


def test_example_configuration_is_valid_and_shows_every_setting():
    """deploy/gateway.toml is the administrator's reference: it must load and name every key."""
    import dataclasses
    import tomllib

    from gateway import config

    path = ROOT / "deploy" / "gateway.toml"
    config.load(str(path))
    shown = tomllib.loads(path.read_text())
    for section in dataclasses.fields(config.Settings):
        value = getattr(config.Settings(), section.name)
        if section.name in ("source", "dkim") or not dataclasses.is_dataclass(value):
            continue
        for key in dataclasses.fields(value):
            name = "from" if key.name == "from_" else key.name
            if dataclasses.is_dataclass(getattr(value, key.name)):
                continue
            assert name in shown.get(section.name, {}), f"[{section.name}] {name} missing from deploy/gateway.toml"
