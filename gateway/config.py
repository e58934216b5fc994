"""gateway.toml -> frozen Settings: where things are (listen, next hop, store, scanner, keys).

Every key has a default, so the gateway runs with no file at all; an unknown section or key, or a
value of the wrong type, is an error that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import ipaddress
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _shipped_policy_dir() -> Path:
    """The shipped policy: inside the installed package (the wheel maps policies/ to gateway/policies),
    else policies/ at the top of a source checkout, where it is kept."""
    installed = Path(str(importlib.resources.files("gateway").joinpath("policies")))
    return installed if installed.is_dir() else PACKAGE_DIR.parent / "policies"


SHIPPED_POLICY_DIR = _shipped_policy_dir()


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class SmtpSettings:
    listen: str = "127.0.0.1:10025"
    hostname: str = ""                      # our name in the greeting; default: the host's FQDN
    max_message_size: int = 50 * 1024 * 1024
    max_connections: int = 200
    max_connections_per_client: int = 20
    command_timeout: float = 300.0          # idle time allowed between commands (RFC 5321: 5 minutes)
    data_timeout: float = 600.0             # the whole DATA phase
    tls_cert: str = ""
    tls_key: str = ""
    require_tls: bool = False               # refuse MAIL before STARTTLS
    enabled: bool = True                    # `gateway run` starts the SMTP front end
    # Clients whose XFORWARD (Postfix's content_filter: the original client's address and HELO) is believed.
    xforward_hosts: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    workers: int = 0                        # processes sharing the listening socket (0: one per CPU core)
    # Performance (docs/performance.md):
    data_reader: str = "chunked"            # "chunked" (fast) | "lines" (aiosmtpd's line-at-a-time reader)
    spool_threshold: int = 1024 * 1024      # a message being received goes to a temporary file beyond this
    spool_dir: str = ""                     # where (default: the system temporary directory)
    memory_budget: int = 64 * 1024 * 1024   # message bytes inspected at once per worker; others wait on disk
    drain_timeout: float = 30.0             # on SIGTERM, how long sessions in flight may take to finish
    pidfile: str = ""                       # the main process's pid, for `gateway reload` (SIGHUP)


@dataclass(frozen=True)
class RelaySettings:
    next_hop: str = "127.0.0.1:10026"
    starttls: str = "opportunistic"         # "opportunistic" | "required" | "off"
    tls_verify: bool = False                # verify the next hop's certificate (off for loopback hops)
    timeout: float = 60.0
    findings_header_outbound: bool = False  # without effect: outbound mail never carries findings (old files load)


@dataclass(frozen=True)
class DomainSettings:
    local: tuple[str, ...] = ("example.gov",)


@dataclass(frozen=True)
class NetworkSettings:
    internal: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class QuarantineSettings:
    url: str = "sqlite:///var/lib/gateway/quarantine.db"
    retention_days: int = 30
    stuck_release_minutes: int = 10         # a `releasing` item older than this goes back to held (crash)


@dataclass(frozen=True)
class ReviewSettings:
    """The ITSD review web app and its JSON API (docs/review.md)."""
    enabled: bool = True                    # `gateway run` also serves the review app
    listen: str = "127.0.0.1:8025"
    secret_key: str = ""                    # cookie signing key; empty: a random key kept in the store
    session_minutes: int = 480              # a session expires this long after login
    secure_cookies: bool = False            # set the Secure flag (on when served over HTTPS)
    login_attempts: int = 5                 # failed logins per account from one client (10x from all) ...
    login_window_seconds: int = 300         # ... within this window before that account's logins are refused
    trusted_header: str = ""                # e.g. "X-Remote-User" from an SSO reverse proxy; empty: off
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128")   # who may set the two headers
    # e.g. "X-Forwarded-For" or "X-Real-IP": the client's address as a trusted proxy passes it on; empty:
    # the TCP peer is the client (behind a proxy, then everyone shares the proxy's address)
    client_ip_header: str = ""
    page_size: int = 50


@dataclass(frozen=True)
class PolicySettings:
    dir: str = str(SHIPPED_POLICY_DIR)      # holds default.toml and the lexicons
    site: str = ""                          # optional site file that overrides the default


@dataclass(frozen=True)
class PipelineSettings:
    detector_timeout: float = 30.0
    max_depth: int = 20                     # MIME nesting
    max_parts: int = 500
    max_header_bytes: int = 256 * 1024
    max_decoded_bytes: int = 200 * 1024 * 1024
    # The whole inspection of one message (parse + detectors); past it: error.pipeline, answered 451.
    message_timeout: float = 120.0


@dataclass(frozen=True)
class AntivirusSettings:
    clamd: str = "unix:///run/clamav/clamd.ctl"   # or "tcp://127.0.0.1:3310"; "" = no scanner (files are held)
    timeout: float = 20.0                   # per scan
    stream_max_length: int = 60 * 1024 * 1024   # clamd's StreamMaxLength (deploy/clamav/clamd.conf)
    max_concurrency: int = 4                # scans in flight per process
    cache_seconds: float = 300.0            # results cached by content hash (0: no cache)
    cache_entries: int = 10000
    version_seconds: float = 60.0           # how long the X-Gateway-Scanned version string is reused
    archive_max_depth: int = 4              # archives inside archives
    archive_max_members: int = 1000         # per attachment, all levels
    archive_max_bytes: int = 100 * 1024 * 1024  # expanded per attachment, all levels
    archive_max_ratio: float = 200.0        # expanded / compressed, past 10 MB expanded (zip bombs)


@dataclass(frozen=True)
class TextSettings:
    """Limits of the shared text extraction for content detectors (gateway/message/text.py)."""

    max_attachment_bytes: int = 20 * 1024 * 1024   # larger attachments are not read: unscanned.text_limits
    max_body_chars: int = 2_000_000                  # one body part
    max_chars: int = 5_000_000                       # all text of one message
    max_seconds: float = 10.0                        # extraction time per message (checked between pages)
    max_pages: int = 2000                            # PDF pages / slides / sheets read per document
    max_unpacked_bytes: int = 100 * 1024 * 1024      # Office/OpenDocument zip members, uncompressed
    max_ratio: int = 200                             # zip compression ratio above which a member is a bomb


@dataclass(frozen=True)
class LogSettings:
    level: str = "INFO"
    json: bool = False


@dataclass(frozen=True)
class AuthSettings:
    authserv_id: str = ""                   # our RFC 8601 authserv-id; default: [smtp] hostname, else the FQDN
    resolver: str = "system"                # "system" (resolv.conf), a nameserver "192.0.2.53[:53]", or "none"
    dns_timeout: float = 5.0                # per DNS query
    max_signatures: int = 5                 # DKIM signatures verified per message; more are ignored


@dataclass(frozen=True)
class DkimKey:
    domain: str = ""                        # d=
    selector: str = ""                      # s=; the key is published at SELECTOR._domainkey.DOMAIN
    key_file: str = ""                      # PEM private key: RSA (2048 bits or more) or Ed25519


@dataclass(frozen=True)
class DkimSettings:
    sign: tuple[DkimKey, ...] = ()          # [[dkim.sign]] tables; several per domain = dual signing / rotation
    arc: DkimKey = field(default_factory=DkimKey)   # [dkim.arc]: the RSA key that ARC-seals tagged inbound mail


@dataclass(frozen=True)
class MilterSettings:
    """The milter front end (Postfix smtpd_milters / Sendmail INPUT_MAIL_FILTER); see docs/operations.md."""

    enabled: bool = False                   # `gateway run` starts the milter front end
    listen: str = "inet:127.0.0.1:8891"     # "inet:HOST:PORT", "unix:/PATH" or "/PATH"
    socket_mode: str = "0660"               # permissions of a unix socket (the MTA's group must reach it)
    quarantine_mode: str = "store"          # "store": our quarantine + DISCARD; "postfix-hold": SMFIR_QUARANTINE
    max_message_size: int = 50 * 1024 * 1024    # headers + body collected per message; larger answers 552
    max_connections: int = 200
    timeout: float = 600.0                  # idle time allowed between two packets from the MTA
    progress_interval: float = 10.0         # SMFIR_PROGRESS while scanning, so the MTA's timer does not expire


@dataclass(frozen=True)
class NotifySettings:
    """Notices about held mail and release requests (docs/notifications.md)."""

    enabled: bool = True                    # plan notices at hold time and run the notifier in `gateway run`
    from_: str = ""                         # `from` in TOML: From of notices; default postmaster@ first local domain
    envelope_sender: str = ""               # MAIL FROM of notices; empty: the null sender <> (no bounce loops)
    itsd: str = ""                          # ITSD reviewers' address; empty: ITSD gets no notices
    itsd_immediate: tuple[str, ...] = ("virus",)   # finding categories ITSD hears about at once
    itsd_digest_minutes: int = 60           # the rest in an ITSD digest this often; 0: no ITSD digest
    supervisors: str = ""                   # CSV file: address, supervisor address
    base_url: str = ""                      # the review app as staff reach it; default http://[review] listen
    link_days: int = 7                      # release-request links expire after this many days
    templates: str = ""                     # a site folder searched before the shipped policies/templates
    policy_title: str = "Department Internet and E-mail Acceptable Use Policy"
    language: str = ""                      # e.g. "fr": translate notices with TRANSLATIONS/fr/LC_MESSAGES/notices.mo
    translations: str = ""                  # gettext catalog folder; default: the `templates` folder's locale/
    digest: str = "immediate"               # everyone's default: immediate | hourly | daily
    digest_people: dict = field(default_factory=dict)   # address -> immediate | hourly | daily
    daily_hour: int = 7                     # daily digests go out at this hour (UTC)
    poll_seconds: float = 5.0               # how often the notifier looks for due notices
    retry_seconds: float = 60.0             # first retry after a failed send; doubles each time ...
    retry_max_seconds: float = 3600.0       # ... up to this
    max_attempts: int = 12                  # then the notice is given up (status failed)
    alert_after: int = 4                    # failed attempts before a notice raises the alert
    lease_seconds: float = 300.0            # a claimed notice not finished by then is claimed again (crash)
    batch: int = 200                        # notices claimed per round

    @property
    def digest_modes(self) -> dict[str, str]:
        return {str(k).lower(): str(v) for k, v in self.digest_people.items()}


@dataclass(frozen=True)
class OcrSettings:
    """Text in images and scanned PDF pages (gateway/message/ocr.py)."""
    enabled: bool = True
    max_pages: int = 20                     # images + PDF pages read per message; more: unscanned.ocr_limits
    max_seconds: float = 15.0               # per message; keep well under [pipeline] detector_timeout
    min_pixels: int = 30000                 # smaller images (icons, logos, tracking pixels) hold no text we read
    max_pixels: int = 50_000_000            # larger images are not decoded (decompression bombs)
    workers: int = 2                        # OCR jobs at once, gateway-wide (adult_content: its own pool of as many)
    languages: tuple[str, ...] = ("eng",)   # tesseract language packs (tesseract-ocr-LANG)
    pdf_dpi: int = 150                      # PDF pages are rendered at this resolution for an A4/Letter page
    pdf_image_pages: bool = True            # also read PDF pages with typed text and a scan-sized picture,
                                            # with what is left of max_pages / max_seconds (never reported)
    min_confidence: int = 60                # words tesseract is less sure of (0-100) are dropped


@dataclass(frozen=True)
class MetricsSettings:
    listen: str = "127.0.0.1:9025"          # /metrics and /healthz (gateway/observability.py); "" = off
    healthz_timeout: float = 5.0            # per check: store, next hop, detectors with a health() method


@dataclass(frozen=True)
class Settings:
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    domains: DomainSettings = field(default_factory=DomainSettings)
    networks: NetworkSettings = field(default_factory=NetworkSettings)
    quarantine: QuarantineSettings = field(default_factory=QuarantineSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    log: LogSettings = field(default_factory=LogSettings)
    review: ReviewSettings = field(default_factory=ReviewSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)     # docs/notifications.md
    auth: AuthSettings = field(default_factory=AuthSettings)
    dkim: DkimSettings = field(default_factory=DkimSettings)
    milter: MilterSettings = field(default_factory=MilterSettings)
    antivirus: AntivirusSettings = field(default_factory=AntivirusSettings)
    text: TextSettings = field(default_factory=TextSettings)
    ocr: OcrSettings = field(default_factory=OcrSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    source: str = "<embedded defaults>"

    def is_local(self, address: str) -> bool:
        """Is this address in one of the department's domains (subdomains included)?"""
        domain = address.rpartition("@")[2].strip().rstrip(".").lower()
        return any(domain == d or domain.endswith("." + d) for d in self.local_domains)

    @property
    def local_domains(self) -> tuple[str, ...]:
        return tuple(d.lower().rstrip(".") for d in self.domains.local)

    def is_internal_client(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.internal_networks)

    @property
    def internal_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.networks.internal)


