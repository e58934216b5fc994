"""The benchmark's peers: the sink, the targets (no-op relay, gateway variants) and amavisd-new + clamd."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import sys
from pathlib import Path

from procs import Proc, free_port

HERE = Path(__file__).resolve().parent
PY = sys.executable


SINK_CODE = r'''
import asyncio, sys
async def handle(reader, writer):
    writer.write(b"220 sink ESMTP\r\n")
    while True:
        line = await reader.readline()
        if not line:
            break
        verb = line[:4].upper()
        if verb == b"DATA":
            writer.write(b"354 go\r\n")
            buf = b"\r\n"
            while True:
                chunk = await reader.read(262144)
                if not chunk:
                    return
                buf = buf[-4:] + chunk
                if b"\r\n.\r\n" in buf:
                    break
            writer.write(b"250 ok\r\n")
        elif verb == b"QUIT":
            writer.write(b"221 bye\r\n")
            break
        elif verb in (b"EHLO", b"HELO"):
            writer.write(b"250-sink\r\n250-8BITMIME\r\n250 SIZE 0\r\n")
        else:
            writer.write(b"250 ok\r\n")
    writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    await server.serve_forever()
asyncio.run(main())
'''


def start_sink(work: Path) -> Proc:
    port = free_port()
    smtp_sink = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)
    if smtp_sink:
        # -t 600: a relay's idle next-hop connection waits while large messages queue for inspection;
        # smtp-sink's default 100 s is shorter than Postfix's smtpd_timeout (300 s)
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        argv = [smtp_sink, "-t", "600", *user, f"127.0.0.1:{port}", "1024"]
        proc = Proc("sink", argv, port, work / "sink.log")
        proc.kind = "postfix smtp-sink"
    else:
        proc = Proc("sink", [PY, "-c", SINK_CODE, str(port)], port, work / "sink.log")
        proc.kind = "asyncio sink"
    return proc


def gateway_config(work: Path, name: str, port: int, sink_port: int, workers: int, reader: str) -> Path:
    path = work / f"{name}.toml"
    site = ""
    if name == "gateway-bare":      # the relay core's own cost: parse, policy, relaying; one trivial detector
        (work / "bare-site.toml").write_text('[detectors]\nenabled = ["size"]\n')
        site = f'[policy]\nsite = "{work / "bare-site.toml"}"\n'
    path.write_text(site + f"""
