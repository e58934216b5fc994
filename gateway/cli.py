"""`gateway run | check | quarantine | policy lint | ...`: the command line.

Every subcommand takes `--config FILE` as its own option, anywhere after the subcommand, with the
GATEWAY_CONFIG environment variable as the fallback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from gateway import config as config_module
from gateway import logs
from gateway.config import ConfigError, Settings
from gateway.model import Direction, Envelope
from gateway.policy import PolicyError
from gateway.quarantine import StoreError

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

    command("run", cmd_run, "run the gateway (SMTP and/or milter front end) until SIGTERM")
    command("reload", cmd_reload, "reload the policy of the running gateway: SIGHUP to the pid in [smtp] pidfile")

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
    # the same filters as the review queue and GET /api/held
    for name in ("direction", "category", "rule", "sender", "recipient", "subject"):
        qlist.add_argument(f"--{name}", default=None, help=f"only items whose {name} matches")
    qlist.add_argument("--since", metavar="DATE", help="received on or after (ISO date or date-time, UTC)")
    qlist.add_argument("--until", metavar="DATE", help="received before the end of this date")
    qlist.add_argument("--sort", default="received", help="received|size|sender|subject|rule|status|direction")
    qlist.add_argument("--order", default="desc", choices=["asc", "desc"])
    qlist.add_argument("--limit", type=int, default=1000)
    qlist.add_argument("--offset", type=int, default=0)
    qshow = command("show", cmd_quarantine_show, "show one held message", qsub)
    qshow.add_argument("id")
    qshow.add_argument("--json", action="store_true")
    qrelease = command("release", cmd_quarantine_release, "re-scan and release a held message to the next hop", qsub)
    qrelease.add_argument("id")
    qrelease.add_argument("--by", required=True, metavar="NAME",
                          help="the review account that releases: its role applies (recorded in the audit log)")
    qrelease.add_argument("--reason", required=True, metavar="TEXT")
    qrelease.add_argument("--confirm-virus", default="", metavar="NAME",
                          help="an admin releasing a virus names it: the signature name `quarantine show` lists")
    qrelease.add_argument("--rcpt", action="append", default=[], metavar="ADDR",
                          help="release to this recipient only (repeatable; default: all not yet released)")
    qdelete = command("delete", cmd_quarantine_delete, "delete a held message (it will not be delivered)", qsub)
    qdelete.add_argument("id")
    qdelete.add_argument("--by", required=True, metavar="NAME")
    qdelete.add_argument("--reason", required=True, metavar="TEXT")
    command("purge", cmd_quarantine_purge,
            "remove raw content older than [quarantine] retention_days (not on legal hold)", qsub)

    users = _common(sub.add_parser("users", help="review app accounts and API tokens"))
    usub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    uadd = command("add", cmd_users_add, "add a user (password from the prompt or the first line of stdin)", usub)
    uadd.add_argument("name")
    uadd.add_argument("--role", required=True, choices=["reviewer", "admin"])
    command("list", cmd_users_list, "list users and their tokens", usub)
    utoken = command("token", cmd_users_token, "print a new API token for a user", usub)
    utoken.add_argument("name")
    urevoke = command("revoke", cmd_users_revoke, "revoke an API token (by its id) or all of a user's", usub)
    urevoke.add_argument("token_id", nargs="?", help="the id shown by `users list` (gw_ID_...)")
    urevoke.add_argument("--user", metavar="NAME", help="revoke every token of this user")
    for name, func, text in (
            ("passwd", cmd_users_passwd, "set a user's password (from the prompt or the first line of stdin); "
                                         "ends the user's review sessions"),
            ("disable", cmd_users_disable, "disable a user: their sessions end and their API tokens are refused "
                                           "at once, until `users enable`"),
            ("enable", cmd_users_enable, "enable a disabled user again (their unrevoked API tokens work again)"),
            ("remove", cmd_users_remove, "remove a user and their API tokens (the audit log keeps their actions)")):
        command(name, func, text, usub).add_argument("name")

    command("review", cmd_review, "serve the review web app and API alone on [review] listen")

    policy = _common(sub.add_parser("policy", help="the policy"))
    psub = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    command("lint", cmd_policy_lint, "validate the policy files and detector options", psub)

    dkim = _common(sub.add_parser("dkim", help="DKIM keys"))
    dsub = dkim.add_subparsers(dest="dkim_command", required=True, metavar="ACTION")
    keygen = command("keygen", cmd_dkim_keygen,
                     "write DIR/SELECTOR.key and print the TXT record for SELECTOR._domainkey.DOMAIN", dsub)
    keygen.add_argument("domain", metavar="DOMAIN")
    keygen.add_argument("selector", metavar="SELECTOR")
    keygen.add_argument("--out", metavar="DIR", required=True, help="directory for SELECTOR.key")
    keygen.add_argument("--type", choices=["rsa", "ed25519"], default="rsa", help="key type (default rsa, 2048 bits)")
    evaluate = command("evaluate", cmd_evaluate, "run the policy over a labelled corpus (manifest.tsv): "
                       "precision, recall and F1 per category, false positives on ham, time per message")
    evaluate.add_argument("--direction", choices=[d.value for d in Direction] + ["both"], default="outbound",
                          help="both: outbound, then inbound, each reported")
    evaluate.add_argument("--json", action="store_true", help="one JSON object")
    evaluate.add_argument("--mistakes", action="store_true", help="also list the misclassified messages")
    evaluate.add_argument("dir", metavar="DIR")

    # the notifier's outbox (docs/notifications.md)
    notices = _common(sub.add_parser("notices", help="the notifier's outbox"))
    nsub = notices.add_subparsers(dest="notices_command", required=True, metavar="ACTION")
    nstatus = command("status", cmd_notices_status, "outbox counts and the notices that raise the alert "
                      "(exit 1 while the alert is on)", nsub)
    nstatus.add_argument("--json", action="store_true")
    command("retry", cmd_notices_retry, "put the notices that were given up back in the outbox, due now", nsub)
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
        code = args.func(args, settings)
        sys.stdout.flush()          # a reader that went away (`| head`) shows here, not at exit
        return code
    except BrokenPipeError:
        # The reader has what it wanted: stop quietly, and let the exit-time flush write to nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (PolicyError, ConfigError) as e:
        kind = "configuration" if isinstance(e, ConfigError) else "policy"     # e.g. a DKIM key file at start-up
        print(f"gateway: {kind} error: {e}", file=sys.stderr)
        return 2
    except StoreError as e:            # e.g. the quarantine's files belong to the service user
        print(f"gateway: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def describe_store(url: str) -> str:
    """The store's URL as an operator can compare it: SQLite paths absolute, a password masked."""
    from urllib.parse import urlsplit, urlunsplit

    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        return "sqlite://" + os.path.abspath("/" + path.lstrip("/") if path.startswith("/") else path)
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username}:***@{host}")
    return urlunsplit(parts)