def config_path(explicit: str | None) -> str | None:
    """--config wins, then $GATEWAY_CONFIG, else none (the embedded defaults)."""
    return explicit or os.environ.get("GATEWAY_CONFIG") or None


def load(path: str | None = None) -> Settings:
    """Read one TOML file into Settings; with no path, the embedded defaults."""
    path = config_path(path)
    if path is None:
        return Settings()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    return from_dict(data, source=path)


def from_dict(data: dict, source: str = "<dict>") -> Settings:
    sections = {f.name: f for f in dataclasses.fields(Settings) if f.name != "source"}
    hints = typing.get_type_hints(Settings)
    values: dict[str, object] = {}
    for name, table in data.items():
        if name not in sections:
            raise ConfigError(f"{source}: unknown section [{name}] (known: {', '.join(sections)})")
        cls = hints[name]
        values[name] = _section(cls, table, f"{source}: [{name}]")
    policy = values.get("policy")
    if isinstance(policy, PolicySettings) and not policy.dir:       # empty: the shipped policies/ folder
        values["policy"] = dataclasses.replace(policy, dir=str(SHIPPED_POLICY_DIR))
    settings = Settings(**values, source=source)
    _validate(settings)
    return settings


def _section(cls: type, table: object, where: str) -> object:
    if cls is tuple or typing.get_origin(cls) is tuple:       # array of tables, e.g. [[dkim.sign]]
        if not isinstance(table, list):
            raise ConfigError(f"{where}: expected an array of tables")
        return tuple(table)
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in table.items():
        if key not in fields and f"{key}_" in fields:      # a TOML key that is a Python keyword ("from")
            key = f"{key}_"
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(fields)})")
        kwargs[key] = _coerce(hints[key], value, f"{where} {key}")
    return cls(**kwargs)


