"""Cost of reading pictures: OCR per image and per PDF page, the skips, the cache, and the adult-content
models per image. Prints a table; not a test.

    .venv/bin/python bench/ocr.py [--rounds 5]

Every row is the median wall time of one message through gateway.message.ocr.read_message (or the detector),
with the content-hash cache emptied before each round unless the row is about the cache. `workers=1`
rows measure cost; the last rows measure a 4-page PDF with 1 and 2 workers (latency on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway import config
from gateway.message import mime, ocr
from gateway.model import Direction, Envelope, Mail
from gateway.scanners import adult_models
from tests.support import imagegen as gen


def mail_of(raw: bytes) -> Mail:
    return Mail("bench", Envelope("a@example.gov", ("b@example.org",)), raw, mime.parse(raw), Direction.OUTBOUND,
                time.time())


def cpu() -> float:
    """CPU seconds of this process (all threads) and of its finished children (tesseract, poppler)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


async def timed(raw: bytes, cfg: config.OcrSettings, rounds: int, *,
                keep_cache: bool = False) -> tuple[float, float, int]:
    times, cpus, pages = [], [], 0
    if keep_cache:
        await ocr.read_message(mail_of(raw), cfg)
    for _ in range(rounds):
        if not keep_cache:
            ocr.CACHE.clear()
        mail = mail_of(raw)
        start, start_cpu = time.perf_counter(), cpu()
        result = await ocr.read_message(mail, cfg)
        times.append(time.perf_counter() - start)
        cpus.append(cpu() - start_cpu)
        pages = result.pages_read
    return statistics.median(times) * 1000, statistics.median(cpus) * 1000, pages


def median_ms(fn, rounds: int) -> str:
    times, cpus = [], []
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), cpu()
        fn()
        times.append(time.perf_counter() - start)
        cpus.append(cpu() - start_cpu)
    return f"{statistics.median(times) * 1000:>10.1f} {statistics.median(cpus) * 1000:>10.1f}"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--alternatives", action="store_true", help="also time tesserocr and pypdfium2")
    args = parser.parse_args()
    rounds = args.rounds
    one = config.OcrSettings(workers=1, max_seconds=120)
    two = config.OcrSettings(workers=2, max_seconds=120)
    form = gen.form()
    four = gen.message(("s.pdf", "application/pdf", gen.image_pdf(*[gen.form((f"PAGE {i}",)) for i in range(4)])))
    twelve = gen.message(("s.pdf", "application/pdf", gen.image_pdf(*[gen.form((f"PAGE {i}",)) for i in range(12)])))
    memo = gen.message(("m.pdf", "application/pdf", gen.text_pdf("Quarterly memo about the budget")))
    rows = [
        ("no pictures (text only)", gen.message(), one, False),
        ("signature logo 160x40 (skipped by size)", gen.message(("logo.png", "image/png", gen.encode(gen.logo()))),
         one, False),
        ("scanned form PNG, A4 150 dpi", gen.message(("f.png", "image/png", gen.encode(form))), one, False),
        ("scanned form JPEG, A4 150 dpi", gen.message(("f.jpg", "image/jpeg", gen.encode(form, "JPEG"))), one, False),
        ("photo JPEG 640x480, no text", gen.message(("p.jpg", "image/jpeg", gen.encode(gen.photo(), "JPEG"))),
         one, False),
        ("same form again (cache hit)", gen.message(("f.png", "image/png", gen.encode(form))), one, True),
        ("PDF with text layer, 1 page (not OCR'd)", memo,
         one, False),
        ("image-only PDF, 1 page", gen.message(("s.pdf", "application/pdf", gen.image_pdf(form))), one, False),
        ("image-only PDF, 4 pages, 1 worker", four, one, False),
        ("image-only PDF, 4 pages, 2 workers", four, two, False),
        ("image-only PDF, 12 pages, 2 workers", twelve, two, False),
    ]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; medians of {rounds} rounds")
    print(f"{'message':48} {'pages OCRd':>10} {'wall ms':>10} {'CPU ms':>10}")
    for name, raw, cfg, keep in rows:
        ms, cpu_ms, pages = await timed(raw, cfg, rounds, keep_cache=keep)
        print(f"{name:48} {pages:>10} {ms:>10.1f} {cpu_ms:>10.1f}")
    print()
    print(f"{'adult-content model, one image':48} {'':>10} {'wall ms':>10} {'CPU ms':>10}")
    models = [("skin", adult_models.SkinModel())]
    try:
        models.append(("nudenet (optional extra)", adult_models.load("nudenet")))
    except adult_models.ModelUnavailable:
        print(f"{'nudenet (optional extra)':48} {'':>10} {'not installed':>10}")
    photo = gen.photo(size=(1600, 1200))
    for name, model in models:
        print(f"{name + ', 1600x1200 photo':48} {'':>10} {median_ms(lambda m=model: m.score(photo), rounds)}")
    if args.alternatives:
        alternatives(rounds)


def alternatives(rounds: int) -> None:
    """The engines we did not choose, where installed: tesserocr (in-process tesseract) and pypdfium2."""
    import subprocess
    import tempfile

    import pytesseract

    page = gen.form()
    print()
    print(f"{'engine, one A4 150 dpi page':48} {'':>10} {'wall ms':>10} {'CPU ms':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        pgm, pdf = os.path.join(tmp, "page.pgm"), os.path.join(tmp, "page.pdf")
        page.save(pgm, "PPM")
        with open(pdf, "wb") as f:
            f.write(gen.image_pdf(page))
        rows = [("tesseract child via pytesseract (chosen)",
                 lambda: pytesseract.image_to_data(pgm, lang="eng", config="--psm 3")),
                ("pdftoppm to PGM (chosen)",
                 lambda: subprocess.run(["pdftoppm", "-q", "-gray", "-singlefile", "-scale-to", "1755", pdf,
                                         os.path.join(tmp, "r")], check=True))]
        try:
            import tesserocr

            api = tesserocr.PyTessBaseAPI(path="/usr/share/tesseract-ocr/5/tessdata/", lang="eng")
            rows.append(("tesserocr in-process", lambda: (api.SetImage(page), api.GetUTF8Text())))
        except ImportError:
            print(f"{'tesserocr in-process':48} {'':>10} {'not installed':>10}")
        try:
            import pypdfium2

            rows.append(("pypdfium2 render in-process",
                         lambda: pypdfium2.PdfDocument(pdf)[0].render(scale=150 / 72, grayscale=True).to_pil()))
        except ImportError:
            print(f"{'pypdfium2 render in-process':48} {'':>10} {'not installed':>10}")
        for name, fn in rows:
            print(f"{name:48} {'':>10} {median_ms(fn, rounds)}")


if __name__ == "__main__":
    asyncio.run(main())
