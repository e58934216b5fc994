"""A real Postfix (Debian's package) run from a throw-away configuration directory for the tests:
its own queue and data directories, loopback ports only, no chroot, relaying everything to the
test sink. Started with `postfix -c DIR start`, stopped with `postfix -c DIR stop`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"

# Postfix's internal services, none chrooted (the queue directory is under /tmp).
MASTER_BASE = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def postfix_available() -> bool:
    return os.path.exists(POSTFIX) and os.geteuid() == 0 and _has_user("postfix")


def _has_user(name: str) -> bool:
    import pwd
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


_TEMPLATE: Path | None = None


def _template() -> Path:
    """One instance directory per test run where `postfix check` created the queue tree (~3 s once)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        template = Postfix(0)
        template.write_config(template=False)
        template.run("check", check=False)
        atexit.register(shutil.rmtree, template.dir, True)
        _TEMPLATE = template.dir
    return _TEMPLATE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postfix:
    """One instance. `main` adds main.cf parameters; `services` adds master.cf lines."""

    def __init__(self, sink_port: int, main: dict[str, str] | None = None, services: str = "") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gw-postfix-"))
        os.chmod(self.dir, 0o755)                 # the postfix user must reach the queue below it
        self.port = free_port()
        self.sink_port = sink_port
        self.main = main or {}
        self.services = services
        self.started = False

    @property
    def queue(self) -> Path:
        return self.dir / "queue"

    def write_config(self, template: bool = True) -> None:
        if template:                       # the queue tree `postfix check` makes, copied with owners (fast)
            subprocess.run(["cp", "-a", str(_template() / "queue"), str(self.queue)], check=True, timeout=30)
        (self.dir / "data").mkdir(exist_ok=True)
        shutil.chown(self.dir / "data", "postfix")
        self.queue.mkdir(exist_ok=True)
        params = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.dir / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "mta.example.gov",
            "mydomain": "example.gov",
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relay_domains": "",
            "relayhost": f"[127.0.0.1]:{self.sink_port}",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "smtputf8_enable": "no",
            "biff": "no",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "maillog_file": str(self.dir / "maillog"),
            "maillog_file_prefixes": str(self.dir),
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "smtp_connect_timeout": "5s",
            "milter_default_action": "tempfail",
            "milter_connect_timeout": "5s",
            "milter_command_timeout": "10s",
            "milter_content_timeout": "30s",
            "shlib_directory": "/usr/lib/postfix",
            "meta_directory": "/etc/postfix",
            **self.main,
        }
        (self.dir / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in params.items()))
        (self.dir / "master.cf").write_text(
            f"127.0.0.1:{self.port} inet n - n - - smtpd\n" + MASTER_BASE + self.services)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([POSTFIX, "-c", str(self.dir), *args], capture_output=True, text=True,
                              timeout=60, check=check)

    async def start(self) -> Postfix:
        self.write_config()
        result = await asyncio.to_thread(self.run, "start", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"postfix start failed: {result.stdout}{result.stderr}\n{self.log()}")
        self.started = True
        await wait_port(self.port)
        return self

    async def stop(self) -> None:
        if self.started:
            pid = self.master_pid()
            await asyncio.to_thread(self.run, "stop", check=False)
            end = time.monotonic() + 10
            while pid and _alive(pid) and time.monotonic() < end:
                await asyncio.sleep(0.05)
            if pid and _alive(pid):
                await asyncio.to_thread(self.run, "abort", check=False)
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def master_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.queue / "pid" / "master.pid").read_text().strip())
        return None

    def flush(self) -> None:
        subprocess.run([POSTQUEUE, "-c", str(self.dir), "-f"], capture_output=True, timeout=30, check=False)

    def queue_ids(self, queue: str) -> list[str]:
        """Queue files in one of Postfix's queues: 'hold', 'deferred', 'active', 'incoming'."""
        base = self.queue / queue
        return sorted(p.name for p in base.rglob("*") if p.is_file()) if base.exists() else []

    def mark_log(self) -> None:
        self.log_mark = len(self.log())

    def new_log(self) -> str:
        """What Postfix logged since mark_log()."""
        return self.log()[getattr(self, "log_mark", 0):]

    async def logged(self, text: str, timeout: float = 10.0) -> bool:
        """Has Postfix logged `text` since mark_log()? Waits a little: postlogd writes asynchronously."""
        end = time.monotonic() + timeout
        while text not in self.new_log():
            if time.monotonic() > end:
                return False
            await asyncio.sleep(0.05)
        return True

    def clear_queues(self) -> None:
        subprocess.run(["/usr/sbin/postsuper", "-c", str(self.dir), "-d", "ALL"], capture_output=True,
                       timeout=30, check=False)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "maillog").read_text(errors="replace")
        return ""


DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "postfix"


def snippet(name: str, ports: dict[int, int]) -> str:
    """A shipped deploy/postfix file with its default ports replaced by the test's."""
    text = (DEPLOY / name).read_text()
    for default, port in ports.items():
        text = text.replace(str(default), str(port))
    return text


def main_cf(text: str) -> dict[str, str]:
    """main.cf text -> parameters (comments dropped, continuation lines joined)."""
    params: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and last:
            params[last] += " " + line.strip()
            continue
        key, _, value = line.partition("=")
        last = key.strip()
        params[last] = value.strip()
    return params


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def wait_port(port: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.1)
