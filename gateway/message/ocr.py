"""Text inside pictures: image attachments, inline images and PDF pages without a text layer, read
with Debian's tesseract so the content detectors see scanned forms as they see body text.

Three steps per message, each bounded:
1. survey (worker pool): image headers only (size, frames), and `pdftotext` for which PDF pages carry
   no text layer. Images under [ocr] min_pixels (icons, signature logos, tracking pixels) drop out.
2. budget (event loop): pages in message order up to [ocr] max_pages; pages already read in an
   earlier message (content-hash cache) are free. Pages over the budget are reported, not read.
3. read (worker pool): `pdftoppm` renders a PDF page, tesseract reads it; both are child processes
   with the message's remaining time as their timeout, so a hostile file is killed at the deadline
   and a crash takes down a child, never the gateway.

A message without pictures never leaves the event loop. What could not be read within the limits is
in OcrResult.skipped; the `ocr` detector reports it as `unscanned.ocr_limits`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from gateway.config import OcrSettings, Settings
from gateway.message import archives, images, poppler
from gateway.message.images import ImageError, Picture
from gateway.message.plaintext import Segment
from gateway.model import Mail

log = logging.getLogger("gateway.ocr")

# tesseract may start one thread per core; our pool already runs [ocr] workers processes at once.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")

MIN_PAGE_TEXT = 16          # a PDF page with fewer non-blank characters in its text layer is read by OCR
MAX_FRAMES = 100            # frames looked at in a multi-page TIFF
MAX_TEXT = 100_000          # characters kept per page


@dataclass(frozen=True, slots=True)
class OcrResult:
    segments: tuple[Segment, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()   # (part label, why it was not read) for unscanned.ocr_limits
    pages_read: int = 0                         # pages that went through tesseract (cache misses)


@dataclass(slots=True)
class _Page:
    picture: Picture
    label: str                  # source of the segment: "part 2: scan.png", "part 3: a.pdf page 2"
    page: int                   # PDF page (1-based) or image frame (0-based)
    key: str                    # cache key: content hash, page, languages
    path: str = ""              # the PDF, written once to the message's temporary directory
    optional: bool = False      # a PDF page with a text layer and a scan-sized picture: read if budget is left
    text: str | None = None


@dataclass(slots=True)
class _Survey:
    pages: list[_Page] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


# ---- the content-hash cache --------------------------------------------------------------------

class _Cache:
    """Text already read, by content hash: a logo in every signature is read once per process."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self.data: OrderedDict[str, str] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self.lock:
            text = self.data.get(key)
            if text is not None:
                self.data.move_to_end(key)
            return text

    def put(self, key: str, text: str) -> None:
        with self.lock:
            self.data[key] = text
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.data.clear()


CACHE = _Cache()


# ---- the engine --------------------------------------------------------------------------------

_languages: tuple[str, ...] | None = None


def engine_problem(cfg: OcrSettings) -> str:
    """Why OCR cannot run with these settings ("" when it can): tesseract, its language packs, poppler."""
    global _languages
    import pytesseract

    if _languages is None:
        try:
            _languages = tuple(pytesseract.get_languages(config=""))
        except (pytesseract.TesseractNotFoundError, OSError, RuntimeError):
            return "tesseract is not installed (Debian: apt-get install tesseract-ocr)"
    missing = [lang for lang in cfg.languages if lang not in _languages]
    if missing:
        return (f"[ocr] languages: tesseract has no {', '.join(missing)} language pack (Debian: tesseract-ocr-"
                f"{missing[0]}); installed: {', '.join(_languages)}")
    if not all(shutil.which(tool) for tool in ("pdftotext", "pdftoppm", "pdfimages")):
        return "pdftotext, pdftoppm and pdfimages are not installed (Debian: apt-get install poppler-utils)"
    return ""


# ---- entry points ------------------------------------------------------------------------------

async def ocr_segments(mail: Mail, settings: Settings) -> tuple[list[Segment], list[str]]:
    """Segments of text read from the message's pictures, and what was left unread (as sentences)."""
    result = await message_ocr(mail, settings)
    return list(result.segments), [f"{label}: {why}" for label, why in result.skipped]


