"""Commands that open the store say which configuration and which store they opened (on stderr, and as
the "opened" field of --json output), and `gateway quarantine list | head -1` ends quietly."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import cli, config
from gateway.quarantine import open_store
from tests.support.paths import ROOT
from tests.support.quarantine_fixtures import held_item

GATEWAY = [sys.executable, "-m", "gateway.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


def _hold(url: str, items: list) -> None:
    async def go() -> None:
        store = open_store(url)
        await store.open()
        try:
            for item in items:
                await store.hold(item)
        finally:
            await store.close()
    asyncio.run(go())


@pytest.fixture
def site(tmp_path):
    db = tmp_path / "q.db"
    url = f"sqlite:///{db}"
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[quarantine]\nurl = "{url}"\n[domains]\nlocal = ["example.gov"]\n')
    item = held_item(subject="Payroll")
    _hold(url, [item])
    return cfg, f"sqlite://{db}", item


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*GATEWAY, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_store_commands_name_the_config_file_and_the_store(site, tmp_path):
    cfg, store, item = site
    for args in (["quarantine", "list"], ["quarantine", "show", item.id], ["users", "list"],
                 ["notices", "status"]):
        result = _run([*args, "--config", str(cfg)], _env(), tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"config {cfg} (--config)" in result.stderr, (args, result.stderr)
        assert f"store {store}" in result.stderr, (args, result.stderr)
    # from the environment, with a relative path: named as an absolute path and where it came from
    result = _run(["quarantine", "show", item.id], _env(GATEWAY_CONFIG=cfg.name), tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"config {cfg} (GATEWAY_CONFIG)" in result.stderr and f"store {store}" in result.stderr


def test_json_output_carries_the_config_and_the_store(site, tmp_path):
    cfg, store, item = site
    opened = {"config": str(cfg), "store": store}
    result = _run(["quarantine", "list", "--json", "--config", str(cfg)], _env(), tmp_path)
    [line] = result.stdout.splitlines()
    assert json.loads(line)["opened"] == opened and json.loads(line)["id"] == item.id
    result = _run(["quarantine", "show", item.id, "--json", "--config", str(cfg)], _env(), tmp_path)
    assert json.loads(result.stdout)["opened"] == opened
    result = _run(["notices", "status", "--json", "--config", str(cfg)], _env(), tmp_path)
    assert json.loads(result.stdout)["opened"] == opened


def test_embedded_defaults_are_named_when_no_config_is_given(tmp_path, monkeypatch, capsys):
    # The embedded defaults' store is /var/lib/gateway: the same settings with the store moved here.
    url = f"sqlite:///{tmp_path / 'default.db'}"
    defaults = dataclasses.replace(config.Settings(), quarantine=config.QuarantineSettings(url=url))
    assert defaults.source == config.Settings().source
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    monkeypatch.setattr(cli.config_module, "load", lambda path=None: defaults)
    assert cli.main(["quarantine", "show", "nosuchid", "--json"]) == 1
    err = capsys.readouterr().err
    assert "config: embedded defaults (no --config, GATEWAY_CONFIG unset)" in err
    assert f"store sqlite://{tmp_path / 'default.db'}" in err
    assert "no held message 'nosuchid'" in err


def test_postgresql_password_is_not_shown():
    assert cli.describe_store("postgresql://gw:s3cret@db.example:5432/quarantine") == \
        "postgresql://gw:***@db.example:5432/quarantine"


def test_quarantine_list_into_head_ends_without_a_traceback(tmp_path):
    db = tmp_path / "q.db"
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[quarantine]\nurl = "sqlite:///{db}"\n[domains]\nlocal = ["example.gov"]\n')
    rcpts = tuple(f"recipient{n:04d}@example.org" for n in range(3000))     # ~80 KB per line: fills the pipe
    _hold(f"sqlite:///{db}", [held_item(subject=f"Memo {n}", rcpts=rcpts) for n in range(6)])
    lister = subprocess.Popen([*GATEWAY, "quarantine", "list", "--config", str(cfg)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=_env(), cwd=tmp_path)
    head = subprocess.run(["head", "-1"], stdin=lister.stdout, capture_output=True, timeout=120)
    lister.stdout.close()           # only head holds the read end: when it exits, our writes hit EPIPE
    err = lister.stderr.read().decode()
    lister.stderr.close()
    code = lister.wait(timeout=120)
    assert head.stdout.startswith(b"0") or b"Memo" in head.stdout or head.stdout.count(b"@") > 100
    assert len(head.stdout.splitlines()) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
    assert code == 0, err
