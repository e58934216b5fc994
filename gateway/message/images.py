"""Pictures in a message: which parts are images or PDFs (by their bytes, not their label), safe
decoding with pixel limits, the bounded worker pools for OCR and image classification, and a
blurred thumbnail for the review page.

Finding the candidates is a scan of the parts' first bytes, so a message without pictures pays a
loop over its parts and nothing else: no thread, no process, no decode.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import io
import itertools
import re
import threading
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.message import archives
from gateway.message.mime import ParsedMessage
from gateway.model import Mail

# Formats by their leading bytes. HEIC needs pi-heif or pillow-heif (optional: pip install .[heif]);
# without one, HEIC images are still found, but cannot be decoded.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"BM", "bmp"),
)
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif")
_DATA_URI = re.compile(rb"data:image/(?:png|jpe?g|gif|webp|bmp|tiff)\s*;\s*base64\s*,\s*([A-Za-z0-9+/=\s]{64,})", re.I)
MAX_DATA_URIS = 20                      # inline data: images read from one HTML body


@dataclass(frozen=True, slots=True)
class Picture:
    label: str          # "part 2: scan.png", "part 1 inline image 1": what a finding's `part` says
    kind: str           # "png", "jpeg", "gif", "tiff", "bmp", "webp", "heif", "pdf"
    data: bytes

    @property
    def is_pdf(self) -> bool:
        return self.kind == "pdf"


def sniff(data: bytes) -> str | None:
    """The picture format of these bytes, or None."""
    head = data[:32]
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            # "BM" is also the start of plenty of text; a real BMP has its size at offset 2
            if kind == "bmp" and (len(data) < 26 or int.from_bytes(data[2:6], "little") not in range(26, 2**31)):
                return None
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "heif"
    if b"%PDF-" in data[:1024]:
        return "pdf"
    return None


def may_hold_pictures(parsed: ParsedMessage) -> bool:
    """Could `pictures` find anything? First bytes only: cheap enough for the event loop, so that a
    message without pictures never reaches the worker pool."""
    for part in parsed.parts:
        if part.is_text:
            if part.content_type == "text/html" and _has_data_image(part.payload) \
                    and _DATA_URI.search(part.payload, 0, 2_000_000):
                return True
        elif sniff(part.payload) or _is_office(part):
            return True
    return False


def pictures(parsed: ParsedMessage, *, pdf: bool = True) -> list[Picture]:
    """Every image (and, with pdf=True, every PDF) in the message: attached, inline, data: URIs in
    HTML, and the pictures inside Office documents (a scan pasted into a Word file). Decompresses
    Office files, so call it in the worker pool (after may_hold_pictures)."""
    found: list[Picture] = []
    for part in parsed.parts:
        if part.is_text:
            if part.content_type == "text/html" and _has_data_image(part.payload):
                found.extend(_data_uris(part.payload, part.path))
            continue
        kind = sniff(part.payload)
        if kind and (pdf or kind != "pdf"):
            found.append(Picture(part.label, kind, part.payload))
        elif not kind and _is_office(part):
            found.extend(_office_media(part.payload, part.label))
    return found


def archived_roots(parsed: ParsedMessage) -> tuple[str, ...]:
    """Label prefixes ("part 2: scans.zip > ") of the attachments whose members `member_pictures` reads:
    archives, not the Office documents `pictures` already opens itself. First bytes only."""
    return tuple(f"{part.label} > " for part in parsed.attachments
                 if archives.sniff(part.payload) and not _is_office(part))


def member_pictures(files: Iterable[archives.File], roots: tuple[str, ...], *, pdf: bool = True) -> list[Picture]:
    """The pictures among the archive members under `roots` (gateway/message/archives.py files, opened
    once per message): images by their bytes at any depth (a scan zipped, a docx zipped: its media are
    members too), and PDFs with pdf=True. Their labels are the members' ("part 2: a.zip > scan.png")."""
    found: list[Picture] = []
    for f in files:
        if f.depth and not f.encrypted and f.data and f.label.startswith(roots) and not archives.sniff(f.data):
            kind = sniff(f.data)        # (a tar is not its first member: "%PDF-" at byte 512 is a member's)
            if kind and (pdf or kind != "pdf"):
                found.append(Picture(f.label, kind, f.data))
    return found


async def archived_pictures(mail: Mail, limits: archives.Limits, roots: tuple[str, ...], *,
                            pdf: bool) -> list[Picture]:
    """The pictures among the members of the archives under `roots` (`archived_roots`), from the message's
    shared inventory (opened once per message)."""
    if not roots:
        return []
    inventory = await archives.inventory(mail, limits)
    return member_pictures(inventory.files, roots, pdf=pdf)