def _coerce(hint: object, value: object, where: str) -> object:
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        item = typing.get_args(hint)[0]
        return tuple(_coerce(item, v, where) for v in value)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(option, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: unexpected value {value!r}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is dict and isinstance(value, dict):
        return value
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):     # a table inside a section
        return _section(hint, value, where)
    if hint in (str, int, bool, float) and type(value) is hint:
        return value
    if hint is type(None) and value is None:
        return value
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{where}: expected {name}, got {type(value).__name__} {value!r}")


def _validate(settings: Settings) -> None:
    for network in settings.networks.internal:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"{settings.source}: [networks] internal: {network!r} is not a CIDR") from None
    addresses = (("[smtp] listen", settings.smtp.listen), ("[relay] next_hop", settings.relay.next_hop),
                 ("[review] listen", settings.review.listen))
    for key, value in addresses:
        try:
            split_host_port(value)
        except ValueError as e:
            raise ConfigError(f"{settings.source}: {key}: {e}") from None
    _validate_review(settings)
    if settings.relay.starttls not in ("opportunistic", "required", "off"):
        raise ConfigError(f"{settings.source}: [relay] starttls: must be opportunistic, required or off")
    if settings.metrics.listen:
        try:
            split_host_port(settings.metrics.listen)
        except ValueError as e:
            raise ConfigError(f"{settings.source}: [metrics] listen: {e}") from None
    if settings.smtp.data_reader not in ("chunked", "lines"):
        raise ConfigError(f"{settings.source}: [smtp] data_reader: must be chunked or lines")
    if settings.smtp.workers < 0:
        raise ConfigError(f"{settings.source}: [smtp] workers: must be 0 (one per core) or more")
    if bool(settings.smtp.tls_cert) != bool(settings.smtp.tls_key):
        raise ConfigError(f"{settings.source}: [smtp] tls_cert and tls_key go together")
    if settings.antivirus.clamd:
        from gateway.scanners.clamd import parse_address
        try:
            parse_address(settings.antivirus.clamd)
        except ValueError as e:
            raise ConfigError(f"{settings.source}: [antivirus] clamd: {e}") from None
    if settings.ocr.workers < 1 or settings.ocr.max_pages < 0 or settings.ocr.max_seconds <= 0:
        raise ConfigError(f"{settings.source}: [ocr] workers must be >= 1, max_pages >= 0, max_seconds > 0")
    _validate_auth(settings)
    _validate_milter(settings)
    _validate_notify(settings)


HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def _validate_review(settings: Settings) -> None:
    review = settings.review
    for network in review.trusted_proxies:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"{settings.source}: [review] trusted_proxies: {network!r} is not a CIDR") from None
    for key in ("client_ip_header", "trusted_header"):
        value = getattr(review, key)
        if value and not HEADER_NAME.match(value):
            raise ConfigError(f"{settings.source}: [review] {key}: {value!r} is not a header name")
    if review.login_attempts < 1 or review.login_window_seconds < 1:
        raise ConfigError(f"{settings.source}: [review] login_attempts and login_window_seconds must be positive")


def _validate_auth(settings: Settings) -> None:
    """[auth] and [dkim]: the shape only; key files are read (and named on error) at start-up."""
    from gateway.senderauth.dns import check_resolver_spec

    try:
        check_resolver_spec(settings.auth.resolver)
    except ValueError:
        raise ConfigError(f"{settings.source}: [auth] resolver: {settings.auth.resolver!r} is neither "
                          f"\"system\", \"none\" nor a nameserver address") from None
    for n, key in enumerate(settings.dkim.sign, 1):
        missing = [k for k in ("domain", "selector", "key_file") if not getattr(key, k)]
        if missing:
            raise ConfigError(f"{settings.source}: [[dkim.sign]] #{n}: {', '.join(missing)} missing")
    arc = settings.dkim.arc
    if any((arc.domain, arc.selector, arc.key_file)) and not all((arc.domain, arc.selector, arc.key_file)):
        raise ConfigError(f"{settings.source}: [dkim.arc]: domain, selector and key_file go together")


