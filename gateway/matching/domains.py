"""Domain lists (social networks, personal web-mail services): read from a policy file, matched with
their subdomains; shared by the detectors that name where mail comes from or goes to."""

from __future__ import annotations

from pathlib import Path


def read_domains(path: Path) -> frozenset[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ValueError(f"{path}: cannot read domain list: {e.strerror}") from None
    return frozenset(line.split("#", 1)[0].strip().lower().rstrip(".") for line in lines
                     if line.split("#", 1)[0].strip())


def domain_in(address: str, domains: frozenset[str]) -> str:
    """The listed domain that address belongs to (subdomains included), or ''."""
    domain = address.rpartition("@")[2].strip().strip(">").rstrip(".").lower()
    parts = domain.split(".")
    for i in range(len(parts) - 1):
        candidate = ".".join(parts[i:])
        if candidate in domains:
            return candidate
    return ""