def _has_data_image(html: bytes) -> bool:
    """'data:image' in any case within the first 2 MB (a substring test: a case-blind regex took 0.1 ms
    on a 17 KB newsletter)."""
    return b"data:image" in html[:2_000_000].lower()
_OFFICE_NAMES = (".docx", ".docm", ".dotx", ".xlsx", ".xlsm", ".pptx", ".pptm", ".ppsx", ".odt", ".ods", ".odp")
_OFFICE_MEDIA = re.compile(r"(?:word|xl|ppt)/media/[^/]+|Pictures/[^/]+")
MAX_OFFICE_ENTRIES = 5000           # zip entries looked at
MAX_OFFICE_MEDIA = 50               # pictures taken from one document
MAX_MEDIA_BYTES = 30 * 1024 * 1024  # one picture, decompressed
MAX_MEDIA_TOTAL = 100 * 1024 * 1024  # all pictures of one document, decompressed


def _is_office(part) -> bool:
    if not part.payload.startswith(b"PK\x03\x04"):
        return False
    names = [n.lower() for n in part.filenames]
    return any(n.endswith(_OFFICE_NAMES) for n in names) or "officedocument" in part.content_type \
        or "opendocument" in part.content_type


def _office_media(data: bytes, label: str) -> list[Picture]:
    """The pictures in an OOXML (word/media, xl/media, ppt/media) or ODF (Pictures/) document."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()[:MAX_OFFICE_ENTRIES]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        return []
    found: list[Picture] = []
    total = 0
    for info in entries:
        if not _OFFICE_MEDIA.fullmatch(info.filename) or info.file_size > MAX_MEDIA_BYTES:
            continue
        if info.compress_size and info.file_size / info.compress_size > 200:     # a zip bomb, not a picture
            continue
        total += info.file_size
        if total > MAX_MEDIA_TOTAL or len(found) >= MAX_OFFICE_MEDIA:
            break
        try:
            with archive.open(info) as member:
                body = member.read(MAX_MEDIA_BYTES + 1)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, NotImplementedError, zlib.error):
            continue
        kind = sniff(body)
        if kind and kind != "pdf" and len(body) <= MAX_MEDIA_BYTES:
            found.append(Picture(f"{label} image {len(found) + 1}", kind, body))
    return found


def _data_uris(html: bytes, path: str) -> list[Picture]:
    found = []
    for n, match in enumerate(_DATA_URI.finditer(html[:2_000_000]), 1):
        if n > MAX_DATA_URIS:
            break
        try:
            data = base64.b64decode(re.sub(rb"\s+", b"", match.group(1)))
        except (binascii.Error, ValueError):
            continue
        kind = sniff(data)
        if kind and kind != "pdf":
            found.append(Picture(f"part {path} inline image {n}", kind, data))
    return found


class ImageError(Exception):
    """An image that cannot be decoded, or is over the pixel limit."""


def open_image(data: bytes, max_pixels: int, draft: tuple[int, int] | None = None):
    """Decode an image with Pillow, refusing more than max_pixels before any pixel is decoded.

    Returns the Image with its first frame loaded; raises ImageError for anything unreadable. With
    `draft`, a JPEG is decoded at a reduced scale no smaller than that size (much cheaper).
    """
    from PIL import Image, UnidentifiedImageError

    _register_heif()
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(f"{width}x{height} pixels is over the {max_pixels} pixel limit")
        if draft and image.format == "JPEG":
            image.draft("RGB", draft)
        image.load()
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"too many pixels to decode (the limit is {max_pixels})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        raise ImageError(f"unreadable image ({type(e).__name__})") from None
    except Exception as e:      # Pillow's decoders on hostile bytes raise more than they document
        raise ImageError(f"unreadable image ({type(e).__name__})") from None
    return image


def pixel_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header alone; ImageError when Pillow cannot identify the bytes."""
    from PIL import Image

    _register_heif()
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Image.DecompressionBombError:
        raise ImageError("too many pixels to decode") from None
    except Exception as e:      # Pillow's parsers on hostile headers
        raise ImageError(f"unreadable image ({type(e).__name__})") from None