async def message_ocr(mail: Mail, settings: Settings) -> OcrResult:
    """The OCR of this message, computed once and shared (text extraction and the `ocr` detector), with
    the pipeline's settings (the message's context) or else the caller's."""
    context = mail.context
    task = context.ocr
    if task is None:
        settings = context.settings or settings
        roots = images.archived_roots(mail.parsed) if settings.ocr.enabled else ()
        if settings.ocr.enabled and (roots or images.may_hold_pictures(mail.parsed)):
            task = asyncio.ensure_future(read_message(mail, settings.ocr, archives.limits_for(settings.antivirus),
                                                      roots))
        else:                   # most mail: nothing to read, and no task to make for it
            task = asyncio.get_running_loop().create_future()
            task.set_result(OcrResult())
        context.ocr = task
    # shielded: one reader timing out must not cancel the reading the others are waiting for
    return await asyncio.shield(task)


async def read_message(mail: Mail, cfg: OcrSettings, limits: archives.Limits | None = None,
                       roots: tuple[str, ...] = ()) -> OcrResult:
    """OCR of the message's pictures (message_ocr calls it only when OCR is on and pictures may be there),
    also those inside the archives under `roots` (`images.archived_roots`): the members the antivirus and
    file-type checks opened with `limits`, read like attachments."""
    pictures = await images.run(cfg.workers, images.pictures, mail.parsed)
    if roots and limits is not None:
        pictures += await images.archived_pictures(mail, limits, roots, pdf=True)
    if not pictures:
        return OcrResult()
    deadline = time.monotonic() + cfg.max_seconds
    langs = "+".join(cfg.languages) or "eng"
    with tempfile.TemporaryDirectory(prefix="gateway-ocr-") as tmp:
        surveys = await asyncio.gather(*(images.run(cfg.workers, _survey, p, cfg, langs, tmp, i, deadline)
                                         for i, p in enumerate(pictures)))
        skipped = [s for survey in surveys for s in survey.skipped]
        todo: dict[str, list[_Page]] = {}
        budget = cfg.max_pages
        over: dict[str, list[str]] = {}
        pages = [page for survey in surveys for page in survey.pages]
        for optional in (False, True):      # pages without a text layer first; pages with one if budget is left
            for page in pages:
                if page.optional != optional:
                    continue
                page.text = CACHE.get(page.key)
                if page.text is not None:
                    continue
                if page.key in todo:
                    todo[page.key].append(page)
                elif budget > 0:
                    budget -= 1
                    todo[page.key] = [page]
                elif not optional:
                    over.setdefault(page.picture.label, []).append(page.label)
        for label, labels in over.items():
            skipped.append((label, f"{_count(label, labels)} over the limit of {cfg.max_pages} images and "
                                   "pages read per message"))
        keys = list(todo)
        chunks = [keys[i::cfg.workers] for i in range(min(cfg.workers, len(keys)))]    # one per worker, in turn
        done = await asyncio.gather(*(images.run(cfg.workers, _read_batch, [todo[k][0] for k in chunk], cfg, langs,
                                                 tmp, deadline) for chunk in chunks))
        by_key = {k: result for chunk, results in zip(chunks, done, strict=True)
                  for k, result in zip(chunk, results, strict=True)}
        results = [by_key[k] for k in keys]
    late: dict[str, list[str]] = {}
    for same, (text, why) in zip(todo.values(), results, strict=True):
        if why and same[0].optional:        # best effort: its text layer was read anyway
            log.info("ocr: %s not read (%s)", same[0].label, why)
            continue
        if why == _LATE:
            late.setdefault(same[0].picture.label, []).append(same[0].label)
            continue
        if why:
            skipped.append((same[0].picture.label, why))
            continue
        CACHE.put(same[0].key, text)
        for page in same:
            page.text = text
    for label, labels in late.items():
        skipped.append((label, f"{_count(label, labels)} the time limit of {cfg.max_seconds:g} s per message ran out"))
    segments = tuple(Segment(p.label, p.text) for p in pages if p.text)
    log.debug("ocr %s: %d pictures, %d pages read, %d skipped", mail.id, len(pictures), len(todo), len(skipped))
    return OcrResult(segments, tuple(dict.fromkeys(skipped)), len(todo))


