"""encrypted: S/MIME enveloped and OpenPGP encrypted mail, which neither the virus scan nor any content
check can read, gets a finding of its own instead of passing as if it had been read.

Policy, Provisions for Security: "Personal and confidential information in particular must not be
posted on the Internet, and transmission of such information via the Internet is discouraged unless
reasonable security methods are used." Encryption is such a method, so the shipped rules deliver
outbound encrypted mail and record it; inbound, it could not be checked for viruses, so it follows the
unscanned rule unless its sender is listed in `trusted_senders`.

Forms: S/MIME `application/(x-)pkcs7-mime` with smime-type enveloped-data or authEnveloped-data, or
any pkcs7-mime or `.p7m` part whose DER content is EnvelopedData; PGP/MIME (`application/pgp-encrypted`
in a multipart/encrypted); an armored "-----BEGIN PGP MESSAGE-----" block at the start of a line whose
packets begin with a session key or encrypted data (an armored message that is only signed is not
encrypted, nor is a block that does not decode: that is text, read as such); a binary `.pgp`/`.gpg`
file that starts with such a packet. Signed-only mail (multipart/signed, smime-type=signed-data,
clear-signed PGP) is not encrypted and is inspected as any other.

Kinds: `encrypted.smime`, `encrypted.pgp` (the evidence names the recipients where the structure
shows them: OpenPGP key ids, S/MIME certificate issuer and serial); `encrypted.trusted_sender` instead
of those for inbound mail whose envelope sender and From: are both in `trusted_senders`;
`encrypted.unlisted_recipient` in addition for outbound encrypted mail to a recipient outside
`partner_domains` when that list is set.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from email.utils import getaddresses
from typing import Any, ClassVar

from gateway.config import Settings
from gateway.detectors.base import OptionError, options_with_defaults
from gateway.message.mime import Part
from gateway.model import Direction, Finding, Mail

DEFAULTS: dict[str, Any] = {"partner_domains": [], "trusted_senders": []}

_PKCS7 = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_ENVELOPED_TYPES = ("enveloped-data", "authenveloped-data")
_SMIME_TYPE = re.compile(r"(?i)\bsmime-type\s*=\s*\"?([a-z-]+)")
# DER OIDs (tag, length, value) of the CMS content types
_OID_ENVELOPED = bytes.fromhex("06092a864886f70d010703")
_OID_AUTH_ENVELOPED = bytes.fromhex("060b2a864886f70d0109100117")
_OID_CN = bytes.fromhex("0603550403")
_BEGIN = re.compile(rb"(?m)^-----BEGIN PGP MESSAGE-----[ \t]*\r?$")
_END = b"-----END PGP MESSAGE-----"
MAX_BLOCKS = 20           # armored blocks looked at per part
_PGP_FILE = (".pgp", ".gpg")
# OpenPGP packet tags: 1 public-key session key, 3 symmetric session key, 9 symmetrically encrypted,
# 18 encrypted and integrity protected, 20 AEAD encrypted
_ENCRYPTED_PACKETS = frozenset({1, 3, 9, 18, 20})
MAX_RECIPIENTS = 10


class Encrypted:
    name: ClassVar[str] = "encrypted"
    kinds: ClassVar[frozenset[str]] = frozenset({"encrypted.smime", "encrypted.pgp", "encrypted.trusted_sender",
                                                 "encrypted.unlisted_recipient"})

    def __init__(self, settings: Settings, options: Mapping[str, Any]) -> None:
        opts = options_with_defaults(self.name, options, DEFAULTS)
        self.settings = settings
        self.partners = _names(opts["partner_domains"], "partner_domains")
        self.trusted = _names(opts["trusted_senders"], "trusted_senders")

    async def check(self, mail: Mail) -> list[Finding]:
        forms: dict[str, tuple[list[str], list[str]]] = {}      # form -> (part labels, recipients)
        for part in mail.parsed.parts:
            if part.reading:
                continue
            found = _encrypted(part)
            if found:
                form, recipients = found
                labels, known = forms.setdefault(form, ([], []))
                labels.append(part.label)
                known.extend(r for r in recipients if r not in known)
        if not forms:
            return []
        sender = mail.envelope.mail_from.lower()
        header_senders = [a.lower() for _, a in getaddresses(mail.parsed.header_all("From"))]
        trusted = (mail.direction is Direction.INBOUND and bool(self.trusted) and _listed(sender, self.trusted)
                   and bool(header_senders) and all(_listed(a, self.trusted) for a in header_senders))
        findings = []
        for form, (labels, recipients) in forms.items():
            what = "S/MIME" if form == "smime" else "OpenPGP"
            who = f" for {', '.join(recipients[:MAX_RECIPIENTS])}" if recipients else ""
            kind = "encrypted.trusted_sender" if trusted else f"encrypted.{form}"
            detail = (f"{what} encrypted{who}: its content cannot be checked for viruses or content"
                      + (f"; the sender {sender} is trusted" if trusted else ""))
            findings.append(Finding(kind=kind, detector=self.name, detail=detail, part=", ".join(labels),
                                    evidence=tuple(recipients[:MAX_RECIPIENTS])))
        if mail.direction is Direction.OUTBOUND and self.partners:
            outside = [r for r in mail.envelope.rcpt_tos if not self.settings.is_local(r)
                       and not _listed(r.lower(), self.partners)]
            if outside:
                findings.append(Finding(
                    kind="encrypted.unlisted_recipient", detector=self.name, evidence=tuple(outside[:MAX_RECIPIENTS]),
                    detail=f"Encrypted mail to {', '.join(outside[:MAX_RECIPIENTS])}, outside the listed partner "
                           "domains"))
        return findings


def _names(values: list, option: str) -> tuple[str, ...]:
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise OptionError(f"detector 'encrypted': option {option!r} must be a list of domains or addresses")
    return tuple(v.strip().lower().lstrip("@") for v in values)


def _listed(address: str, names: tuple[str, ...]) -> bool:
    """An address matches a listed address, or a listed domain or one of its subdomains."""
    address = address.strip("<>").lower()
    domain = address.rpartition("@")[2]
    return any(address == n if "@" in n else (domain == n or domain.endswith("." + n)) for n in names)


def _encrypted(part: Part) -> tuple[str, list[str]] | None:
    """("smime" | "pgp", recipients) when the part is encrypted."""
    ctype = part.content_type
    names = [n.lower() for n in part.filenames]
    if ctype in _PKCS7 or any(n.endswith(".p7m") for n in names):
        smime_type = ""
        for key, value in part.headers:
            if key.lower() == "content-type":
                found = _SMIME_TYPE.search(value)
                smime_type = found.group(1).lower() if found else ""
        der = part.payload
        if smime_type in _ENVELOPED_TYPES or _OID_ENVELOPED in der[:24] or _OID_AUTH_ENVELOPED in der[:24]:
            return "smime", _smime_recipients(der)
        return None
    if ctype == "application/pgp-encrypted":
        return "pgp", []            # the version part of PGP/MIME: the sibling holds the packets
    if any(n.endswith(_PGP_FILE) for n in names) and _first_packet(part.payload) in _ENCRYPTED_PACKETS:
        return "pgp", _pgp_recipients(part.payload)
    if b"-----BEGIN PGP MESSAGE-----" in part.payload:
        for n, begin in enumerate(_BEGIN.finditer(part.payload)):
            end = part.payload.find(_END, begin.end())
            if end < 0 or n >= MAX_BLOCKS:      # found once, not per BEGIN line: linear on any input
                break
            data = _dearmor(part.payload[begin.end():end])
            if data and _first_packet(data) in _ENCRYPTED_PACKETS:
                return "pgp", _pgp_recipients(data)
    return None


def _dearmor(block: bytes) -> bytes | None:
    """The binary packets of an armored block (headers and checksum dropped); None if unreadable."""
    lines = block.replace(b"\r", b"").split(b"\n")[1:]      # [0]: the rest of the BEGIN line
    if b"" in lines:                     # armor headers ("Version: ...") end at the first blank line
        lines = lines[lines.index(b"") + 1:]
    body = b"".join(line.strip() for line in lines if not line.startswith(b"="))
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None


def _packets(data: bytes):
    """(tag, body) of the OpenPGP packets at the start of `data`, until one with a partial or
    indeterminate length (the encrypted data itself) or the end."""
    pos = 0
    while pos < len(data):
        octet = data[pos]
        if not octet & 0x80:
            return
        if octet & 0x40:                                   # new format
            tag = octet & 0x3F
            if pos + 1 >= len(data):
                yield tag, b""
                return
            first = data[pos + 1]
            if first < 192:
                length, start = first, pos + 2
            elif first < 224 and pos + 2 < len(data):
                length, start = ((first - 192) << 8) + data[pos + 2] + 192, pos + 3
            elif first == 255 and pos + 5 < len(data):
                length, start = int.from_bytes(data[pos + 2:pos + 6], "big"), pos + 6
            else:
                yield tag, b""
                return
        else:                                              # old format
            tag, kind = (octet >> 2) & 0x0F, octet & 3
            if kind == 3:
                yield tag, b""
                return
            size = 1 << kind
            start = pos + 1 + size
            length = int.from_bytes(data[pos + 1:start], "big")
        yield tag, data[start:start + length]
        pos = start + length


def _first_packet(data: bytes) -> int | None:
    return next((tag for tag, _ in _packets(data)), None)


def _pgp_recipients(data: bytes) -> list[str]:
    """The key ids of the public-key session key packets (v3); "hidden recipient" for a wildcard id."""
    found: list[str] = []
    for tag, body in _packets(data):
        if tag not in (1, 3):
            break
        if tag == 1 and len(body) >= 9 and body[0] == 3:
            key_id = body[1:9].hex().upper()
            name = "hidden recipient" if key_id == "0" * 16 else f"OpenPGP key {key_id}"
            if name not in found:
                found.append(name)
        if len(found) >= MAX_RECIPIENTS:
            break
    return found


def _der(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """(tag, start of content, end of content) of the DER element at `pos`."""
    if pos + 2 > len(data):
        return None
    tag, first = data[pos], data[pos + 1]
    if first < 0x80:
        return tag, pos + 2, pos + 2 + first
    size = first & 0x7F
    if not 0 < size <= 4 or pos + 2 + size > len(data):
        return None
    length = int.from_bytes(data[pos + 2:pos + 2 + size], "big")
    return tag, pos + 2 + size, pos + 2 + size + length


def _children(data: bytes, start: int, end: int):
    pos = start
    while pos < end:
        element = _der(data, pos)
        if element is None:
            return
        yield element
        pos = element[2]


def _smime_recipients(der: bytes) -> list[str]:
    """Issuer CN and serial of each key-transport recipient of an EnvelopedData, where the DER is
    plain: ContentInfo { oid, [0] { EnvelopedData { version, [0] originatorInfo?, SET recipientInfos } } }."""
    try:
        top = _der(der, 0)
        if top is None or top[0] != 0x30:
            return []
        oid, explicit = list(_children(der, top[1], top[2]))[:2]
        enveloped = _der(der, explicit[1])
        if enveloped is None:
            return []
        fields = [f for f in _children(der, enveloped[1], enveloped[2]) if f[0] != 0xA0][1:]
        recipients = fields[0] if fields and fields[0][0] == 0x31 else None
        found: list[str] = []
        for info in _children(der, recipients[1], recipients[2]) if recipients else ():
            parts = list(_children(der, info[1], info[2]))
            if len(parts) < 2 or parts[1][0] != 0x30:         # not issuerAndSerialNumber (e.g. a key id)
                continue
            issuer, serial = list(_children(der, parts[1][1], parts[1][2]))[:2]
            name = der[issuer[1]:issuer[2]]
            at = name.find(_OID_CN)
            cn = ""
            if at >= 0:
                value = _der(name, at + len(_OID_CN))
                cn = name[value[1]:value[2]].decode("utf-8", "replace") if value else ""
            found.append(f"certificate {der[serial[1]:serial[2]].hex().upper()} issued by {cn or 'unnamed issuer'}")
            if len(found) >= MAX_RECIPIENTS:
                break
        return found
    except (ValueError, IndexError, TypeError):
        return []
