"""`gateway run | check | quarantine | policy lint | ...`: the command line.

Every subcommand takes `--config FILE` as its own option, anywhere after the subcommand, with the
GATEWAY_CONFIG environment variable as the fallback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from gateway import config as config_module
from gateway import logs
from gateway.config import ConfigError, Settings
from gateway.model import Direction, Envelope
from gateway.policy import PolicyError

Command = Callable[[argparse.Namespace, Settings], int]


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="gateway.toml (default: $GATEWAY_CONFIG, else the embedded defaults)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Mail policy gateway")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Command, help: str, parent=sub) -> argparse.ArgumentParser:
        p = _common(parent.add_parser(name, help=help, description=help))
        p.set_defaults(func=func)
        return p

    command("run", cmd_run, "run the gateway (SMTP front end) until SIGTERM")

    check = command("check", cmd_check, "run the full pipeline and policy offline on .eml files")
    check.add_argument("--direction", choices=[d.value for d in Direction])
    check.add_argument("--mail-from", metavar="ADDR")
    check.add_argument("--rcpt", metavar="ADDR", action="append", default=[])
    check.add_argument("--json", action="store_true", help="one JSON object per line")
    check.add_argument("paths", nargs="+", metavar="PATH")

    quarantine = _common(sub.add_parser("quarantine", help="held messages"))
    qsub = quarantine.add_subparsers(dest="quarantine_command", required=True, metavar="ACTION")
    qlist = command("list", cmd_quarantine_list, "list held messages", qsub)
    qlist.add_argument("--json", action="store_true", help="JSON Lines")
    qlist.add_argument("--status", default=None, help="only items with this status")
    qshow = command("show", cmd_quarantine_show, "show one held message", qsub)
    qshow.add_argument("id")
    qshow.add_argument("--json", action="store_true")

    policy = _common(sub.add_parser("policy", help="the policy"))
    psub = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    command("lint", cmd_policy_lint, "validate the policy files and detector options", psub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = config_module.load(getattr(args, "config", None))
    except ConfigError as e:
        print(f"gateway: configuration error: {e}", file=sys.stderr)
        return 2
    logs.setup(settings.log)
    try:
        return args.func(args, settings)
    except (PolicyError, ConfigError) as e:
        print(f"gateway: policy error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.app import main
    main(settings)          # uvloop where available; worker processes per [smtp] workers
    return 0


def cmd_policy_lint(args: argparse.Namespace, settings: Settings) -> int:
    from gateway import policy
    from gateway.pipeline import Pipeline

    loaded = policy.load(settings)
    Pipeline(settings, loaded)          # builds every detector, validating its options
    rules = sum(len(r) for r in loaded.rules.values())
    print(f"policy ok: {', '.join(loaded.sources)}: {rules} rules, detectors: {', '.join(loaded.detectors)}")
    return 0


def eml_files(paths: list[str]) -> Iterator[Path]:
    for name in paths:
        path = Path(name)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".eml", ".msg", ""))
        else:
            yield path


def offline_envelope(settings: Settings, raw: bytes, mail_from: str | None, rcpts: list[str]) -> Envelope:
    """The envelope for an offline check: the options given, else the message's From/To/Cc.

    The client counts as internal when the sender is local, so that outbound mail is possible."""
    from email.utils import getaddresses

    from gateway.mime import parse

    if mail_from is None or not rcpts:
        msg = parse(raw).message
        if mail_from is None:
            found = getaddresses([str(v) for v in msg.get_all("From", [])])
            mail_from = found[0][1] if found else ""
        if not rcpts:
            rcpts = [a for _, a in getaddresses([str(v) for h in ("To", "Cc") for v in msg.get_all(h, [])]) if a]
    client = "127.0.0.1" if settings.is_local(mail_from) else "192.0.2.1"
    return Envelope(mail_from=mail_from, rcpt_tos=tuple(rcpts) or ("postmaster@" + settings.local_domains[0],),
                    client_address=client)


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from gateway import policy
    from gateway.pipeline import Pipeline

    async def check_all() -> int:
        pipeline = Pipeline(settings, policy.load(settings))
        direction = Direction(args.direction) if args.direction else None
        try:
            for path in eml_files(args.paths):
                try:
                    raw = path.read_bytes()
                except OSError as e:
                    print(f"gateway: {path}: {e.strerror}", file=sys.stderr)
                    return 1
                envelope = offline_envelope(settings, raw, args.mail_from, list(args.rcpt))
                inspection = await pipeline.inspect(envelope, raw, direction=direction)
                verdict = inspection.verdict
                if args.json:
                    print(json.dumps({"path": str(path), "verdict": verdict.action.value, "rule": verdict.rule,
                                      "direction": inspection.mail.direction.value,
                                      "findings": [f.as_dict() for f in verdict.findings]}))
                    continue
                print(f"{path}: {verdict.action.value} ({inspection.mail.direction.value}, rule {verdict.rule})")
                for f in verdict.findings:
                    extras = "".join(f"; {x}" for x in (f.part, None if f.score is None else f"score {f.score:g}") if x)
                    print(f"  - {f.kind} [{f.detector}] {f.detail}{extras}")
                    for e in f.evidence:
                        print(f"      evidence: {e}")
                for m in verdict.monitored:
                    print(f"  (monitor) {m}")
            return 0
        finally:
            await pipeline.close()

    return asyncio.run(check_all())


def _with_store(settings: Settings, body: Callable) -> int:
    from gateway.quarantine import open_store

    async def go() -> int:
        store = open_store(settings.quarantine.url)
        await store.open()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(go())


def cmd_quarantine_list(args: argparse.Namespace, settings: Settings) -> int:
    async def body(store) -> int:
        for item in await store.list(status=args.status):
            if args.json:
                print(json.dumps(item.summary()))
            else:
                print(f"{item.id}  {item.status:<9} {item.direction:<8} {item.rule:<28} "
                      f"{','.join(item.kinds)[:40]:<40} {item.mail_from} -> {', '.join(item.rcpt_tos)}")
        return 0
    return _with_store(settings, body)


def cmd_quarantine_show(args: argparse.Namespace, settings: Settings) -> int:
    async def body(store) -> int:
        item = await store.get(args.id, with_raw=False)
        if item is None:
            print(f"gateway: no held message {args.id!r}", file=sys.stderr)
            return 1
        data = {**item.summary(), "client_address": item.client_address, "helo": item.helo, "sha256": item.sha256,
                "findings": [f.as_dict() for f in item.findings]}
        if args.json:
            print(json.dumps(data))
        else:
            for key, value in data.items():
                print(f"{key}: {value}")
        return 0
    return _with_store(settings, body)


if __name__ == "__main__":
    sys.exit(main())
