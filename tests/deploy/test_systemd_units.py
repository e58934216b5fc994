"""The shipped systemd units: `systemd-analyze verify` on copies whose programs exist here, and what the
units promise (start order against Debian's Postfix instance, a real reload, clamd ready before the
gateway, no silent skip without signatures). PID 1 here is not systemd: the ordering is read, not run."""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.paths import ROOT

UNITS = ROOT / "deploy" / "systemd"
ANALYZE = shutil.which("systemd-analyze")


def unit(name: str) -> str:
    return (UNITS / name).read_text()


def directives(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (scripts/setup test installs systemd)")
def test_systemd_analyze_verify_accepts_both_units(tmp_path):
    gateway = Path(sys.executable).with_name("gateway")
    clamd = "/usr/sbin/clamd" if Path("/usr/sbin/clamd").exists() else "/bin/true"
    for name in ("gateway.service", "clamd-gateway.service"):
        text = unit(name).replace("/opt/gateway/bin/gateway", str(gateway)).replace("/usr/sbin/clamd", clamd)
        (tmp_path / name).write_text(text)
    out = subprocess.run([ANALYZE, "verify", "--man=no", "gateway.service", "clamd-gateway.service"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    ours = [line for line in (out.stdout + out.stderr).splitlines() if "gateway" in line]
    assert out.returncode == 0 and not ours, out.stdout + out.stderr


def test_gateway_starts_before_either_postfix_unit_and_reloads_for_real():
    text = unit("gateway.service")
    before = " ".join(directives(text, "Before")).split()
    assert {"postfix.service", "postfix@-.service"} <= set(before)
    assert directives(text, "ExecReload") == ["/bin/kill -HUP $MAINPID"]
    assert "reload-or-restart" not in text
    assert "clamd-gateway.service" in " ".join(directives(text, "After"))


def test_clamd_unit_fails_loudly_without_signatures_and_waits_for_its_socket():
    text = unit("clamd-gateway.service")
    assert not directives(text, "ConditionPathExistsGlob")          # a condition skips the unit silently
    assert directives(text, "AssertPathExistsGlob") == ["/var/lib/clamav/main.*"]
    [post] = directives(text, "ExecStartPost")
    conf = (ROOT / "deploy" / "clamav" / "clamd-gateway.conf").read_text()
    [sock] = re.findall(r"(?m)^LocalSocket\s+(\S+)", conf)
    assert sock in post


def run_wait(post: str, sock: Path, seconds: int) -> subprocess.CompletedProcess:
    post = post.replace("/run/clamd-gateway/clamd.sock", str(sock)).replace("timeout 290", f"timeout {seconds}")
    argv = shlex.split(post)
    return subprocess.run(argv, capture_output=True, timeout=seconds + 10)


def test_the_socket_wait_returns_once_clamd_listens_and_fails_when_it_never_does(tmp_path):
    [post] = directives(unit("clamd-gateway.service"), "ExecStartPost")
    sock = tmp_path / "clamd.sock"
    server = socket.socket(socket.AF_UNIX)

    def listen_later() -> None:
        time.sleep(1.5)
        server.bind(str(sock))
        server.listen()

    threading.Thread(target=listen_later, daemon=True).start()
    started = time.monotonic()
    try:
        assert run_wait(post, sock, 20).returncode == 0
        assert 1.0 <= time.monotonic() - started < 10
    finally:
        server.close()
    assert run_wait(post, tmp_path / "never.sock", 2).returncode != 0
