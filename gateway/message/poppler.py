"""PDF pages through Debian's poppler-utils, as bounded child processes: which pages have a text
layer (pdftotext), which hold a scan-sized picture (pdfimages), and a page drawn as a grey bitmap
(pdftoppm). Each child runs under an address-space limit (prlimit, where util-linux has it), is
killed at its timeout, and its output is read only up to a limit, so a hostile PDF costs bounded
time, memory and disk.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading

log = logging.getLogger("gateway.poppler")

MAX_PAGES = 500                     # PDF pages examined for a text layer
MAX_TEXT = 32 * 1024 * 1024         # bytes of pdftotext output read (a deflate bomb stops here)
SCAN_PIXELS = 500_000               # a picture this big on a page with typed text may be a pasted scan
CHILD_MEMORY = 2 * 1024 ** 3        # address-space limit for poppler on hostile PDFs


class Unrendered(Exception):
    """poppler read the PDF but could not draw this page (broken, or over its memory limit)."""


def page_texts(path: str, timeout: float) -> tuple[list[str], bool]:
    """The text layer of each page (a form feed ends each page in pdftotext's output), and whether
    that is all of them. ([], True) when poppler cannot open the file (encrypted, broken): the
    attachment checks report those. TimeoutExpired at the timeout."""
    command = limited(["pdftotext", "-q", "-enc", "UTF-8", "-l", str(MAX_PAGES + 1), path, "-"])
    output, code, truncated = bounded_output(command, timeout, MAX_TEXT)
    if code and not truncated:
        log.debug("pdftotext exit %d on %s", code, path)
        return [], True
    pages = output.decode("utf-8", "replace").split("\f")
    last_complete = not pages[-1].strip()
    pages.pop()                      # after the last form feed: nothing, or a page cut short
    complete = last_complete and not truncated and len(pages) <= MAX_PAGES
    return pages[:MAX_PAGES], complete


def pages_with_scans(path: str, timeout: float) -> set[int]:
    """Pages holding a picture of at least SCAN_PIXELS (pdfimages -list). Best effort: a failure or
    a timeout here just means no such pages."""
    command = limited(["pdfimages", "-q", "-list", "-l", str(MAX_PAGES), path])
    try:
        output, _, _ = bounded_output(command, min(timeout, 5.0), 4 * 1024 * 1024)
    except subprocess.TimeoutExpired:
        return set()
    pages = set()
    for line in output.decode("ascii", "replace").splitlines()[2:]:
        fields = line.split()
        if len(fields) > 4 and fields[0].isdigit() and fields[2] == "image" and fields[3].isdigit() \
                and fields[4].isdigit() and int(fields[3]) * int(fields[4]) >= SCAN_PIXELS:
            pages.add(int(fields[0]))
    return pages


def render_page(path: str, page: int, long_side: int, timeout: float, *, gray: bool = True) -> str:
    """Draw one page (1-based) as a grey PGM (or colour PPM) whose long side is `long_side` pixels (so
    a huge MediaBox cannot make a huge bitmap); returns the file's path. Unrendered when poppler cannot."""
    root = f"{path}-page-{page}"
    subprocess.run(limited(["pdftoppm", "-q", *(["-gray"] if gray else []), "-singlefile", "-scale-to",
                            str(long_side), "-f", str(page), "-l", str(page), path, root]),
                   capture_output=True, timeout=timeout, check=False)
    out = root + (".pgm" if gray else ".ppm")
    if not os.path.exists(out):
        raise Unrendered(f"page {page} could not be rendered")
    return out


def bounded_output(command: list[str], timeout: float, limit: int) -> tuple[bytes, int, bool]:
    """(stdout up to limit bytes, exit code, whether it was cut at the limit); the child is killed at
    the limit, or at the timeout (then TimeoutExpired)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        proc.kill()

    timer = threading.Timer(max(timeout, 0.1), expire)
    timer.start()
    chunks, size, truncated = [], 0, False
    try:
        while chunk := proc.stdout.read(65536):
            size += len(chunk)
            if size > limit:
                truncated = True
                proc.kill()
                break
            chunks.append(chunk)
        proc.wait()
    finally:
        timer.cancel()
        proc.stdout.close()
    if expired and not truncated:
        raise subprocess.TimeoutExpired(command, timeout)
    return b"".join(chunks), proc.returncode or 0, truncated


def limited(command: list[str]) -> list[str]:
    """The command under an address-space limit, so a hostile PDF cannot exhaust memory."""
    prlimit = shutil.which("prlimit")
    return [prlimit, f"--as={CHILD_MEMORY}", "--", *command] if prlimit else command