def _count(label: str, labels: list[str]) -> str:
    """'page 2 and 3 more not read:' for pages of one file, 'not read:' for an image."""
    first = _page_of(label, labels[0])
    more = f" and {len(labels) - 1} more" if len(labels) > 1 else ""
    return f"{first}{more} not read:" if first else "not read:"


def _page_of(label: str, page_label: str) -> str:
    return page_label[len(label):].strip()


# ---- step 1: survey (in the pool) --------------------------------------------------------------

def _survey(picture: Picture, cfg: OcrSettings, langs: str, tmp: str, index: int, deadline: float) -> _Survey:
    survey = _Survey()
    digest = hashlib.sha256(picture.data).hexdigest()
    if picture.is_pdf:
        path = os.path.join(tmp, f"{index}.pdf")
        with open(path, "wb") as f:
            f.write(picture.data)
        try:
            texts, complete = poppler.page_texts(path, _remaining(deadline))
        except subprocess.TimeoutExpired:
            survey.skipped.append((picture.label, "the PDF's text layer could not be read within the time limit"))
            return survey
        if not complete:
            limit = f"{poppler.MAX_PAGES} pages or {poppler.MAX_TEXT // 2**20} MB of text"
            survey.skipped.append((picture.label, f"pages after {len(texts)} not examined (over the limit of {limit})"))
        scanned = poppler.pages_with_scans(path, _remaining(deadline)) if cfg.pdf_image_pages else set()
        for number, text in enumerate(texts, 1):
            bare = sum(not c.isspace() for c in text) < MIN_PAGE_TEXT
            if bare or number in scanned:
                survey.pages.append(_Page(picture, f"{picture.label} page {number}", number,
                                          f"{digest}:{number}:{langs}:{cfg.pdf_dpi}", path, optional=not bare))
        return survey
    from PIL import Image

    images._register_heif()
    try:
        with Image.open(io.BytesIO(picture.data)) as image:
            width, height = image.size
            frames = getattr(image, "n_frames", 1) if picture.kind == "tiff" else 1
    except Image.DecompressionBombError:
        survey.skipped.append((picture.label, f"too many pixels to decode (the limit is {cfg.max_pixels})"))
        return survey
    except Exception as e:      # Pillow on hostile bytes: anything it cannot open holds no text we can read
        log.debug("ocr: %s is not a readable image (%s)", picture.label, type(e).__name__)
        return survey
    if width * height < cfg.min_pixels:
        return survey
    if width * height > cfg.max_pixels:
        survey.skipped.append((picture.label, f"{width}x{height} pixels: too many to decode (the limit is "
                                              f"{cfg.max_pixels})"))
        return survey
    for frame in range(min(frames, MAX_FRAMES)):
        label = f"{picture.label} page {frame + 1}" if frames > 1 else picture.label
        survey.pages.append(_Page(picture, label, frame, f"{digest}:{frame}:{langs}"))
    if frames > MAX_FRAMES:
        survey.skipped.append((picture.label, f"pages {MAX_FRAMES + 1}-{frames} over the limit of {MAX_FRAMES}"))
    return survey


# ---- step 3: read (in the pool) ----------------------------------------------------------------

_LATE = "late"
BATCH = 4                   # pages per tesseract run: its start is paid once; a timeout loses at most these


def _read_batch(pages: list[_Page], cfg: OcrSettings, langs: str, tmp: str,
                deadline: float) -> list[tuple[str, str]]:
    """(text, "") or ("", why it was not read) for each page; why is _LATE when the message's time ran
    out. Pages go to tesseract BATCH at a time: one child process reads them all, so its start (the
    larger part of a page's cost) is paid once per batch."""
    import pytesseract

    results: list[tuple[str, str]] = [("", _LATE)] * len(pages)
    for start in range(0, len(pages), BATCH):
        sources: dict[int, str] = {}
        for i in range(start, min(start + BATCH, len(pages))):
            page = pages[i]
            remaining = _remaining(deadline)
            if remaining <= 0.05:
                break
            try:
                sources[i] = _straightened(poppler.render_page(page.path, page.page, round(11.7 * cfg.pdf_dpi),
                                                               remaining)) \
                    if page.picture.is_pdf else _frame(page, cfg, tmp)
            except subprocess.TimeoutExpired:
                break
            except ImageError as e:
                log.debug("ocr: %s: %s", page.label, e)
                results[i] = ("", "")
            except poppler.Unrendered:
                results[i] = ("", f"{_page_of(page.picture.label, page.label)} could not be rendered")
        if not sources:
            continue
        try:
            texts = _tesseract(list(sources.values()), langs, cfg.min_confidence, _remaining(deadline), tmp)
            for n, i in enumerate(sources, 1):
                results[i] = (texts.get(n, ""), "")
        except _Timeout:
            break
        except (pytesseract.TesseractError, OSError) as e:
            if len(sources) > 1:        # one picture failed the batch: read them one by one
                for i, source in sources.items():
                    results[i] = _read_one(pages[i], source, cfg, langs, tmp, deadline)
                continue
            [i] = sources
            results[i] = _refused(pages[i], e)
    return results


