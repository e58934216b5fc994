"""`gateway quarantine ...`, `gateway users ...` and `gateway review` from the command line, on a real
store and a real (threaded) thread_sink; and the relay core's promise on PostgreSQL: 250 only once held."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest

from gateway import accounts, cli
from tests.support.peers import free_port, make_message, send
from tests.support.quarantine_fixtures import PgDatabase, held_item
from tests.support.review_fixtures import make_site


@pytest.fixture
def site(tmp_path, thread_sink):
    now = time.time()
    site = make_site(tmp_path, thread_sink, {
        "pii": held_item(subject="Payroll", kinds=("pii.ssn",), received_at=now - 60),
        "virus": held_item(subject="Invoice", kinds=("virus",), rule="inbound/malware", direction="inbound",
                           sender="eve@evil.example", rcpts=("carol@example.gov",), received_at=now - 120),
        "old": held_item(subject="Ancient", received_at=now - 45 * 86400),
    })
    config = tmp_path / "gateway.toml"
    config.write_text(f'[quarantine]\nurl = "{site.url}"\n[relay]\nnext_hop = "127.0.0.1:{thread_sink.port}"\n'
                      '[domains]\nlocal = ["example.gov"]\n')
    site.config = str(config)
    return site


def run(capsys, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    old = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = cli.main(list(argv))
    finally:
        sys.stdin = old
    out, err = capsys.readouterr()
    return code, out, err


def test_list_with_filters_and_show(site, capsys):
    code, out, _ = run(capsys, "quarantine", "list", "--json", "--config", site.config)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["subject"] for r in rows] == ["Payroll", "Invoice", "Ancient"]
    assert set(rows[0]) == {*site.items["pii"].summary(), "opened"}
    _, out, _ = run(capsys, "quarantine", "list", "--json", "--category", "virus", "--config", site.config)
    assert [json.loads(line)["subject"] for line in out.splitlines()] == ["Invoice"]
    _, out, _ = run(capsys, "quarantine", "list", "--json", "--sender", "EVE@", "--direction", "inbound",
                    "--config", site.config)
    assert len(out.splitlines()) == 1
    today = time.strftime("%Y-%m-%d", time.gmtime())
    _, out, _ = run(capsys, "quarantine", "list", "--json", "--since", today, "--sort", "subject", "--order", "asc",
                    "--config", site.config)
    assert [json.loads(line)["subject"] for line in out.splitlines()] == ["Invoice", "Payroll"]
    code, _, err = run(capsys, "quarantine", "list", "--status", "nonsense", "--config", site.config)
    assert code == 2 and "status must be one of" in err
    code, out, _ = run(capsys, "quarantine", "show", site.items["pii"].id, "--json", "--config", site.config)
    shown = json.loads(out)
    assert code == 0 and shown["findings"][0]["kind"] == "pii.ssn" and shown["sha256"] == site.items["pii"].sha256


def test_release_delete_and_purge(site, thread_sink, capsys):
    pii, virus, old = site.items["pii"], site.items["virus"], site.items["old"]
    code, out, _ = run(capsys, "quarantine", "release", pii.id, "--by", "rita", "--reason", "test data",
                       "--config", site.config)
    assert code == 0 and "released" in out
    assert [m.rcpt_tos for m in thread_sink.messages] == [["bob@example.org"]]
    code, _, err = run(capsys, "quarantine", "release", pii.id, "--by", "rita", "--reason", "again",
                       "--config", site.config)
    assert code == 1 and "not held" in err and len(thread_sink.messages) == 1
    code, _, err = run(capsys, "quarantine", "release", virus.id, "--by", "rita", "--reason", "x",
                       "--config", site.config)
    assert code == 1 and "admin" in err                         # rita is a known reviewer
    code, out, _ = run(capsys, "quarantine", "delete", virus.id, "--by", "ada", "--reason", "malware",
                       "--config", site.config)
    assert code == 0 and "Deleted" in out
    code, out, _ = run(capsys, "quarantine", "purge", "--config", site.config)
    assert code == 0 and "purged the content of 1 message" in out
    stored = site.run(lambda s: s.get(old.id))
    assert stored.raw is None and stored.status == "expired"
    audit = site.run(lambda s: s.audit_log())
    assert [(e.actor, e.action) for e in audit][:3] == [("gateway purge (cli)", "purge"), ("ada (cli)", "delete"),
                                                        ("rita (cli)", "release-denied")]


def test_users_add_token_and_revoke(site, capsys):
    code, out, _ = run(capsys, "users", "add", "nina", "--role", "reviewer", "--config", site.config,
                       stdin="a-long-enough-password\n")
    assert code == 0 and "added nina (reviewer)" in out
    code, _, err = run(capsys, "users", "add", "nina", "--role", "reviewer", "--config", site.config,
                       stdin="a-long-enough-password\n")
    assert code == 1 and "cannot add user" in err
    code, _, err = run(capsys, "users", "add", "bad name", "--role", "admin", "--config", site.config,
                       stdin="a-long-enough-password\n")
    assert code == 1 and "invalid user name" in err
    code, _, err = run(capsys, "users", "add", "short", "--role", "admin", "--config", site.config, stdin="short\n")
    assert code == 1 and "10 characters" in err
    user = site.run(lambda s: s.get_user("nina"))
    assert user.role == "reviewer" and user.password_hash.startswith("$argon2") and "a-long" not in user.password_hash
    code, token, _ = run(capsys, "users", "token", "nina", "--config", site.config)
    token = token.strip()
    assert code == 0 and token.startswith("gw_")
    with sqlite3.connect(site.url.removeprefix("sqlite://")) as db:        # only the hash is stored
        assert not db.execute("SELECT 1 FROM tokens WHERE token_hash = ?", (token,)).fetchall()
    assert site.run(lambda s: s.user_for_token(accounts.token_hash(token))).name == "nina"
    code, out, _ = run(capsys, "users", "revoke", token, "--config", site.config)
    assert code == 0 and "revoked 1" in out
    code, out, _ = run(capsys, "users", "revoke", "--user", "rita", "--config", site.config)
    assert code == 0 and "revoked 1" in out


@contextlib.contextmanager
def review_alone(site, ready):
    """`gateway review` alone on a free port, until `ready(port, proc)` returns true (30 s at most); yields
    (port, proc) and kills what is still running at the end."""
    port = free_port()
    config = site.config + ".review.toml"
    with open(site.config) as src, open(config, "w") as dst:
        dst.write(src.read() + f'[review]\nlisten = "127.0.0.1:{port}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "review", "--config", config],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    try:
        deadline = time.time() + 30
        while not ready(port):
            assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else "timeout"
            time.sleep(0.002)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def answers_login(port: int) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2) as r:
        assert r.status == 200 and b"Log in" in r.read()
        return True
    return False


def accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def test_gateway_review_serves_alone_and_stops_on_sigterm(site):
    with review_alone(site, answers_login) as (_, proc):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_gateway_review_stopped_the_moment_its_port_opens_exits_cleanly(site):
    """A SIGTERM that arrives as soon as the port accepts (a supervisor's stop right after start) is handled,
    not the default action that kills the process."""
    with review_alone(site, accepts) as (_, proc):
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
        assert code == 0, (code, proc.stderr.read().decode())


async def test_held_is_committed_in_postgresql_before_250(start_gateway, thread_sink):
    malformed = make_message(subject="Broken", extra_headers="").replace(
        b"Content-Type: text/plain; charset=utf-8", b"Content-Type: multipart/mixed; boundary=ZZ") + \
        b"\r\n--ZZ\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
    async with PgDatabase() as url:
        gw = await start_gateway(quarantine={"url": url})
        code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], malformed)
        assert code == 250, text
        [item] = await gw.store.list()
        assert item.rule == "outbound/malformed" and (await gw.store.get(item.id)).raw.endswith(b"hi\r\n")
        assert thread_sink.messages == []
        await gw.gateway.close()
