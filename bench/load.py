"""An asyncio SMTP load generator: N sessions, a message mix, closed loop or a fixed rate; prints JSON.

Closed loop (no --rate): every session sends back to back, for throughput. Fixed rate: messages are
scheduled at --rate per second over all sessions and latency is measured from the scheduled time
(no coordinated omission). Latency = MAIL FROM sent to the final reply to DATA.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import messages


async def reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return line


def stuff(message: bytes) -> bytes:
    data = message.replace(b"\r\n.", b"\r\n..")
    if data.startswith(b"."):
        data = b"." + data
    return data + b".\r\n"


async def main(args: argparse.Namespace) -> dict:
    built = messages.build()
    mix = messages.MIXES[args.mix]
    kinds = [k for k, _ in mix]
    weights = [w for _, w in mix]
    payloads = {k: stuff(built[k]) for k in kinds}
    rng = random.Random(7)
    results: list[tuple[str, float, int]] = []
    errors: list[str] = []
    start = time.perf_counter()
    end = start + args.duration
    slot = 0
    mail = f"MAIL FROM:<{args.mail_from}>\r\n".encode()
    rcpt = f"RCPT TO:<{args.rcpt}>\r\n".encode()

    def next_slot() -> float:
        nonlocal slot
        slot += 1
        return start + slot / args.rate

    async def session(i: int) -> None:
        sent = 0
        try:
            reader, writer = await asyncio.open_connection(args.host, args.port)
            await reply(reader)
            writer.write(b"EHLO load.test\r\n")
            await reply(reader)
            while True:
                if args.rate:
                    due = next_slot()
                    if due >= end:
                        break
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    t0 = due
                else:
                    t0 = time.perf_counter()
                    if (t0 >= end and not args.once) or (args.once and sent):
                        break
                sent += 1
                kind = rng.choices(kinds, weights)[0]
                writer.write(mail)
                r1 = await reply(reader)
                writer.write(rcpt)
                r2 = await reply(reader)
                if not (r1.startswith(b"250") and r2.startswith(b"250")):
                    errors.append((r1 + r2).decode("latin-1")[:200])
                    writer.write(b"RSET\r\n")
                    await reply(reader)
                    await asyncio.sleep(0.05)
                    continue
                writer.write(b"DATA\r\n")
                await reply(reader)
                writer.write(payloads[kind])
                final = await reply(reader)
                code = int(final[:3])
                results.append((kind, time.perf_counter() - t0, code))
                if code != 250:
                    errors.append(final.decode("latin-1")[:200])
            writer.write(b"QUIT\r\n")
            writer.close()
        except (OSError, ConnectionError, ValueError) as e:
            errors.append(f"session {i}: {e!r}")

    await asyncio.gather(*(session(i) for i in range(args.sessions)))
    elapsed = time.perf_counter() - start
    ok = [(k, t) for k, t, c in results if c == 250]
    lat = sorted(t for _, t in ok)

    def pct(values: list[float], p: float) -> float | None:
        if not values:
            return None
        return round(values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000, 2)

    by_kind = {}
    for kind in kinds:
        ts = sorted(t for k, t in ok if k == kind)
        by_kind[kind] = {"ok": len(ts), "p50_ms": pct(ts, 50), "p99_ms": pct(ts, 99)}
    return {"mix": args.mix, "sessions": args.sessions, "rate": args.rate, "duration_s": round(elapsed, 2),
            "ok": len(ok), "failed": len(results) - len(ok), "errors": errors[:5], "error_count": len(errors),
            "msg_per_s": round(len(ok) / elapsed, 1),
            "mbytes_per_s": round(sum(len(payloads[k]) for k, _ in ok) / elapsed / 1e6, 2),
            "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99), "max_ms": pct(lat, 100),
            "by_kind": by_kind}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--rate", type=float, default=0)
    parser.add_argument("--once", action="store_true", help="each session sends exactly one message")
    parser.add_argument("--mix", default="text+html", choices=list(messages.MIXES))
    parser.add_argument("--mail-from", default="alice@example.gov")
    parser.add_argument("--rcpt", default="bob@example.org")
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(main(args))))