def opened(args: argparse.Namespace, settings: Settings) -> dict[str, str]:
    """Which configuration and which store a command uses (the "opened" field of --json output)."""
    embedded = settings.source == config_module.Settings().source
    return {"config": "embedded defaults" if embedded else os.path.abspath(settings.source),
            "store": describe_store(settings.quarantine.url)}


def announce(args: argparse.Namespace, settings: Settings) -> None:
    """Say on stderr which configuration and store a command opened, so that an unset GATEWAY_CONFIG
    (the embedded defaults, another store) is seen at once."""
    where = opened(args, settings)
    if where["config"] == "embedded defaults":
        config = "config: embedded defaults (no --config, GATEWAY_CONFIG unset)"
    else:
        config = f"config {where['config']} ({'--config' if getattr(args, 'config', None) else 'GATEWAY_CONFIG'})"
    print(f"gateway: {config}; store {where['store']}", file=sys.stderr)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.app import main
    announce(args, settings)
    main(settings)          # uvloop where available; worker processes per [smtp] workers
    return 0


def cmd_reload(args: argparse.Namespace, settings: Settings) -> int:
    """SIGHUP to the main process named by [smtp] pidfile; it validates the policy and passes it on to its
    workers (a refusal is in the gateway's log, with file and line)."""
    import signal

    if not settings.smtp.pidfile:
        print("gateway: no [smtp] pidfile is set, so the running gateway cannot be found", file=sys.stderr)
        return 1
    try:
        pid = int(Path(settings.smtp.pidfile).read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as e:
        print(f"gateway: cannot signal the gateway named in {settings.smtp.pidfile}: {e}", file=sys.stderr)
        return 1
    print(f"gateway: SIGHUP sent to {pid} ({settings.smtp.pidfile}); the gateway's log says whether the policy "
          "was reloaded or refused", file=sys.stderr)
    return 0


def cmd_policy_lint(args: argparse.Namespace, settings: Settings) -> int:
    from gateway import policy
    from gateway.pipeline import Pipeline

    loaded = policy.load(settings)
    Pipeline(settings, loaded)          # builds every detector, validating its options
    rules = sum(len(r) for r in loaded.rules.values())
    print(f"policy ok: {', '.join(loaded.sources)}: {rules} rules, detectors: {', '.join(loaded.detectors)}")
    return 0


def cmd_dkim_keygen(args: argparse.Namespace, settings: Settings) -> int:
    """A new DKIM key: DIR/SELECTOR.key (PEM, mode 0600, never overwritten); the TXT value on stdout."""
    import os
    import re

    from gateway.senderauth.dkimsign import keygen, zone_strings

    label = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
    if not all(label.fullmatch(p) for p in args.selector.split(".")):
        print(f"gateway: {args.selector!r} is not a valid selector", file=sys.stderr)
        return 2
    if not all(label.fullmatch(p) for p in args.domain.rstrip(".").split(".")):
        print(f"gateway: {args.domain!r} is not a valid domain", file=sys.stderr)
        return 2
    path = Path(args.out) / f"{args.selector}.key"
    pem, record = keygen(args.type)
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"gateway: {path} exists; choose a new selector to rotate keys", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"gateway: {path}: {e.strerror}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    name = f"{args.selector}._domainkey.{args.domain.rstrip('.')}"
    print(f"gateway: wrote {path}; publish this TXT record at {name} (its value, then a zone-file line):",
          file=sys.stderr)
    print(record)
    print(f"{name}. IN TXT {zone_strings(record)}")
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

    from gateway.message.mime import parse

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


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from gateway import evaluate, policy
    from gateway.pipeline import Pipeline

    folder = Path(args.dir)
    if not (folder / "manifest.tsv").is_file() and not evaluate.read_layout(folder):
        print(f"gateway: {folder}: no manifest.tsv and no <label>/*.eml files", file=sys.stderr)
        return 2
    site = folder / "site.toml"      # a test set's own site knowledge (its newsletter sender, its public wording)
    if site.is_file() and not settings.policy.site:
        settings = dataclasses.replace(settings, policy=dataclasses.replace(settings.policy, site=str(site)))
    directions = (Direction.OUTBOUND, Direction.INBOUND) if args.direction == "both" else (Direction(args.direction),)

    async def run() -> int:
        pipeline = Pipeline(settings, policy.load(settings))
        try:
            result = await evaluate.evaluate(pipeline, folder, directions, args.mistakes)
        finally:
            await pipeline.close()
        summary = result.summary()
        summary["site"] = settings.policy.site
        if args.mistakes:
            summary["mistakes"] = result.mistakes
        if args.json:
            print(json.dumps(summary))
        else:
            print(evaluate.render(summary))
            if summary["site"]:
                print(f"\nsite file: {summary['site']}")
            for m in result.mistakes:
                print(f"  {m['path']}: label {m['label']}, predicted {','.join(m['predicted']) or '-'}, "
                      f"{m['verdict']} by {m['rule']} ({', '.join(m['kinds'])})")
        return 1 if result.errors else 0

    return asyncio.run(run())


def _with_store(args: argparse.Namespace, settings: Settings, body: Callable) -> int:
    from gateway.quarantine import open_store

    announce(args, settings)

    async def go() -> int:
        store = open_store(settings.quarantine.url)
        await store.open()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(go())


def cmd_quarantine_list(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.quarantine import Query

    try:
        query = Query.from_params(vars(args), limit=args.limit)
    except ValueError as e:
        print(f"gateway: {e}", file=sys.stderr)
        return 2

    async def body(store) -> int:
        for item in (await store.query(query)).items:
            if args.json:
                print(json.dumps({**item.summary(), "opened": opened(args, settings)}))
            else:
                print(f"{item.id}  {item.status:<9} {item.direction:<8} {item.rule:<28} "
                      f"{','.join(item.kinds)[:40]:<40} {item.mail_from} -> {', '.join(item.rcpt_tos)}")
        return 0
    return _with_store(args, settings, body)


def cmd_quarantine_show(args: argparse.Namespace, settings: Settings) -> int:
    async def body(store) -> int:
        item = await store.get(args.id, with_raw=False)
        if item is None:
            print(f"gateway: no held message {args.id!r}", file=sys.stderr)
            return 1
        data = {**item.summary(), "client_address": item.client_address, "helo": item.helo, "sha256": item.sha256,
                "findings": [f.as_dict() for f in item.findings],
                "rescan_findings": [f.as_dict() for f in item.rescan_findings], "virus_names": list(item.virus_names),
                "release_role": item.release_role, "notice": item.extra.get("notice", ""),
                "error": item.error, "released_to": list(item.released_to), "decided_by": item.decided_by}
        if args.json:
            print(json.dumps({**data, "opened": opened(args, settings)}))
        else:
            for key, value in data.items():
                print(f"{key}: {value}")
        return 0
    return _with_store(args, settings, body)


# --- release, delete, purge, users, review -----------------------------------------------------------

def _with_gateway(args: argparse.Namespace, settings: Settings, body: Callable) -> int:
    """Run `body(gateway)` with the store, pipeline and actions of a gateway that does not listen."""
    from gateway.app import Gateway
    from gateway.quarantine import StoreError
    from gateway.release import Refused

    announce(args, settings)

    async def go() -> int:
        gateway = await Gateway.create(settings)
        try:
            return await body(gateway)
        except Refused as e:
            print(f"gateway: {e}", file=sys.stderr)
            return 1
        except StoreError as e:
            print(f"gateway: {e}", file=sys.stderr)
            return 1
        finally:
            await gateway.close()

    return asyncio.run(go())


async def _cli_user(store, name: str):
    """`--by` names a review account, which acts with its role, as in the review app: a shell that can
    read the configuration is no admin role. An unknown or disabled account is refused. The audit log
    records the name with `(cli)`."""
    from gateway.quarantine import User
    from gateway.release import Refused

    known = await store.get_user(name)
    if known is None:
        raise Refused(f"no account {name!r}: --by must name a review account (gateway users list)", status=403)
    if known.disabled:
        raise Refused(f"the account {name!r} is disabled", status=403)
    return User(f"{name} (cli)", known.role, disabled=known.disabled)


def cmd_quarantine_release(args: argparse.Namespace, settings: Settings) -> int:
    async def body(gateway) -> int:
        from gateway.release import ConfirmVirus

        user = await _cli_user(gateway.store, args.by)
        try:
            outcome = await gateway.release_service().release(args.id, user, args.reason, args.rcpt or None,
                                                              confirm=args.confirm_virus)
        except ConfirmVirus:
            print("gateway: this message contains a virus: an admin releases it with --confirm-virus NAME, the "
                  f"signature name that `gateway quarantine show {args.id}` lists", file=sys.stderr)
            return 1
        if outcome.rescan and outcome.rescan.changed:
            print(f"re-scan: rule {outcome.rescan.rule}; new: {', '.join(outcome.rescan.added) or '-'}; "
                  f"gone: {', '.join(outcome.rescan.removed) or '-'}")
        print(f"{args.id}: {outcome.status}: {outcome.message}")
        return 0 if outcome.status in ("released", "partly-released", "approved") else 1
    return _with_gateway(args, settings, body)


def cmd_quarantine_delete(args: argparse.Namespace, settings: Settings) -> int:
    async def body(gateway) -> int:
        user = await _cli_user(gateway.store, args.by)
        outcome = await gateway.release_service().delete(args.id, user, args.reason)
        print(f"{args.id}: {outcome.message}")
        return 0
    return _with_gateway(args, settings, body)


def cmd_quarantine_purge(args: argparse.Namespace, settings: Settings) -> int:
    async def body(gateway) -> int:
        count = await gateway.release_service().purge("gateway purge (cli)")
        print(f"purged the content of {count} message(s) older than {settings.quarantine.retention_days} days")
        return 0
    return _with_gateway(args, settings, body)


def _read_password() -> str:
    if sys.stdin.isatty():
        import getpass
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Again: "):
            raise ValueError("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _new_password() -> str | None:
    """The password typed twice (or one line of stdin); None, with the reason on stderr, when they differ."""
    try:
        return _read_password()
    except ValueError as e:
        print(f"gateway: {e}", file=sys.stderr)
        return None


def cmd_users_add(args: argparse.Namespace, settings: Settings) -> int:
    from gateway import accounts

    password = _new_password()
    if password is None:
        return 1

    async def add(store) -> bool:
        await accounts.add_user(store, args.name, args.role, password)
        return True
    return _account_change(args, settings, "add", add, f"added {args.name} ({args.role})", "",
                           detail=f"{args.name} as {args.role}")


def cmd_users_list(args: argparse.Namespace, settings: Settings) -> int:
    async def body(store) -> int:
        tokens = await store.tokens()
        for user in await store.users():
            print(f"{user.name}  {user.role}{'  (disabled)' if user.disabled else ''}")
            for t in tokens:
                if t.user_name == user.name:
                    print(f"    token {t.id}{'  revoked' if t.revoked_at else ''}")
        return 0
    return _with_store(args, settings, body)


def cmd_users_token(args: argparse.Namespace, settings: Settings) -> int:
    from gateway import accounts
    from gateway.quarantine import StoreError

    async def body(store) -> int:
        try:
            token = await accounts.new_token(store, args.name)
        except StoreError as e:
            print(f"gateway: {e}", file=sys.stderr)
            return 1
        await store.audit("gateway users (cli)", "token-add", None, f"for {args.name}",
                          {"token_id": token.split("_")[1]})
        print(token)
        return 0
    return _with_store(args, settings, body)


def cmd_users_revoke(args: argparse.Namespace, settings: Settings) -> int:
    if not args.token_id and not args.user:
        print("gateway: name a token id or --user NAME", file=sys.stderr)
        return 2

    async def body(store) -> int:
        ids = [args.token_id.removeprefix("gw_").split("_")[0]] if args.token_id else \
            [t.id for t in await store.tokens(args.user) if t.revoked_at is None]
        revoked = [i for i in ids if await store.revoke_token(i)]
        for token_id in revoked:
            await store.audit("gateway users (cli)", "token-revoke", None, "", {"token_id": token_id})
        print(f"revoked {len(revoked)} token(s)")
        return 0 if revoked else 1
    return _with_store(args, settings, body)


def cmd_users_passwd(args: argparse.Namespace, settings: Settings) -> int:
    from gateway import accounts

    password = _new_password()
    if password is None:
        return 1

    async def change(store) -> bool:
        await accounts.change_password(store, args.name, password)
        return True
    return _account_change(args, settings, "passwd", change,
                           f"changed the password of {args.name}; their review sessions have ended", "")


def _account_change(args: argparse.Namespace, settings: Settings, action: str, change: Callable, done: str,
                    already: str, detail: str | None = None) -> int:
    """Run `change(store)` (True: it changed something), audit it as `user-ACTION` with `detail` (the
    account's name unless given), print the outcome."""
    from gateway.quarantine import StoreError

    async def body(store) -> int:
        try:
            changed = await change(store)
        except StoreError as e:
            print(f"gateway: {e}", file=sys.stderr)
            return 1
        if changed:
            await store.audit("gateway users (cli)", f"user-{action}", None, args.name if detail is None else detail)
        print(done if changed else already)
        return 0
    return _with_store(args, settings, body)


def cmd_users_disable(args: argparse.Namespace, settings: Settings) -> int:
    from gateway import accounts
    return _account_change(args, settings, "disable", lambda store: accounts.disable(store, args.name),
                           f"disabled {args.name}: their review sessions and API tokens no longer work",
                           f"{args.name} was already disabled")


def cmd_users_enable(args: argparse.Namespace, settings: Settings) -> int:
    from gateway import accounts
    return _account_change(args, settings, "enable", lambda store: accounts.enable(store, args.name),
                           f"enabled {args.name}: they can log in again", f"{args.name} was already enabled")


def cmd_users_remove(args: argparse.Namespace, settings: Settings) -> int:
    from gateway import accounts

    async def remove(store) -> bool:
        await accounts.remove(store, args.name)
        return True
    return _account_change(args, settings, "remove", remove,
                           f"removed {args.name} and their API tokens; their review sessions no longer work", "")


def cmd_review(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.app import review_alone
    announce(args, settings)
    asyncio.run(review_alone(settings))
    return 0



# --- the notifier's outbox -------------------------------------------------------------------------------

def cmd_notices_status(args: argparse.Namespace, settings: Settings) -> int:
    async def body(store) -> int:
        alert_after = settings.notify.alert_after
        stats = await store.outbox_stats(alert_after)
        failing = [n for n in await store.outbox(limit=1000)
                   if n.status == "failed" or (n.status in ("pending", "sending") and n.attempts >= alert_after)]
        if args.json:
            alerting = [{"id": n.id, "held_id": n.held_id, "recipient": n.recipient, "template": n.template,
                         "status": n.status, "attempts": n.attempts, "error": n.error} for n in failing]
            print(json.dumps({**stats, "alerting": alerting, "opened": opened(args, settings)}))
        else:
            print(f"pending {stats['pending']}, failing {stats['failing']}, failed {stats['failed']}")
            for n in failing:
                print(f"#{n.id} {n.template} to {n.recipient} ({n.held_id or '-'}): {n.status}, "
                      f"{n.attempts} attempt(s): {n.error}")
        return 1 if stats["alert"] else 0
    return _with_store(args, settings, body)


def cmd_notices_retry(args: argparse.Namespace, settings: Settings) -> int:
    async def body(store) -> int:
        count = await store.retry_failed_notices()
        await store.audit("gateway notices retry (cli)", "notices-retry", None, "", {"count": count})
        print(f"{count} failed notice(s) queued again")
        return 0
    return _with_store(args, settings, body)


if __name__ == "__main__":
    sys.exit(main())
