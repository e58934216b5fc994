"""Benchmark: all content detectors together on typical 20 KB messages (target: <= 5 ms median).

Usage: .venv/bin/python bench/content.py [--rounds N] [--corpus DIR]

Each round builds a fresh Mail (MIME parse not timed: it is shared with every other detector) and
times, for each message shape:
- `all`: every registered content detector's check() run concurrently, as the pipeline does it,
  text extraction included (the first detector to ask extracts; inline for typical mail), as wall-clock
  time, as the process's CPU time, and as the best round (on a loaded machine the wall clock mostly
  measures waiting for a core; the best round approximates an idle machine);
- `extract`: the shared text extraction alone (gateway.message.text.extract, in this thread);
- one line per detector: its check() with the text already extracted.
With --corpus, also 20 KB +/- 4 KB messages from a labelled corpus (any manifest.tsv folder).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway import policy
from gateway.config import Settings
from gateway.context import Context
from gateway.detectors import REGISTRY
from gateway.matching.contentscan import ScanGroup
from gateway.message import mime
from gateway.message.text import extract, message_text
from gateway.model import Direction, Envelope, Mail

CONTENT = ("confidential", "pii", "credentials", "commercial", "political", "abusive", "chain_letter",
           "social_login", "external_email")

PARAGRAPH = ("The permit office reviewed the application for the county road project on Tuesday. The engineer "
             "asked for revised drainage figures and a new schedule for the culvert replacement; the contractor "
             "agreed to send both by the end of the month. Please call me at (573) 555-0142 if the dates change.\n")
SIGNATURE = ("\n--\nJane Doe | Permits Office | Department of Transportation\n301 W High St, Jefferson City, MO "
             "65101\nPhone (573) 555-0142 | jane.doe@example.gov\n\nThis e-mail may contain confidential "
             "information. If you are not the intended recipient, please notify the sender and delete it.\n")
QUOTE = "\nOn Mon, 2 Mar 2026 at 10:00, Bob Smith <bob@example.org> wrote:\n" + "".join(
    "> " + line + "\n" for line in (PARAGRAPH * 8).splitlines())


def plain_20k() -> bytes:
    body = PARAGRAPH * 52 + SIGNATURE + QUOTE
    return _message("Re: culvert schedule", "text/plain", body)


def html_20k() -> bytes:
    rows = "".join(f"<tr><td style='padding:4px'>Item {i}</td><td><b>{PARAGRAPH[:120]}</b></td></tr>"
                   for i in range(95))
    html = (f"<html><head><style>td{{font-family:Arial}}</style></head><body><div style='display:none'>preheader"
            f"</div><p>Dear colleagues,</p><table>{rows}</table><p>{PARAGRAPH}</p></body></html>")
    return _message("Monthly bulletin", "text/html", html)


def sensitive_20k() -> bytes:
    body = (PARAGRAPH * 66 + "PRE-DECISIONAL\nEmployee: Jane Roe, SSN 536-22-8726, card 4539 1488 0343 6467\n"
            "Username: kjones\nPassword: Blue!Harbor77\n" + SIGNATURE)
    return _message("Draft options", "text/plain", body)


def _message(subject: str, ctype: str, body: str) -> bytes:
    return (f"From: alice@example.gov\nTo: bob@example.org\nSubject: {subject}\nMIME-Version: 1.0\n"
            f"Content-Type: {ctype}; charset=utf-8\n\n{body}").replace("\n", "\r\n").encode()


def corpus_messages(folder: Path, limit: int = 40) -> list[bytes]:
    out = []
    for line in (folder / "manifest.tsv").read_text().splitlines()[1:]:
        path = folder / line.split("\t")[0]
        if 16_000 <= path.stat().st_size <= 24_000 and "malformed" not in line:
            out.append(path.read_bytes())
        if len(out) >= limit:
            break
    return out


LEXICONS = ScanGroup("content-lexicons")       # as a pipeline's: the content lexicons scanned together
SETTINGS = Settings()


def new_mail(raw: bytes) -> Mail:
    return Mail(id="bench", envelope=Envelope("alice@example.gov", ("bob@example.org",), "127.0.0.1"), raw=raw,
                parsed=mime.parse(raw), direction=Direction.OUTBOUND, received_at=time.time(),
                context=Context(SETTINGS, LEXICONS))


async def bench(name: str, messages: list[bytes], detectors: list, rounds: int) -> None:
    totals, extracts, cpu = [], [], []
    each: dict[str, list[float]] = {d.name: [] for d in detectors}
    for _ in range(rounds):
        for raw in messages:
            mail = new_mail(raw)
            start, start_cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(d.check(mail) for d in detectors))
            totals.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
            fresh = new_mail(raw)
            start = time.perf_counter()
            extract(fresh, SETTINGS.text)
            extracts.append((time.perf_counter() - start) * 1000)
            await message_text(mail, SETTINGS)
            for d in detectors:
                start = time.perf_counter()
                await d.check(mail)
                each[d.name].append((time.perf_counter() - start) * 1000)
    size = statistics.mean(len(m) for m in messages) / 1024
    print(f"{name} ({len(messages)} message{'s' if len(messages) > 1 else ''}, {size:.1f} KB):")
    print(f"  all content detectors   median {statistics.median(totals):6.2f} ms   p99 {_p99(totals):6.2f} ms   "
          f"(wall clock, text extraction included)")
    print(f"  all content detectors   median {statistics.median(cpu):6.2f} ms   p99 {_p99(cpu):6.2f} ms   "
          f"(CPU time of the process: what the message costs the machine)")
    print(f"  all content detectors   best   {min(totals):6.2f} ms                 "
          f"(wall clock, best round: the cost on an idle machine)")
    print(f"  text extraction         median {statistics.median(extracts):6.2f} ms   p99 {_p99(extracts):6.2f} ms   "
          f"best {min(extracts):5.2f} ms")
    for d, times in each.items():
        print(f"  {d:<23} median {statistics.median(times):6.2f} ms   p99 {_p99(times):6.2f} ms   "
              f"best {min(times):5.2f} ms   (text ready)")


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--corpus", type=Path)
    args = parser.parse_args()
    settings = SETTINGS
    loaded = policy.load(settings)
    names = [n for n in CONTENT if n in REGISTRY]
    detectors = [REGISTRY[n](settings, loaded.detector_options.get(n, {})) for n in names]
    for d in detectors:
        if getattr(d, "shared_lexicon", None) is not None:
            LEXICONS.add(d.name, d.shared_lexicon)
    print(f"content detectors: {', '.join(names)}; {args.rounds} rounds\n")
    await bench("plain text reply with quote and signature", [plain_20k()], detectors, args.rounds)
    await bench("HTML bulletin", [html_20k()], detectors, args.rounds)
    await bench("plain text with markers, PII and a password", [sensitive_20k()], detectors, args.rounds)
    if args.corpus:
        messages = corpus_messages(args.corpus)
        await bench(f"corpus messages of 16-24 KB from {args.corpus}", messages, detectors,
                    max(1, args.rounds // len(messages)))


if __name__ == "__main__":
    asyncio.run(main())
