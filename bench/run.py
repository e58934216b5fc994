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
    def __init__(self, name: str, argv: list[str], port: int, log: Path, env: dict | None = None) -> None:
        self.name, self.port = name, port
        self.log = open(log, "wb")      # noqa: SIM115
        self.popen = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
                                      env={**os.environ, **(env or {})})
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
        argv = [smtp_sink, "-u", "nobody", f"127.0.0.1:{port}", "1024"] if os.geteuid() == 0 else \
            [smtp_sink, f"127.0.0.1:{port}", "1024"]
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


def load(port: int, mix: str, sessions: int, duration: float, rate: float = 0, once: bool = False) -> dict:
    argv = [PY, str(HERE / "load.py"), "--port", str(port), "--mix", mix, "--sessions", str(sessions),
            "--duration", str(duration)] + (["--once"] if once else [])
    if rate:
        argv += ["--rate", str(rate)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 300)
    if out.returncode != 0:
        raise SystemExit(f"bench: load generator failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def measure(proc: Proc, mix: str, sessions: int, duration: float, rate: float = 0, warmup: float = 2) -> dict:
    if warmup:
        load(proc.port, mix, sessions, warmup, rate)
    with Sampler(proc.popen.pid) as sampler:
        result = load(proc.port, mix, sessions, duration, rate)
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
    parser.add_argument("--memory-sessions", type=int, default=100, help="0 skips the memory run")
    parser.add_argument("--skip-sizes", action="store_true", help="skip the per-size cost runs")
    parser.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    report: dict = {"machine": machine(), "args": vars(args), "throughput": {}, "latency_at_half": {},
                    "sizes": {}, "memory": {}}
    print(f"machine: {report['machine']}")
    sink = start_sink(work)
    report["sink"] = sink.kind
    print(f"sink: {sink.kind}; workers: {args.workers}; sessions: {args.sessions}; duration: {args.duration}s")
    targets = ["sink", "noop", "gateway"] + [v for v in args.variants.split(",") if v]
    procs: dict[str, Proc] = {}
    try:
        for name in targets:
            procs[name] = start_target(name, work, sink, args.workers)
        for mix in args.mixes.split(","):
            print(f"\nthroughput, mix {mix} (closed loop, {args.sessions} sessions):")
            results = {}
            for name in targets:
                results[name] = measure(procs[name], mix, args.sessions, args.duration)
            for name in targets:
                print(row(name, results[name], results.get("noop")))
            report["throughput"][mix] = results

        mix = args.mixes.split(",")[0]
        rate = round(report["throughput"][mix]["gateway"]["msg_per_s"] / 2, 1)
        print(f"\nlatency at half the gateway's maximum ({rate} msg/s), mix {mix}:")
        results = {}
        for name in targets:
            results[name] = measure(procs[name], mix, args.sessions, args.duration, rate=rate, warmup=1)
        for name in targets:
            print(row(name, results[name], results.get("noop")))
        sink_r = results["sink"]
        added = {p: round(results["gateway"][p] - sink_r[p], 2) for p in ("p50_ms", "p95_ms", "p99_ms")}
        print(f"  added by the gateway (gateway - sink): p50 {added['p50_ms']} p95 {added['p95_ms']} "
              f"p99 {added['p99_ms']} ms")
        report["latency_at_half"] = {"rate": rate, "mix": mix, "results": results, "added_by_gateway_ms": added}

        if not args.skip_sizes:
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

        if args.memory_sessions:
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
