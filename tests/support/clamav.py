"""A real clamd for the tests: Debian's /usr/sbin/clamd in the foreground on a temporary unix socket,
with a signature database generated at test time (there is no Internet here for freshclam, and no
EICAR file is ever committed: tests.support.files.eicar() builds the string from pieces).

Archive scanning, AlertExceedsMax and AlertEncrypted are on, as in deploy/clamav/clamd.conf.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.files import eicar

CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"
SIGNATURE = "Gateway.Test.EICAR"
FOUND = f"{SIGNATURE}.UNOFFICIAL"          # clamd marks signatures outside its official databases


def write_database(directory: Path) -> None:
    """An extended (.ndb) signature for the EICAR string: name:target type (0 = any):offset:hex."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "gateway-test.ndb").write_text(f"{SIGNATURE}:0:*:{eicar().hex()}\n")


class ClamdServer:
    """One clamd process; start() waits until it answers PING, stop() ends it."""

    def __init__(self, directory: Path, **options: str) -> None:
        self.dir = directory
        self.socket = directory / "clamd.sock"
        self.options = options
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"

    def config(self) -> str:
        settings = {
            "Foreground": "yes", "LocalSocket": str(self.socket), "DatabaseDirectory": str(self.dir / "db"),
            "TemporaryDirectory": str(self.dir), "LogFile": str(self.dir / "clamd.log"), "LogTime": "yes",
            "ScanArchive": "yes", "ScanMail": "yes", "AlertExceedsMax": "yes", "AlertEncrypted": "yes",
            "StreamMaxLength": "60M", "MaxThreads": "4", "SelfCheck": "3600", "ReadTimeout": "30",
        }
        settings.update(self.options)
        return "".join(f"{k} {v}\n" for k, v in settings.items())

    def start(self, timeout: float = 60.0) -> ClamdServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_database(self.dir / "db")
        conf = self.dir / "clamd.conf"
        conf.write_text(self.config())
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        self.process = subprocess.Popen([CLAMD, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                log = (self.dir / "clamd.log").read_text(errors="replace")[-2000:] \
                    if (self.dir / "clamd.log").exists() else ""
                raise RuntimeError(f"clamd exited with {self.process.returncode}: {log}")
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"clamd did not answer within {timeout} s")

    def ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(str(self.socket))
                s.sendall(b"zPING\0")
                return s.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


@pytest.fixture(scope="session")
def clamd_server(tmp_path_factory):
    """The session's clamd (one per test run; about 0.3 s to start with the generated database)."""
    if not os.path.exists(CLAMD):
        pytest.fail("clamd is not installed: run scripts/setup test (it installs clamav-daemon)")
    server = ClamdServer(tmp_path_factory.mktemp("clamd")).start()
    yield server
    server.stop()


class HangingScanner:
    """A unix socket that accepts connections and reads, but never answers: a clamd that hangs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.server: asyncio.base_events.Server | None = None
        self.connections = 0

    @property
    def address(self) -> str:
        return f"unix://{self.path}"

    async def start(self) -> HangingScanner:
        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            with contextlib.suppress(Exception):
                while await reader.read(65536):
                    pass
            writer.close()

        self.server = await asyncio.start_unix_server(swallow, path=str(self.path))
        return self

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            self.server = None