def _validate_milter(settings: Settings) -> None:
    for network in settings.smtp.xforward_hosts:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"{settings.source}: [smtp] xforward_hosts: {network!r} is not a CIDR") from None
    milter = settings.milter
    try:
        milter_address(milter.listen)
    except ValueError as e:
        raise ConfigError(f"{settings.source}: [milter] listen: {e}") from None
    if milter.quarantine_mode not in ("store", "postfix-hold"):
        raise ConfigError(f"{settings.source}: [milter] quarantine_mode: must be store or postfix-hold")
    try:
        int(milter.socket_mode, 8)
    except ValueError:
        raise ConfigError(f"{settings.source}: [milter] socket_mode: {milter.socket_mode!r} is not octal") from None
    if not (settings.smtp.enabled or milter.enabled):
        raise ConfigError(f"{settings.source}: [smtp] enabled and [milter] enabled are both false: nothing to run")


def _validate_notify(settings: Settings) -> None:
    notify = settings.notify
    where = f"{settings.source}: [notify]"
    for key, value in (("from", notify.from_), ("itsd", notify.itsd), ("envelope_sender", notify.envelope_sender)):
        if value and ("@" not in value or any(c in value for c in "\r\n<>, ")):
            raise ConfigError(f"{where} {key}: {value!r} is not a mail address")
    modes = ("immediate", "hourly", "daily")
    if notify.digest not in modes:
        raise ConfigError(f"{where} digest: must be immediate, hourly or daily")
    for address, mode in notify.digest_people.items():
        if mode not in modes:
            raise ConfigError(f"{where} digest_people: {address}: must be immediate, hourly or daily")
    if not 0 <= notify.daily_hour <= 23:
        raise ConfigError(f"{where} daily_hour: must be 0-23")
    if notify.link_days < 1 or notify.max_attempts < 1 or notify.poll_seconds <= 0 or notify.retry_seconds <= 0:
        raise ConfigError(f"{where}: link_days, max_attempts, poll_seconds and retry_seconds must be positive")
    if notify.base_url and not notify.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where} base_url: must start with http:// or https://")


def notice_from(settings: Settings) -> str:
    """The From address of notices: `[notify] from`, else postmaster@ the first local domain."""
    if settings.notify.from_:
        return settings.notify.from_
    return f"postmaster@{settings.local_domains[0] if settings.local_domains else 'localhost'}"


def milter_address(value: str) -> tuple[str, int] | str:
    """'inet:127.0.0.1:8891', 'inet:8891@127.0.0.1' or '127.0.0.1:8891' -> (host, port);
    'unix:/run/x.sock' or '/run/x.sock' -> the path."""
    if value.startswith(("unix:", "local:")):
        path = value.split(":", 1)[1]
        if not path.startswith("/"):
            raise ValueError(f"{value!r}: the socket path must be absolute")
        return path
    if value.startswith("/"):
        return value
    address = value.removeprefix("inet:").removeprefix("inet6:")
    if "@" in address:                      # Sendmail's spelling: inet:PORT@HOST
        port, _, host = address.partition("@")
        address = f"[{host}]:{port}"
    return split_host_port(address)


def split_host_port(value: str) -> tuple[str, int]:
    """'127.0.0.1:25' or '[::1]:25' -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{value!r} is not host:port")
    return host.strip("[]"), int(port)
