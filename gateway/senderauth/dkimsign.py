"""Outbound DKIM signing and ARC sealing, as finishers that run after every modification.

`[[dkim.sign]]` tables name a domain, a selector and a PEM key file (RSA-2048 or Ed25519, RFC 8463).
Mail whose From domain is local (outbound or internal) is signed with every key of the most
specific configured domain that is the From domain or a parent of it (relaxed DMARC alignment):
two entries for one domain sign twice (dual RSA + Ed25519, or an old and a new selector while a
key is rotated). Inbound mail that we modify (the verdict tags it) is ARC-sealed with `[dkim.arc]`
over our Authentication-Results header, so downstream verifiers can still trust the original
results. Released quarantine mail passes through the same finishers (Actions.relayable).

Keys are read and checked at start-up (`load_keys`), with an error that names the table and file.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
from dataclasses import dataclass
from pathlib import Path

from gateway import headers
from gateway.actions import Finisher
from gateway.config import ConfigError, DkimKey, Settings
from gateway.model import Action, Direction, Mail, Verdict
from gateway.senderauth.authresults import authserv_id

log = logging.getLogger("gateway.dkim")
MIN_RSA_BITS = 2048
# Headers we sign; each listed twice where it exists, so nobody can add a second one unnoticed.
SIGN_HEADERS = ("from", "to", "cc", "subject", "date", "message-id", "reply-to", "in-reply-to", "references",
                "mime-version", "content-type", "content-transfer-encoding", "content-disposition")


@dataclass(frozen=True)
class SigningKey:
    domain: str
    selector: str
    algorithm: str          # "rsa-sha256" | "ed25519-sha256"
    private: bytes          # what dkimpy takes: PKCS#1 PEM (RSA) or the base64 32-byte seed (Ed25519)
    source: str             # the key file

    def sign(self, message: bytes) -> bytes:
        """The DKIM-Signature field (with CRLF) for `message`."""
        import dkim

        signer = dkim.DKIM(message, signature_algorithm=self.algorithm.encode(), linesep=b"\r\n")
        present = {name.lower() for name, _ in signer.headers}
        include = [h.encode() for h in SIGN_HEADERS if h.encode() in present or h == "from"]
        include += [h for h in include if h in present]          # over-sign what is there
        return signer.sign(self.selector.encode(), self.domain.encode(), self.private,
                           canonicalize=(b"relaxed", b"relaxed"), include_headers=include)


def read_key(path: str) -> tuple[str, bytes]:
    """A PEM private key file -> (algorithm, what dkimpy signs with). ValueError says what is wrong."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    data = Path(path).read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"not an unencrypted PEM private key ({e})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {key.key_size} bits; DKIM keys need at least {MIN_RSA_BITS}")
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        return "rsa-sha256", pem
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
        return "ed25519-sha256", base64.b64encode(raw)
    raise ValueError(f"unsupported key type {type(key).__name__} (RSA or Ed25519)")


def _load(entry: DkimKey, where: str) -> SigningKey:
    try:
        algorithm, private = read_key(entry.key_file)
    except OSError as e:
        raise ConfigError(f"{where} (domain {entry.domain}, selector {entry.selector}): "
                          f"cannot read key_file {entry.key_file}: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError(f"{where} (domain {entry.domain}, selector {entry.selector}): "
                          f"key_file {entry.key_file}: {e}") from None
    return SigningKey(entry.domain.lower().rstrip("."), entry.selector, algorithm, private, entry.key_file)


def load_keys(settings: Settings) -> tuple[list[SigningKey], SigningKey | None]:
    """The signing keys and the ARC key, read and checked; ConfigError names the key that is wrong."""
    where = settings.source
    keys = [_load(k, f"{where}: [[dkim.sign]] #{n}") for n, k in enumerate(settings.dkim.sign, 1)]
    arc = None
    if settings.dkim.arc.key_file:
        arc = _load(settings.dkim.arc, f"{where}: [dkim.arc]")
        if arc.algorithm != "rsa-sha256":
            raise ConfigError(f"{where}: [dkim.arc]: key_file {arc.source}: ARC seals need an RSA key")
    return keys, arc


