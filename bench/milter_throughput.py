"""Milter front end throughput: N concurrent MTA connections each sending M messages through the
gateway's milter (the shipped policy), reporting messages/s and end-of-message latency.

    .venv/bin/python bench/milter_throughput.py [--connections 8] [--messages 50] [--size 20000]

Everything runs in one process on loopback (the MTA side is tests/support/milter_client.py), so the numbers
are the gateway's cost per message without Postfix's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway import config
from gateway.app import Gateway
from gateway.milter import codec
from tests.support.milter_client import MilterClient
from tests.support.peers import free_port, make_message


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--messages", type=int, default=50, help="per connection")
    parser.add_argument("--size", type=int, default=20000, help="body bytes")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    port = free_port()
    settings = config.from_dict({
        "smtp": {"enabled": False}, "milter": {"enabled": True, "listen": f"127.0.0.1:{port}"},
        "quarantine": {"url": f"sqlite:///{tmp / 'q.db'}"}, "log": {"level": "WARNING"},
    })
    gateway = await Gateway.create(settings)
    await gateway.start()
    body = ("The quarterly figures are attached below.\n" * (args.size // 42 + 1))[:args.size]
    raw = make_message(sender="mallory@example.org", to="bob@example.gov", body=body)
    latencies: list[float] = []

    async def connection(n: int) -> None:
        client = await MilterClient.connect(port)
        await client.negotiate()
        await client.session()
        for i in range(args.messages):
            start = time.perf_counter()
            replies = await client.message(raw, "mallory@example.org", ["bob@example.gov"], queue_id=f"Q{n}x{i}")
            latencies.append((time.perf_counter() - start) * 1000)
            assert replies[-1].command == codec.SMFIR_CONTINUE, replies
        await client.close()

    start = time.perf_counter()
    await asyncio.gather(*(connection(n) for n in range(args.connections)))
    elapsed = time.perf_counter() - start
    await gateway.close()
    total = args.connections * args.messages
    latencies.sort()
    print(f"milter: {total} messages of {len(raw)} bytes over {args.connections} connections in {elapsed:.2f} s")
    print(f"  throughput {total / elapsed:.0f} messages/s")
    print(f"  latency per message (MAIL..end of body) p50 {statistics.median(latencies):.1f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99) - 1]:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
