"""Relay throughput, latency and memory: the gateway side by side with a no-op relay, same load, same sink.

    .venv/bin/python bench/run.py --duration 20 --sessions 20

Starts on loopback only, and stops by itself:
- a fast sink: Postfix's smtp-sink (C) when installed, else a minimal asyncio sink;
- targets, each its own process(es): `sink` (the load straight into the sink, the floor), `noop` (a
  no-op aiosmtpd relay, bench/noop_relay.py, with as many SO_REUSEPORT processes as the gateway has
  workers) and `gateway` (`gateway run` with the shipped default policy, antivirus off);
  `--variants gateway-lines,gateway-1w` adds the gateway with aiosmtpd's line reader / one worker;
- the load: bench/load.py (asyncio, its own process; its CPU is not counted), many concurrent SMTP
  sessions with a realistic mix generated at run time (bench/messages.py).

It reports, per target and mix: msg/s, latency p50/p95/p99 (MAIL to the final reply), CPU time per
message of the target's processes, their peak RSS (sampled sum over the process tree), and the
ratio to the no-op relay; then latency at half the gateway's maximum rate for every target (the
"added" latency is the gateway's minus the sink's); then CPU per message by message size (is the
cost linear?); then peak RSS with --memory-sessions concurrent sessions each sending a 10 MB message.
Results also go to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"bench: nothing listening on port {port}")


# ---------------------------------------------------------------------------------------------------
# Process accounting from /proc


def tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / TICK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


class Sampler:
    """Peak of the summed RSS of a process tree, sampled every 50 ms."""

    def __init__(self, root: int) -> None:
        self.pids = tree(root)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pids))
            self._stop.wait(0.05)

    def __enter__(self) -> Sampler:
        self.cpu0 = cpu_seconds(self.pids)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu = cpu_seconds(self.pids) - self.cpu0


# ---------------------------------------------------------------------------------------------------
# Peers


class Proc:
    def __init__(self, name: str, argv: list[str], port: int, log: Path, env: dict | None = None,
                 unix_socket: Path | None = None) -> None:
        self.name, self.port = name, port
        self.log = open(log, "wb")      # noqa: SIM115
        self.popen = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
                                      env={**os.environ, **(env or {})})
        if unix_socket is not None:
            end = time.monotonic() + 60
            while not unix_socket.exists() and time.monotonic() < end and self.popen.poll() is None:
                time.sleep(0.1)
            if not unix_socket.exists():
                raise SystemExit(f"bench: {name} did not start (see its log)")
        else:
            wait_port(port)
        time.sleep(1.0 if name != "sink" else 0.2)      # every worker listening

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(40)
            except subprocess.TimeoutExpired:
                for pid in reversed(tree(self.popen.pid)):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                self.popen.wait(5)
        self.log.close()


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
    path.write_text(f"""
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
[metrics]
listen = "127.0.0.1:{free_port()}"
""")
    return path


def start_target(name: str, work: Path, sink: Proc, workers: int) -> Proc:
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
    return Proc(name, [PY, "-m", "gateway.cli", "run", "--config", str(config)], port, work / f"{name}.log")


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
    import hashlib
    import pwd

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


def load(port: int, mix: str, sessions: int, duration: float, rate: float = 0, once: bool = False) -> dict:
    argv = [PY, str(HERE / "load.py"), "--port", str(port), "--mix", mix, "--sessions", str(sessions),
            "--duration", str(duration)] + (["--once"] if once else [])
    if rate:
        argv += ["--rate", str(rate)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 300)
    if out.returncode != 0:
        raise SystemExit(f"bench: load generator failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def measure(proc: Proc, mix: str, sessions: int, duration: float, rate: float = 0, warmup: float = 2,
            clamd: Proc | None = None) -> dict:
    if warmup:
        load(proc.port, mix, sessions, warmup, rate)
    clamd_cpu0 = cpu_seconds(tree(clamd.popen.pid)) if clamd else 0.0
    with Sampler(proc.popen.pid) as sampler:
        result = load(proc.port, mix, sessions, duration, rate)
    if clamd:
        clamd_cpu = cpu_seconds(tree(clamd.popen.pid)) - clamd_cpu0
        result["clamd_cpu_ms_per_msg"] = round(clamd_cpu * 1000 / max(1, result["ok"]), 3)
    result["cpu_ms_per_msg"] = round(sampler.cpu * 1000 / max(1, result["ok"]), 3)
    result["cpu_cores"] = round(sampler.cpu / result["duration_s"], 2)
    result["peak_rss_mb"] = round(sampler.peak / 1e6, 1)
    return result


def memory_run(proc: Proc, sessions: int) -> dict:
    """`sessions` concurrent sessions, each sending one 10 MB message, all at once."""
    with Sampler(proc.popen.pid) as sampler:
        result = load(proc.port, "att10m", sessions, 600, once=True)
    result["peak_rss_mb"] = round(sampler.peak / 1e6, 1)
    result["cpu_s"] = round(sampler.cpu, 2)
    return result


# ---------------------------------------------------------------------------------------------------


def row(name: str, r: dict, base: dict | None) -> str:
    ratio = f"{r['msg_per_s'] / base['msg_per_s']:.2f}" if base and base.get("msg_per_s") else "-"
    return (f"  {name:<14} {r['msg_per_s']:>8} msg/s {r['mbytes_per_s']:>7} MB/s  p50 {r['p50_ms']!s:>8} "
            f"p95 {r['p95_ms']!s:>8} p99 {r['p99_ms']!s:>8} ms  cpu {r['cpu_ms_per_msg']:>7} ms/msg "
            f"({r['cpu_cores']} cores)  rss {r['peak_rss_mb']:>7} MB  x{ratio} of noop"
            + (f"  (+ clamd {r['clamd_cpu_ms_per_msg']} ms/msg)" if "clamd_cpu_ms_per_msg" in r else "")
            + (f"  [{r['error_count']} errors: {r['errors'][:1]}]" if r["error_count"] else ""))


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem / 2**30, 1), "python": sys.version.split()[0],
            "load_avg_at_start": os.getloadavg()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run (default 10)")
    parser.add_argument("--sessions", type=int, default=20, help="concurrent SMTP sessions (default 20)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="gateway workers / noop processes")
    parser.add_argument("--variants", default="", help="extra targets: gateway-lines, gateway-1w (comma separated)")
    parser.add_argument("--mixes", default="text+html,full")
    parser.add_argument("--repeat", type=int, default=3, help="runs per target, interleaved; the best counts")
    parser.add_argument("--memory-sessions", type=int, default=100, help="0 skips the memory run")
    parser.add_argument("--skip-sizes", action="store_true", help="skip the per-size cost runs")
    parser.add_argument("--no-amavis", action="store_true", help="skip amavisd-new + clamd as a peer")
    parser.add_argument("--only", default="throughput,latency,sizes,memory", help="parts to run (comma separated)")
    parser.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    report: dict = {"command": " ".join(sys.argv), "machine": machine(), "args": vars(args), "throughput": {},
                    "latency_at_half": {}, "sizes": {}, "memory": {}}
    print(f"machine: {report['machine']}")
    sink = start_sink(work)
    report["sink"] = sink.kind
    print(f"sink: {sink.kind}; workers: {args.workers}; sessions: {args.sessions}; duration: {args.duration}s")
    targets = ["sink", "noop", "gateway"] + [v for v in args.variants.split(",") if v]
    procs: dict[str, Proc] = {}
    clamd = None
    try:
        for name in targets:
            procs[name] = start_target(name, work, sink, args.workers)
        if not args.no_amavis:
            started = start_amavis(work, sink, servers=max(2, args.workers * 2))
            if started:
                procs["amavis"], clamd = started
                targets.append("amavis")
                report["amavis"] = "amavisd-new with clamd (one-signature database), spam checks off"
            else:
                report["amavis"] = "not run: amavisd, clamd or the amavis user missing, or not root"
            print(f"amavis: {report['amavis']}")
        parts = set(args.only.split(","))
        for mix in args.mixes.split(",") if parts & {"throughput", "latency"} else []:
            print(f"\nthroughput, mix {mix} (closed loop, {args.sessions} sessions, best of {args.repeat}):")
            runs: dict[str, list[dict]] = {name: [] for name in targets}
            for _ in range(args.repeat):            # interleaved, so that load from elsewhere hits every target
                for name in targets:
                    runs[name].append(measure(procs[name], mix, args.sessions, args.duration, clamd=clamd
                                              if name == "amavis" else None))
            results = {name: max(rs, key=lambda r: r["msg_per_s"]) for name, rs in runs.items()}
            for name in targets:
                print(row(name, results[name], results.get("noop")))
            report["throughput"][mix] = {"best": results, "runs": runs}

        mix = args.mixes.split(",")[0]
        rate = 0 if "latency" not in parts else round(report["throughput"][mix]["best"]["gateway"]["msg_per_s"] / 2, 1)
        if rate:
            print(f"\nlatency at half the gateway's maximum ({rate} msg/s), mix {mix}, best p99 of {args.repeat}:")
            runs = {name: [] for name in targets}
            for _ in range(args.repeat):
                for name in targets:
                    runs[name].append(measure(procs[name], mix, args.sessions, args.duration, rate=rate, warmup=1,
                                              clamd=clamd if name == "amavis" else None))
            results = {name: min(rs, key=lambda r: (r["failed"] + r["error_count"], r["p99_ms"] or 1e9))
                       for name, rs in runs.items()}
            for name in targets:
                print(row(name, results[name], results.get("noop")))
            sink_r = results["sink"]
            added = {p: round(results["gateway"][p] - sink_r[p], 2) for p in ("p50_ms", "p95_ms", "p99_ms")}
            print(f"  added by the gateway (gateway - sink): p50 {added['p50_ms']} p95 {added['p95_ms']} "
                  f"p99 {added['p99_ms']} ms")
            report["latency_at_half"] = {"rate": rate, "mix": mix, "best": results, "runs": runs,
                                         "added_by_gateway_ms": added}

        if not args.skip_sizes and "sizes" in parts:
            print("\ncost by message size (closed loop, 4 sessions):")
            for kind in ("text5k", "html20k", "att1m", "att10m"):
                report["sizes"][kind] = {}
                for name in ("noop", "gateway"):
                    duration = max(3.0, args.duration / 2)
                    r = measure(procs[name], kind, 4, duration, warmup=1)
                    report["sizes"][kind][name] = r
                    mb = r["mbytes_per_s"] * r["duration_s"] / max(1, r["ok"])
                    per_mb = r["cpu_ms_per_msg"] / mb if mb else 0
                    print(f"  {kind:<8} {name:<8} {r['msg_per_s']:>8} msg/s  cpu {r['cpu_ms_per_msg']:>9} ms/msg "
                          f"= {per_mb:7.1f} ms/MB  p50 {r['p50_ms']} ms  rss {r['peak_rss_mb']} MB")

        if args.memory_sessions and "memory" in parts:
            print(f"\nmemory: {args.memory_sessions} concurrent sessions each sending a 10 MB message:")
            for name in ("gateway",):
                r = memory_run(procs[name], args.memory_sessions)
                report["memory"][name] = r
                print(f"  {name:<8} {r['ok']} delivered, {r['error_count']} errors, peak RSS {r['peak_rss_mb']} MB "
                      f"(all processes), {r['duration_s']} s, cpu {r['cpu_s']} s"
                      + (f"  [{r['errors'][:1]}]" if r["error_count"] else ""))
    finally:
        for proc in procs.values():
            if proc is not sink:
                proc.stop()
        if clamd:
            clamd.stop()
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
