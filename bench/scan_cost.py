"""Scan cost: our asyncio INSTREAM client against the `clamd` package, whole antivirus + filetype checks
per attachment size, and archive inspection. Prints numbers (docs/performance.md, "Attachment scanning").

Starts its own clamd (Debian's /usr/sbin/clamd) with the test signature database, like the tests do.
Usage:  .venv/bin/pip install -e '.[bench]'   (once: the `clamd` package, for the comparison)
        .venv/bin/python bench/scan_cost.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway import config
from gateway.detectors.antivirus import Antivirus
from gateway.detectors.filetype import FileType
from gateway.message import archives, mime
from gateway.model import Direction, Envelope, Mail
from gateway.scanners.clamd import Clamd
from tests.support import files
from tests.support.clamav import ClamdServer

KB, MB = 1024, 1024 * 1024
WORDS = (b"the report budget office quarterly figures staff policy review 2026 total net gross "
         b"department meeting minutes draft final approved pending north south east west").split(b" ")


def text(size: int, seed: int) -> bytes:
    """Office-like text: random words from a small vocabulary (compresses about 3:1 like real documents)."""
    import random
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choices(WORDS, k=12)) + b"\n"
    return bytes(out[:size])


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:8.1f}"


async def timed(repeat: int, make) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await make()
        samples.append(time.perf_counter() - start)
    return samples


def clients(server: ClamdServer, repeat: int) -> None:
    print("\n## INSTREAM clients (median ms per scan, random data, unix socket)")
    print(f"{'size':>8} {'ours':>8} {'clamd pkg':>10}")
    try:
        import clamd as clamd_pkg
    except ImportError:
        clamd_pkg = None
    ours = Clamd(server.address, stream_max_length=64 * MB)
    for size in (10 * KB, MB, 10 * MB):
        data = os.urandom(size)
        mine = asyncio.run(timed(repeat, lambda d=data: ours.instream(d)))
        theirs = "n/a"
        if clamd_pkg is not None:
            pkg = clamd_pkg.ClamdUnixSocket(str(server.socket))
            samples = []
            for _ in range(repeat):
                start = time.perf_counter()
                pkg.instream(io.BytesIO(data))
                samples.append(time.perf_counter() - start)
            theirs = median_ms(samples)
        print(f"{size // KB:>6}KB {median_ms(mine)} {theirs:>10}")


def mail_of(raw: bytes) -> Mail:
    return Mail(id="bench", envelope=Envelope("a@example.org", ("b@example.gov",)), raw=raw,
                parsed=mime.parse(raw), direction=Direction.INBOUND, received_at=0.0)


def detectors(server: ClamdServer, repeat: int) -> None:
    print("\n## Per attachment size (median ms; parse + antivirus + filetype, cache off)")
    print(f"{'size':>8} {'parse':>8} {'antivirus':>10} {'filetype':>9}")
    settings = config.from_dict({"antivirus": {"clamd": server.address, "cache_seconds": 0}})
    antivirus, filetype = Antivirus(settings, {}), FileType(settings, {})
    for size in (100 * KB, MB, 20 * MB):
        raw = files.message_with([("data.bin", os.urandom(size), "application/octet-stream")])
        parse, av, ft = [], [], []
        for _ in range(repeat):
            start = time.perf_counter()
            mail = mail_of(raw)
            parse.append(time.perf_counter() - start)
            av += asyncio.run(timed(1, lambda m=mail: antivirus.check(m)))
            mail = mail_of(raw)
            ft += asyncio.run(timed(1, lambda m=mail: filetype.check(m)))
        print(f"{size // KB:>6}KB {median_ms(parse)} {median_ms(av):>10} {median_ms(ft):>9}")


def archive_inspection(repeat: int) -> None:
    print("\n## Archive inspection (median ms; gateway.message.archives.expand, no clamd)")
    limits = archives.Limits()
    cases = {
        "zip, 100 x 10 KB text": files.zip_of({f"f{i}.txt": text(10 * KB, i) for i in range(100)},
                                              deflate=True),
        "zip, 1 x 20 MB random": files.zip_of({"r.bin": os.urandom(20 * MB)}),
        "zip in zip in zip": files.zip_of({"a.zip": files.zip_of({"b.zip": files.zip_of({"c.txt": b"x" * 1000})})}),
        "7z, 100 x 10 KB text": files.seven_zip_of({f"f{i}.txt": text(10 * KB, i)
                                                    for i in range(100)}),
        "tar.gz, 100 x 10 KB text": files.tar_gz_of({f"f{i}.txt": text(10 * KB, i)
                                                     for i in range(100)}),
        "zip bomb, 1 GB declared": files.zip_bomb(1024 * MB),
    }
    for name, data in cases.items():
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            inventory = archives.Inventory()
            archives.expand("part 2: x", ("x",), data, None, limits, inventory)
            samples.append(time.perf_counter() - start)
        note = ", ".join(p.kind for p in inventory.problems) or f"{len(inventory.files) - 1} members"
        print(f"{name:<28} {len(data) // KB:>7} KB {median_ms(samples)}  ({note})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ClamdServer(Path(tmp) / "clamd").start()
        try:
            print(f"# scan cost ({os.cpu_count()} CPUs, {asyncio.run(Clamd(server.address).version())})")
            clients(server, args.repeat)
            detectors(server, args.repeat)
        finally:
            server.stop()
    archive_inspection(args.repeat)


if __name__ == "__main__":
    main()
