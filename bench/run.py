"""Relay throughput, latency and memory: the gateway side by side with a no-op relay, same load, same sink.

    .venv/bin/python bench/run.py --duration 20 --sessions 20

Starts on loopback only, and stops by itself:
- a fast sink: Postfix's smtp-sink (C) when installed, else a minimal asyncio sink;
- targets, each its own process(es): `sink` (the load straight into the sink, the floor), `noop` (a
  no-op aiosmtpd relay, bench/noop_relay.py, with as many SO_REUSEPORT processes as the gateway has
  workers) and `gateway` (`gateway run` with the shipped default policy, antivirus off);
  `--variants gateway-lines,gateway-1w,gateway-bare` adds the gateway with aiosmtpd's line reader / one
  worker / no detectors but `size` (what the relay core costs without the policy's checks);
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
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import start_amavis, start_sink, start_target
from procs import Proc, Sampler, cpu_seconds, tree

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable


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
    if not result["ok"]:
        raise SystemExit(f"bench: {proc.name} delivered nothing: {result['errors'][:2]} (log: {proc.log.name})")
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
    parser.add_argument("--variants", default="",
                        help="extra targets: gateway-lines, gateway-1w, gateway-bare (comma separated)")
    parser.add_argument("--mixes", default="text+html,full")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout (e.g. a git worktree of the commit before a change): adds the target "
                             "gateway-baseline, run from there, interleaved with the others for a same-run A/B")
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
    if args.baseline:
        targets.append("gateway-baseline")
    procs: dict[str, Proc] = {}
    clamd = None
    try:
        for name in targets:
            procs[name] = start_target(name, work, sink, args.workers, args.baseline)
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
            medians = {name: sorted(r["msg_per_s"] for r in rs)[len(rs) // 2] for name, rs in runs.items()}
            print("  median msg/s of the runs: " + ", ".join(f"{n} {m}" for n, m in medians.items()))
            report["throughput"][mix] = {"best": results, "runs": runs, "median_msg_per_s": medians}

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
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
