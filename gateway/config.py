"""gateway.toml -> frozen Settings: where things are (listen, next hop, store, scanner, keys).

Every key has a default, so the gateway runs with no file at all; an unknown section or key, or a
value of the wrong type, is an error that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_POLICY_DIR = PACKAGE_DIR.parent / "policies"


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
    workers: int = 0                        # processes sharing the listening socket (0: one per CPU core)
    # Performance (docs/performance.md):
    data_reader: str = "chunked"            # "chunked" (fast) | "lines" (aiosmtpd's line-at-a-time reader)
    spool_threshold: int = 1024 * 1024      # a message being received goes to a temporary file beyond this
    spool_dir: str = ""                     # where (default: the system temporary directory)
    memory_budget: int = 64 * 1024 * 1024   # message bytes inspected at once per worker; others wait on disk
    drain_timeout: float = 30.0             # on SIGTERM, how long sessions in flight may take to finish


@dataclass(frozen=True)
class RelaySettings:
    next_hop: str = "127.0.0.1:10026"
    starttls: str = "opportunistic"         # "opportunistic" | "required" | "off"
    tls_verify: bool = False                # verify the next hop's certificate (off for loopback hops)
    timeout: float = 60.0
    findings_header_outbound: bool = False  # X-Gateway-Findings on outbound mail (off: findings stay inside)


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


@dataclass(frozen=True)
class LogSettings:
    level: str = "INFO"
    json: bool = False


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
    addresses = (("[smtp] listen", settings.smtp.listen), ("[relay] next_hop", settings.relay.next_hop))
    for key, value in addresses:
        try:
            split_host_port(value)
        except ValueError as e:
            raise ConfigError(f"{settings.source}: {key}: {e}") from None
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


def split_host_port(value: str) -> tuple[str, int]:
    """'127.0.0.1:25' or '[::1]:25' -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{value!r} is not host:port")
    return host.strip("[]"), int(port)