def to_gray(image):
    """A grey-scale copy, transparent areas on white (text drawn on a transparent background)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("L")


_heif_done = False


def _register_heif() -> None:
    """Let Pillow read HEIC/HEIF when pillow-heif is installed (it is optional)."""
    global _heif_done
    if _heif_done:
        return
    _heif_done = True
    for module in ("pi_heif", "pillow_heif"):
        try:
            __import__(module).register_heif_opener()
            return
        except (ImportError, AttributeError):
            continue


def skew_angle(gray) -> float:
    """The angle (degrees, counter-clockwise) that makes the text lines of a grey page horizontal,
    by the projection profile: the rotation whose row sums change most sharply from row to row
    (ink in lines, white between them). Searched in [-10, 10], 1 degree then 0.2 degree steps, on
    a small copy: tens of milliseconds."""
    from PIL import Image, ImageOps

    small = gray.copy()
    small.thumbnail((400, 400))
    ink = ImageOps.invert(ImageOps.autocontrast(small)).point(lambda v: 255 if v > 110 else 0)

    def sharpness(angle: float) -> float:
        turned = ink.rotate(angle, resample=Image.Resampling.NEAREST)
        rows = list(turned.resize((1, turned.height), Image.Resampling.BOX).tobytes())
        return float(sum((a - b) ** 2 for a, b in itertools.pairwise(rows)))

    coarse = max(range(-10, 11), key=lambda d: sharpness(float(d)))
    return max((coarse + f / 5 for f in range(-5, 6)), key=sharpness)


def deskew(gray, min_angle: float = 0.8):
    """The page turned so its text lines are horizontal (unchanged when they nearly are)."""
    from PIL import Image

    width, height = gray.size
    if min(width, height) < 200 or max(width, height) > 8 * min(width, height):
        return gray             # a strip or a banner: no page to straighten, and turning it would grow it
    angle = skew_angle(gray)
    if abs(angle) < min_angle:
        return gray
    return gray.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)


def blurred_thumbnail(data: bytes, *, size: int = 256, radius: float = 12.0, max_pixels: int = 50_000_000) -> bytes:
    """A small, heavily blurred JPEG of an image, for the review page to show before a click.

    Raises ImageError when the bytes are not a readable image.
    """
    from PIL import ImageFilter

    image = open_image(data, max_pixels)
    image.thumbnail((size, size))
    image = image.convert("RGB").filter(ImageFilter.GaussianBlur(radius))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=70)
    return out.getvalue()


def thumbnail_for_part(parsed: ParsedMessage, label: str, *, max_pixels: int = 50_000_000,
                       timeout: float = 20.0) -> bytes | None:
    """The blurred thumbnail of the image or PDF page a finding's `part` names ("part 2: scan.png",
    "part 1 inline image 1", "part 3: scan.pdf page 2", "part 4: fax.tif page 2"), or None.

    Blocking (decodes, may run pdftoppm): call it in a thread. For the review page.
    """
    base, _, page = label.rpartition(" page ")
    number = int(page) if base and page.isdigit() else 0
    candidates = {p.label: p for p in pictures(parsed)}
    picture = candidates.get(label) or (candidates.get(base) if number else None)
    if picture is None:
        return None
    data = picture.data
    if picture.is_pdf:
        data = _render_page(data, number or 1, timeout)
    elif number > 1:
        image = open_image(data, max_pixels)
        try:
            image.seek(number - 1)
            image.load()
        except (EOFError, OSError, ValueError):
            return None
        out = io.BytesIO()
        image.save(out, "PNG")
        data = out.getvalue()
    return blurred_thumbnail(data, max_pixels=max_pixels)


def _render_page(pdf: bytes, page: int, timeout: float) -> bytes:
    import tempfile

    from gateway.message import poppler

    with tempfile.TemporaryDirectory(prefix="gateway-thumb-") as tmp:
        path = f"{tmp}/in.pdf"
        with open(path, "wb") as f:
            f.write(pdf)
        try:
            with open(poppler.render_page(path, page, 512, timeout, gray=False), "rb") as f:
                return f.read()
        except poppler.Unrendered as e:
            raise ImageError(str(e)) from None


# ---- the worker pool ---------------------------------------------------------------------------

_pools: dict[tuple[str, int], concurrent.futures.ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def pool(workers: int, name: str = "ocr") -> concurrent.futures.ThreadPoolExecutor:
    """The process-wide pool `name` with this many workers ("ocr", "adult").

    Threads only wait on tesseract / poppler processes or run Pillow code that releases the GIL; the
    bound keeps a burst of scanned mail from starting more OCR processes than the machine has cores.
    Image classification has its own pool, so a quick score never queues behind a long OCR job.
    """
    workers = max(1, workers)
    with _pools_lock:
        if (name, workers) not in _pools:
            _pools[name, workers] = concurrent.futures.ThreadPoolExecutor(workers, f"{name}{workers}")
        return _pools[name, workers]


async def run(workers: int, fn, /, *args, pool_name: str = "ocr"):
    """fn(*args) in the named pool, awaited without blocking the event loop."""
    return await asyncio.get_running_loop().run_in_executor(pool(workers, pool_name), fn, *args)
