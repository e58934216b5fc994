"""Postfix alone, Postfix with rspamd as its milter, Postfix with the gateway's milter: same load, same sink.

    .venv/bin/python bench/milter_peers.py --duration 20 --rounds 2 --sessions 10      # as root

Everything on 127.0.0.1 from throw-away directories, stopped at the end (needs root, Debian's postfix
and rspamd packages):
- the sink: Postfix's smtp-sink;
- three Postfix instances (tests/support/postfix.py), each relaying to the sink: `postfix` (no milter),
  `rspamd` (smtpd_milters = rspamd's proxy worker with milter and self_scan on; Redis-backed and network
  modules off, DNS pointed at a closed local port) and `gateway` (`gateway run` with only [milter]
  enabled, the shipped default policy, antivirus off, as bench/run.py runs it);
- the load: Postfix's smtp-source, one process per message of the mix (bench/messages.py's text5k and
  html20k, the `text+html` mix), each with --sessions sessions, for --duration seconds per target;
  targets interleaved round by round, so that load from elsewhere on the machine hits each of them.

Per target: msg/s (messages Postfix accepted, i.e. past the milter's end-of-message reply, per second of
load; the queue is drained into the sink before the next round) and CPU time per message: the filter's
process tree plus Postfix's (master and its children, with the CPU of children that exited meanwhile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from messages import build  # noqa: E402
from peers import start_sink  # noqa: E402
from procs import Proc, free_port, tree  # noqa: E402

from tests.support.postfix import Postfix  # noqa: E402

PY = sys.executable
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
RSPAMD = shutil.which("rspamd") or "/usr/bin/rspamd"
TICK = os.sysconf("SC_CLK_TCK")
MIX = ("text5k", "html20k")

# Modules that need Redis, the network or DNS (rspamd 3.4's modules.d); each gets `enabled = false`.
RSPAMD_OFF = (
    "antivirus", "arc", "asn", "aws_s3", "bimi", "clickhouse", "dcc", "dkim", "dkim_signing", "dmarc",
    "elastic", "emails", "external_relay", "external_services", "fuzzy_check", "greylist", "history_redis",
    "hfilter", "metadata_exporter", "metric_exporter", "mx_check", "neural", "p0f", "ratelimit", "rbl",
    "replies", "reputation", "rspamd_update", "spamtrap", "spf", "surbl", "url_redirector", "whitelist",
)


def tree_cpu(root: int) -> float:
    """CPU seconds of a process tree, including children it has reaped (Postfix's smtpd, cleanup and
    smtp processes come and go during a run)."""
    total = 0
    for pid in tree(root):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])   # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            pass
    return total / TICK


def start_rspamd(work: Path, port: int, workers: int) -> Proc:
    """rspamd's packaged configuration with a private LOCAL_CONFDIR, DBDIR, RUNDIR and LOGDIR."""
    user = pwd.getpwnam("_rspamd")
    base = work / "rspamd"
    local, override = base / "local.d", base / "override.d"
    for d in (local, override, base / "db", base / "run", base / "log"):
        d.mkdir(parents=True)
    for d in (base / "db", base / "run", base / "log"):
        os.chown(d, user.pw_uid, user.pw_gid)
    for module in RSPAMD_OFF:
        (override / f"{module}.conf").write_text("enabled = false;\n")
    (override / "worker-proxy.inc").write_text(
        f'bind_socket = "127.0.0.1:{port}";\nmilter = yes;\ntimeout = 120s;\ncount = {workers};\n'
        'upstream "local" {\n  default = yes;\n  self_scan = yes;\n}\n')     # scan in the proxy itself
    (override / "worker-normal.inc").write_text("enabled = false;\n")
    controller = free_port()
    (override / "worker-controller.inc").write_text(f'bind_socket = "127.0.0.1:{controller}";\ncount = 1;\n')
    (override / "worker-fuzzy.inc").write_text("enabled = false;\ncount = 0;\n")
    (override / "statistic.conf").write_text("")        # the Bayes classifier needs Redis
    (override / "classifier-bayes.conf").write_text("enabled = false;\n")
    (local / "options.inc").write_text(
        'dns { nameserver = ["127.0.0.1:1"]; timeout = 0.1s; retransmits = 1; }\n'
        "check_all_filters = false;\n")
    (override / "logging.inc").write_text(f'type = "file";\nfilename = "{base}/log/rspamd.log";\nlevel = "warning";\n')
    argv = [RSPAMD, "-f", "-u", "_rspamd", "-g", "_rspamd", "-c", "/etc/rspamd/rspamd.conf",
            f"--var=LOCAL_CONFDIR={base}", f"--var=DBDIR={base}/db", f"--var=RUNDIR={base}/run",
            f"--var=LOGDIR={base}/log"]
    os.chmod(work, 0o755)
    os.chmod(base, 0o755)
    proc = Proc("rspamd", argv, port, work / "rspamd.out")
    proc.controller = controller
    return proc