[smtp]
listen = "127.0.0.1:{port}"
hostname = "gateway.bench"
workers = {workers}
data_reader = "{reader}"
max_connections = 1000
max_connections_per_client = 1000
[relay]
next_hop = "127.0.0.1:{sink_port}"
starttls = "off"
[domains]
local = ["example.gov"]
[networks]
internal = ["127.0.0.0/8"]
[quarantine]
url = "sqlite:///{work / (name + '-quarantine.db')}"
[review]
enabled = false     # the review app is not measured (and two gateways would both want its port)
[antivirus]
clamd = ""          # antivirus off, as the issue's throughput target says (clamd's cost is reported apart)
[metrics]
listen = "127.0.0.1:{free_port()}"
""")
    return path


def start_target(name: str, work: Path, sink: Proc, workers: int, baseline: Path | None = None) -> Proc:
    """A target process; `gateway-baseline` is `gateway run` from another checkout (`python -m` puts its
    working directory first on sys.path), for a same-run A/B of a change."""
    if name == "sink":
        return sink
    port = free_port()
    if name == "noop":
        argv = [PY, str(HERE / "noop_relay.py"), "--port", str(port), "--next-hop", str(sink.port),
                "--workers", str(workers)]
        return Proc(name, argv, port, work / "noop.log")
    count = 1 if name == "gateway-1w" else workers
    reader = "lines" if name == "gateway-lines" else "chunked"
    config = gateway_config(work, name, port, sink.port, count, reader)
    return Proc(name, [PY, "-m", "gateway.cli", "run", "--config", str(config)], port, work / f"{name}.log",
                cwd=baseline if name == "gateway-baseline" else None)


AMAVIS_CONF = """use strict;
$MYHOME = '{home}';
$TEMPBASE = "$MYHOME/tmp";
$db_home = "$MYHOME/db";
$helpers_home = "$MYHOME/var";
$pid_file = "$MYHOME/amavisd.pid";
$lock_file = "$MYHOME/amavisd.lock";
$daemon_user = 'amavis';
$daemon_group = 'amavis';
$myhostname = 'amavis.bench.test';
$mydomain = 'example.gov';
@local_domains_maps = (['.example.gov']);
$max_servers = {servers};
$max_requests = 1000;
$inet_socket_bind = '127.0.0.1';
$inet_socket_port = {port};
@inet_acl = qw(127.0.0.1);
$forward_method = 'smtp:[127.0.0.1]:{sink_port}';
$notify_method = $forward_method;
@bypass_spam_checks_maps = (1);
$enable_dkim_verification = 0;
$enable_dkim_signing = 0;
$enable_db = 0;
$enable_global_cache = 0;
$unix_socketname = undef;
$do_syslog = 0;
$LOGFILE = "$MYHOME/amavis.log";
$log_level = 0;
$final_virus_destiny = D_DISCARD;
$final_banned_destiny = D_PASS;
$final_bad_header_destiny = D_PASS;
@av_scanners = (
  ['ClamAV-clamd', \\&ask_daemon, ["CONTSCAN {{}}\\n", "{socket}"],
    qr/\\bOK$/m, qr/\\bFOUND$/m, qr/^.*?: (?!Infected Archive)(.*) FOUND$/m ],
);
@av_scanners_backup = ();
1;
"""


def start_amavis(work: Path, sink: Proc, servers: int) -> tuple[Proc, Proc] | None:
    """amavisd-new (Debian's package) with its own clamd, both from temporary configurations.

    clamd gets a one-signature database made here (nothing is downloaded), so its scanning cost is
    the engine's, not a full signature set's; its CPU is reported apart from amavisd's."""
    amavisd, clamd = shutil.which("amavisd") or "/usr/sbin/amavisd", shutil.which("clamd") or "/usr/sbin/clamd"
    if not (os.path.exists(amavisd) and os.path.exists(clamd)) or os.geteuid() != 0:
        return None

    try:
        user = pwd.getpwnam("amavis")
    except KeyError:
        return None
    base = work / "amavis"
    (base / "clamdb").mkdir(parents=True)
    sample = b"gateway bench test signature content 0123456789\n"
    (base / "clamdb" / "bench.hdb").write_text(f"{hashlib.md5(sample).hexdigest()}:{len(sample)}:Bench.Test\n")
    sock = base / "clamd.sock"
    (base / "clamd.conf").write_text(f"LocalSocket {sock}\nLocalSocketMode 666\nDatabaseDirectory {base}/clamdb\n"
                                     f"Foreground yes\nLogFile {base}/clamd.log\nUser root\nMaxThreads 8\n")
    clamd_proc = Proc("clamd", [clamd, "-c", str(base / "clamd.conf")], 0, work / "clamd.log", unix_socket=sock)
    home = base / "home"
    for sub in ("tmp", "db", "var"):
        (home / sub).mkdir(parents=True)
    for path in [home, *home.iterdir()]:
        os.chown(path, user.pw_uid, user.pw_gid)
    os.chmod(work, 0o755)
    os.chmod(base, 0o755)
    port = free_port()
    conf = base / "amavisd.conf"
    conf.write_text(AMAVIS_CONF.format(home=home, servers=servers, port=port, sink_port=sink.port, socket=sock))
    amavis_proc = Proc("amavis", [amavisd, "-c", str(conf), "foreground"], port, work / "amavis.log")
    return amavis_proc, clamd_proc


