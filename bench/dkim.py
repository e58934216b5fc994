"""DKIM signing (and verifying) cost per message: RSA-2048 vs Ed25519 (RFC 8463).

Usage: .venv/bin/python bench/dkim.py [--n 200]
Signs a 5 KB and a 1 MB message with each key type through gateway.senderauth.dkimsign (dkimpy underneath,
relaxed/relaxed, the headers we sign), and verifies them with dkimpy, the key injected as the DNS
answer. Prints milliseconds per message (median of N runs) on one core.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

# This script is named dkim.py: keep its own folder off the path, so `import dkim` finds dkimpy.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import dkim  # noqa: E402

from gateway import dkimsign  # noqa: E402
from gateway.model import Direction  # noqa: E402


def message(size: int) -> bytes:
    line = b"The quarterly figures are attached below for the committee's review.\r\n"
    body = line * (size // len(line) + 1)
    return (b"From: Alice <alice@example.gov>\r\nTo: bob@example.org\r\nSubject: Figures\r\n"
            b"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench@example.gov>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body[:size])


def median_ms(func, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        func()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    print(f"{'key':<10} {'message':>8} {'sign ms':>9} {'verify ms':>10} {'sig bytes':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("rsa", "ed25519"):
            pem, record = dkimsign.keygen(kind)
            path = Path(tmp) / f"{kind}.key"
            path.write_bytes(pem)
            algorithm, private = dkimsign.read_key(str(path))
            key = dkimsign.SigningKey("example.gov", "bench", algorithm, private, str(path))
            answer = record.encode()
            for size in (5_000, 1_000_000):
                msg = message(size)
                n = args.n if size < 100_000 else max(5, args.n // 10)
                sign_ms = median_ms(lambda msg=msg, key=key: key.sign(msg), n)
                signed = key.sign(msg) + msg
                def lookup(name, timeout=5, answer=answer):
                    return answer

                assert dkim.verify(signed, dnsfunc=lookup)
                verify_ms = median_ms(lambda signed=signed, lookup=lookup: dkim.verify(signed, dnsfunc=lookup), n)
                label = "RSA-2048" if kind == "rsa" else "Ed25519"
                print(f"{label:<10} {size // 1000:>6}KB {sign_ms:>9.3f} {verify_ms:>10.3f} {len(key.sign(msg)):>10}")


def inbound_check(n: int) -> None:
    """The whole `auth` detector on one inbound message (DKIM RSA signature, SPF, DMARC), DNS injected."""
    import asyncio

    from gateway import config
    from gateway.detectors.auth import Auth
    from gateway.message.mime import parse
    from gateway.model import Envelope, Mail
    from gateway.senderauth.dns import StaticResolver

    with tempfile.TemporaryDirectory() as tmp:
        pem, record = dkimsign.keygen("rsa")
        path = Path(tmp) / "p.key"
        path.write_bytes(pem)
        algorithm, private = dkimsign.read_key(str(path))
        key = dkimsign.SigningKey("partner.test", "s1", algorithm, private, str(path))
        raw = message(5_000).replace(b"alice@example.gov", b"x@partner.test")
        raw = key.sign(raw) + raw
    settings = config.from_dict({"auth": {"resolver": "none"}})
    auth = Auth(settings, {})
    auth.resolver = StaticResolver({"s1._domainkey.partner.test": record, "partner.test": "v=spf1 ip4:192.0.2.1 -all",
                                    "_dmarc.partner.test": "v=DMARC1; p=reject"})
    mail = Mail("bench", Envelope("x@partner.test", ("staff@example.gov",), "192.0.2.1", "mx.partner.test"),
                raw, parse(raw), Direction.INBOUND, time.time())

    async def run() -> float:
        assert await auth.check(mail) == []
        times = []
        for _ in range(n):
            start = time.perf_counter()
            await auth.check(mail)
            times.append((time.perf_counter() - start) * 1000)
        await auth.close()
        return statistics.median(times)

    print(f"auth detector, inbound 5 KB message (DKIM RSA + SPF + DMARC): {asyncio.run(run()):.3f} ms per message")


if __name__ == "__main__":
    main()
    inbound_check(100)