def rspamd_scanned(proc: Proc) -> object:
    """How many messages rspamd says it scanned (its controller's /stat): proof that it filtered."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.controller}/stat", timeout=5) as r:
            return json.load(r).get("scanned")
    except (OSError, ValueError) as e:
        return f"unknown ({e})"


def start_gateway(work: Path, port: int, workers: int) -> Proc:
    config = work / "gateway.toml"
    config.write_text(f"""
[smtp]
enabled = false
workers = {workers}
[milter]
enabled = true
listen = "127.0.0.1:{port}"
[domains]
local = ["example.gov"]
[networks]
internal = ["127.0.0.0/8"]
[quarantine]
url = "sqlite:///{work / 'gateway-quarantine.db'}"
[antivirus]
clamd = ""
[metrics]
listen = "127.0.0.1:{free_port()}"
[log]
level = "WARNING"
""")
    return Proc("gateway", [PY, "-m", "gateway.cli", "run", "--config", str(config)], port, work / "gateway.log")


def drain(postfix: Postfix, timeout: float = 60) -> int:
    """Wait until Postfix has delivered everything; the messages still queued (0 when drained)."""
    end = time.monotonic() + timeout
    while True:
        left = sum(len(postfix.queue_ids(q)) for q in ("incoming", "active", "deferred", "maildrop"))
        if not left or time.monotonic() > end:
            return left
        if postfix.queue_ids("deferred"):
            postfix.flush()
        time.sleep(0.2)


def load(port: int, files: list[Path], sessions: int, duration: float) -> tuple[int, list[str]]:
    """One smtp-source per message file for `duration` s; messages accepted, and smtp-source's complaints."""
    procs = [subprocess.Popen([SMTP_SOURCE, "-c", "-s", str(sessions), "-m", "10000000", "-f", "alice@example.gov",
                               "-t", "bob@example.org", "-F", str(f), f"127.0.0.1:{port}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for f in files]
    time.sleep(duration)
    count, errors = 0, []
    for p in procs:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        numbers = re.findall(rb"\d+", out)
        count += int(numbers[-1]) if numbers else 0
        errors += [line for line in err.decode(errors="replace").splitlines() if line.strip()][:3]
    return count, errors


def measure(name: str, postfix: Postfix, filter_proc: Proc | None, files: list[Path], sessions: int,
            duration: float) -> dict:
    load(postfix.port, files, sessions, 2)       # warm-up
    drain(postfix)
    roots = [postfix.master_pid()] + ([filter_proc.popen.pid] if filter_proc else [])
    cpu0 = {r: tree_cpu(r) for r in roots}
    start = time.monotonic()
    count, errors = load(postfix.port, files, sessions, duration)
    elapsed = time.monotonic() - start
    left = drain(postfix)
    cpu = {r: tree_cpu(r) - cpu0[r] for r in roots}
    postfix_cpu = cpu[roots[0]]
    filter_cpu = cpu[roots[1]] if filter_proc else 0.0
    return {"target": name, "messages": count, "seconds": round(elapsed, 1), "msg_per_s": round(count / elapsed, 1),
            "cpu_ms_per_msg": round((postfix_cpu + filter_cpu) * 1000 / max(1, count), 2),
            "postfix_cpu_ms_per_msg": round(postfix_cpu * 1000 / max(1, count), 2),
            "filter_cpu_ms_per_msg": round(filter_cpu * 1000 / max(1, count), 2),
            "left_in_queue": left, "errors": errors}


async def start_postfix(sink_port: int, milter_port: int | None) -> Postfix:
    main = {"default_process_limit": "200", "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0", "smtpd_client_message_rate_limit": "0"}
    if milter_port:
        main |= {"smtpd_milters": f"inet:127.0.0.1:{milter_port}", "milter_protocol": "6",
                 "milter_default_action": "tempfail"}
    return await Postfix(sink_port, main).start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20, help="seconds of load per target and round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the (upper) median counts")
    parser.add_argument("--sessions", type=int, default=10, help="concurrent sessions per message of the mix")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="rspamd proxy / gateway workers")
    parser.add_argument("--targets", default="postfix,rspamd,gateway")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configurations)")
    parser.add_argument("--out", default=str(HERE / "results" / "milter_peers.json"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (Postfix and rspamd drop privileges to their users)")

    work = Path(tempfile.mkdtemp(prefix="gw-milter-peers-"))
    files = []
    for kind, raw in build().items():
        if kind in MIX:
            path = work / f"{kind}.eml"
            path.write_bytes(raw.replace(b"\r\n", b"\n"))     # smtp-source -F appends CRLF to each line
            files.append(path)
    targets = args.targets.split(",")
    sink = start_sink(work)
    filters: dict[str, Proc | None] = {"postfix": None}
    postfixes: dict[str, Postfix] = {}
    runs: dict[str, list[dict]] = {t: [] for t in targets}
    try:
        if "rspamd" in targets:
            filters["rspamd"] = start_rspamd(work, free_port(), args.workers)
        if "gateway" in targets:
            filters["gateway"] = start_gateway(work, free_port(), args.workers)
        for t in targets:
            postfixes[t] = asyncio.run(start_postfix(sink.port, filters[t].port if filters[t] else None))
        for r in range(args.rounds):
            for t in targets:
                result = measure(t, postfixes[t], filters[t], files, args.sessions, args.duration)
                runs[t].append(result)
                print(f"round {r + 1} {t:<8} {result['msg_per_s']:>7} msg/s  cpu {result['cpu_ms_per_msg']:>6} ms/msg "
                      f"(postfix {result['postfix_cpu_ms_per_msg']}, filter {result['filter_cpu_ms_per_msg']})  "
                      f"{result['messages']} msgs, {result['left_in_queue']} left in queue"
                      + (f"  errors: {result['errors'][:2]}" if result["errors"] else ""), flush=True)
        if filters.get("rspamd"):
            print(f"rspamd's controller: {rspamd_scanned(filters['rspamd'])} messages scanned")
    finally:
        for pf in postfixes.values():
            asyncio.run(pf.stop())
        for proc in filters.values():
            if proc:
                proc.stop()
        sink.stop()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nupper median of {args.rounds} rounds, mix {'+'.join(MIX)}, {args.sessions} sessions per message, "
          f"{args.workers} filter workers:")
    summary = {}
    for t in targets:
        rs = sorted(runs[t], key=lambda x: x["msg_per_s"])
        med = rs[len(rs) // 2]
        summary[t] = med
        print(f"  {t:<8} {med['msg_per_s']:>7} msg/s  cpu {med['cpu_ms_per_msg']:>6} ms/msg "
              f"(postfix {med['postfix_cpu_ms_per_msg']}, filter {med['filter_cpu_ms_per_msg']})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(sys.argv), "args": vars(args), "median": summary, "runs": runs},
                              indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