def _read_one(page: _Page, source: str, cfg: OcrSettings, langs: str, tmp: str, deadline: float) -> tuple[str, str]:
    import pytesseract

    try:
        return _tesseract([source], langs, cfg.min_confidence, _remaining(deadline), tmp).get(1, ""), ""
    except _Timeout:
        return "", _LATE
    except (pytesseract.TesseractError, OSError) as e:
        return _refused(page, e)


def _refused(page: _Page, error: Exception) -> tuple[str, str]:
    # a deterministic failure on this picture: retrying the message would fail the same way
    log.warning("ocr: tesseract failed on %s: %s", page.label, str(error)[:200])
    page_name = _page_of(page.picture.label, page.label)
    return "", f"{page_name + ' ' if page_name else ''}could not be read by tesseract"


def _straightened(path: str) -> str:
    """A rendered page with its text lines turned horizontal (a skewed scan), in place."""
    from PIL import Image

    with Image.open(path) as page:
        page.load()
        straight = images.deskew(page)
    if straight is not page:
        straight.save(path, "PPM")
    return path


def _frame(page: _Page, cfg: OcrSettings, tmp: str) -> str:
    """The image (frame) in grey as a PGM file: raw pixels, no compression to undo (cheaper than PNG)."""
    image = images.open_image(page.picture.data, cfg.max_pixels)
    if page.page:
        try:
            image.seek(page.page)
            image.load()
        except (EOFError, OSError, ValueError) as e:
            raise ImageError(f"frame {page.page} unreadable ({type(e).__name__})") from None
    try:
        gray = images.deskew(images.to_gray(image))
    except Exception as e:          # odd modes in hostile files
        raise ImageError(f"cannot be turned grey ({type(e).__name__})") from None
    path = os.path.join(tmp, f"{page.key.split(':')[0]}-{page.page}.pgm")
    gray.save(path, "PPM")
    return path


class _Timeout(Exception):
    pass


def _tesseract(sources: list[str], langs: str, min_confidence: int, timeout: float, tmp: str) -> dict[int, str]:
    """Text of each picture file (1-based, in order): the words tesseract is at least min_confidence
    sure of, in lines as it found them. Several files go to one tesseract run as a list file."""
    import pytesseract

    if timeout <= 0.05:
        raise _Timeout()
    source = sources[0]
    if len(sources) > 1:
        source = os.path.join(tmp, f"batch-{threading.get_ident()}-{time.monotonic_ns()}.txt")
        with open(source, "w") as f:
            f.write("\n".join(sources) + "\n")
    try:
        data = pytesseract.image_to_data(source, lang=langs, config="--psm 3", timeout=timeout,
                                         output_type=pytesseract.Output.DICT)
    except RuntimeError as e:       # pytesseract's "Tesseract process timeout"
        if "timeout" in str(e).lower():
            raise _Timeout() from None
        raise
    lines: dict[tuple[int, int, int, int], list[str]] = {}
    for word, conf, page, block, par, line in zip(data["text"], data["conf"], data["page_num"], data["block_num"],
                                                  data["par_num"], data["line_num"], strict=False):
        word = word.strip()
        if word and float(conf) >= min_confidence and any(c.isalnum() for c in word):
            lines.setdefault((page, block, par, line), []).append(word)
    texts: dict[int, list[str]] = {}
    for (page, *_), words in lines.items():
        texts.setdefault(page, []).append(" ".join(words))
    return {page: "\n".join(text)[:MAX_TEXT] for page, text in texts.items()}


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()