def from_domain(message: bytes) -> str:
    """The domain of the (first) From address in the message's header."""
    fields, _, _ = headers.split(message)
    for field in fields:
        if headers.field_name(field) == "from":
            value = field.partition(b":")[2].decode("utf-8", "replace")
            addresses = email.utils.getaddresses([value])
            if addresses and "@" in addresses[0][1]:
                return addresses[0][1].rpartition("@")[2].strip().rstrip(".").lower()
            return ""
    return ""


def keys_for(keys: list[SigningKey], domain: str) -> list[SigningKey]:
    """Every key of the most specific configured domain that is `domain` or one of its parents."""
    matching = [k for k in keys if domain == k.domain or domain.endswith("." + k.domain)]
    if not matching:
        return []
    best = max(len(k.domain) for k in matching)
    return [k for k in matching if len(k.domain) == best]


def signer(settings: Settings, keys: list[SigningKey]) -> Finisher:
    """The finisher that DKIM-signs local senders' outbound and internal mail, last of all."""
    import dkim

    async def finish(mail: Mail, verdict: Verdict, message: bytes) -> bytes:
        if mail.direction not in (Direction.OUTBOUND, Direction.INTERNAL):
            return message
        domain = from_domain(message)
        chosen = keys_for(keys, domain) if domain and settings.is_local("@" + domain) else []
        if not chosen:
            return message

        def sign_all() -> bytes:
            try:
                return b"".join(k.sign(message) for k in chosen) + message
            except dkim.MessageFormatError:     # a header block no DKIM verifier could read either
                log.warning("DKIM signing skipped for %s: header block not readable for DKIM", mail.id)
                return message

        return await asyncio.to_thread(sign_all)

    return finish


def sealer(settings: Settings, key: SigningKey) -> Finisher:
    """The finisher that ARC-seals inbound mail we changed (tagged), over our Authentication-Results."""
    import dkim

    srv_id = authserv_id(settings).encode()

    async def finish(mail: Mail, verdict: Verdict, message: bytes) -> bytes:
        if mail.direction is not Direction.INBOUND or verdict.action is not Action.TAG:
            return message

        def seal() -> bytes:
            try:
                fields = dkim.arc_sign(message, key.selector.encode(), key.domain.encode(), key.private, srv_id,
                                       linesep=b"\r\n")
            except Exception:      # hostile ARC headers (e.g. instance limits): relay unsealed, never fail the mail
                log.warning("ARC sealing failed for %s; relayed without a seal", mail.id, exc_info=True)
                return message
            return b"".join(fields) + message

        return await asyncio.to_thread(seal)

    return finish


def finishers(settings: Settings) -> list[Finisher]:
    """What Gateway.create gives every Actions: ARC sealing, then DKIM signing (signing comes last)."""
    keys, arc = load_keys(settings)
    out: list[Finisher] = []
    if arc:
        out.append(sealer(settings, arc))
    if keys:
        out.append(signer(settings, keys))
    return out


def zone_strings(value: str, size: int = 255) -> str:
    """A TXT value as a zone file's string list, `( "..." "..." )`: a DNS character-string holds at
    most 255 octets, and an RSA-2048 record is longer (RFC 6376 3.6.2.2: the strings are joined)."""
    return "( " + "".join(f'"{value[i:i + size]}" ' for i in range(0, len(value), size)) + ")"


def keygen(kind: str = "rsa", bits: int = 2048) -> tuple[bytes, str]:
    """A new key -> (PKCS#8 PEM private key, the DNS TXT record value to publish)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    elif kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        raise ValueError(f"unknown key type {kind!r} (rsa or ed25519)")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem, f"v=DKIM1; k={kind}; p={base64.b64encode(public).decode('ascii')}"
