"""Time the content classifiers (commercial, political, abusive, chain_letter, social_login, external_email)
on a typical 20 KB message: plain text + HTML alternative, ordinary office prose.

Usage: .venv/bin/python bench/content_classifiers.py [--runs 300] [--size 20000]

Prints, in milliseconds, the median and p99 of: the shared text extraction (gateway.message.text, built once per
message and shared by all content detectors), the shared lexicon scan (a pipeline's ScanGroup: normalisation and
one pass of one expression for the commercial, political, abusive and chain-letter lexicons), each
detector's own remaining work once those are done (the model, signals, sketches, scoring), and
all six detectors together (run concurrently as the pipeline does, extraction excluded), as wall time
and as process CPU time (the machine is shared; CPU time is what the detectors cost). Each run parses
a fresh Mail so no detector sees a cached result.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time

from gateway import config
from gateway.context import Context
from gateway.detectors import REGISTRY
from gateway.matching.contentscan import ScanGroup
from gateway.matching.normaliser import for_lexicons as normalise
from gateway.message import mime
from gateway.message.text import message_text
from gateway.model import Direction, Envelope, Mail
from gateway.policy import load as load_policy

WORDS = re.compile(r"\w+")
NAMES = ("commercial", "political", "abusive", "chain_letter", "social_login", "external_email")
PROSE = ("The regional office reviewed the permit applications received this quarter. Staff noted that the "
         "inspection backlog fell by a third after the new scheduling system went live, and the budget "
         "committee asked for a summary of overtime costs before the March meeting. Please send your "
         "comments on the draft procedures to the program manager by Friday; the legal unit will review "
         "the retention schedule and the records request log. ")


def message(size: int) -> bytes:
    text = (PROSE * (size // (2 * len(PROSE)) + 1))[: size // 2]
    html = "<html><body>" + "".join(f"<p>{s}.</p>" for s in text.split(". ")) + "</body></html>"
    return (f"From: Alice Smith <alice.smith@example.gov>\r\nTo: bob@example.org\r\nSubject: Quarterly review\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b\"\r\n\r\n"
            f"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
            f"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--b--\r\n").encode()


LEXICONS = ScanGroup("content-lexicons")       # as a pipeline's: the content lexicons scanned together
SETTINGS = config.Settings()


def new_mail(raw: bytes) -> Mail:
    return Mail("bench", Envelope("alice.smith@example.gov", ("bob@example.org",)), raw, mime.parse(raw),
                Direction.OUTBOUND, time.time(), Context(SETTINGS, LEXICONS))


def summary(values: list[float]) -> str:
    values = sorted(values)
    return f"median {statistics.median(values):6.2f} ms  p99 {values[max(0, int(len(values) * 0.99) - 1)]:6.2f} ms"


async def main(runs: int, size: int) -> None:
    settings = SETTINGS
    policy = load_policy(settings)
    detectors = {n: REGISTRY[n](settings, policy.detector_options.get(n, {})) for n in NAMES}
    for name, d in detectors.items():
        if getattr(d, "shared_lexicon", None) is not None:
            LEXICONS.add(name, d.shared_lexicon)
    raw = message(size)
    print(f"message: {len(raw)} bytes; {runs} runs")
    extraction, together, cpu, shared, reference = [], [], [], [], []
    alone: dict[str, list[float]] = {n: [] for n in NAMES}
    for _ in range(runs):
        mail = new_mail(raw)
        start = time.perf_counter()
        await message_text(mail, settings)
        extraction.append((time.perf_counter() - start) * 1000)
        start, start_cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(d.check(mail) for d in detectors.values()))
        together.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
        for name, det in detectors.items():      # each on its own, after the shared work is done
            start = time.perf_counter()
            await det.check(mail)
            alone[name].append((time.perf_counter() - start) * 1000)
        text = (await message_text(mail, settings)).joined()
        start = time.perf_counter()
        LEXICONS.scan(normalise(text))
        shared.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        WORDS.findall(text)
        reference.append((time.perf_counter() - start) * 1000)
    print(f"{'text extraction (shared)':<28}{summary(extraction)}")
    print(f"{'lexicon scan (shared)':<28}{summary(shared)}  (normalise + one pass over the 4 lexicons)")
    for name in NAMES:
        print(f"{name + ' (own work)':<28}{summary(alone[name])}")
    print(f"{'all six together':<28}{summary(together)}")
    print(f"{'all six together, CPU time':<28}{summary(cpu)}  (process CPU, less sensitive to other load)")
    print(f"{'reference: words findall':<28}{summary(reference)}  (re.findall(r'\\w+', text): compare machines, load)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--size", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.size))
