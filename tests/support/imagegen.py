"""Pictures made at test time for the OCR and adult-content tests: scanned forms, image-only and
text-layer PDFs, logos, photo-like pictures and flat colours (Pillow and its bundled font)."""

from __future__ import annotations

import base64
import io
import random
import struct
import zipfile
import zlib
from email.message import EmailMessage

from PIL import Image, ImageDraw, ImageFilter, ImageFont

SSN = "536-22-8145"          # a well-formed SSN (area 536, group 22, serial 8145), not an advertising number
FORM_LINES = ("CONFIDENTIAL", "EMPLOYEE RECORD", f"SOCIAL SECURITY NUMBER {SSN}")


def form(lines: tuple[str, ...] = FORM_LINES, size: tuple[int, int] = (1240, 1754)) -> Image.Image:
    """A scanned form: an A4 page at 150 dpi with large, clear text."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=40)
    for i, line in enumerate(lines):
        draw.text((100, 120 + 90 * i), line, fill=0, font=font)
    return image


def photographed(angle: float = 5.0, lines: tuple[str, ...] = FORM_LINES) -> bytes:
    """A form photographed slightly askew: turned, blurred, grainy, a low-quality JPEG."""
    page = form(lines).rotate(angle, expand=True, fillcolor=235).filter(ImageFilter.GaussianBlur(0.8))
    page = Image.blend(page, Image.effect_noise(page.size, 40), 0.15)
    return encode(page.convert("RGB"), "JPEG", quality=55)


def logo(text: str = "ACME CONFIDENTIAL") -> Image.Image:
    """A signature logo: small, with text in it."""
    image = Image.new("RGB", (160, 40), (255, 255, 255))
    ImageDraw.Draw(image).text((4, 8), text, fill=(0, 0, 120), font=ImageFont.load_default(size=14))
    return image


def photo(seed: int = 7, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """Photo-like: a sky gradient with soft blobs, no text."""
    rng = random.Random(seed)
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    image = Image.merge("RGB", (image.getchannel(0).point(lambda v: v // 3),
                                image.getchannel(0).point(lambda v: 80 + v // 3),
                                image.getchannel(0).point(lambda v: 120 + v // 2)))
    draw = ImageDraw.Draw(image)
    for _ in range(25):
        x, y, r = rng.randrange(size[0]), rng.randrange(size[1]), rng.randrange(20, 120)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(rng.randrange(40, 120), rng.randrange(90, 200), 60))
    return image.filter(ImageFilter.GaussianBlur(6))


def flat(colour: tuple[int, int, int] = (30, 90, 200), size: tuple[int, int] = (800, 600)) -> Image.Image:
    return Image.new("RGB", size, colour)


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    if fmt in ("JPEG", "BMP") and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image.save(out, fmt, **options)
    return out.getvalue()


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG whose header claims a huge picture (a decompression bomb): a few hundred bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = zlib.compress(b"\0" * (width + 1) * 4)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def image_pdf(*pages: Image.Image) -> bytes:
    """A PDF whose pages are pictures only (no text layer), as a scanner makes."""
    out = io.BytesIO()
    pages[0].save(out, "PDF", resolution=150, save_all=True, append_images=list(pages[1:]))
    return out.getvalue()


def text_pdf(text: str, picture: Image.Image | None = None) -> bytes:
    """A one-page PDF with a real text layer (Helvetica), written by hand; with `picture`, that picture
    is pasted below the text (a scan in a typed cover page)."""
    stream = f"BT /F1 24 Tf 72 700 Td ({text}) Tj ET".encode("latin-1")
    xobject = b""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"",
        b"",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    if picture is not None:
        gray = picture.convert("L")
        pixels = zlib.compress(gray.tobytes())
        objects.append(b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
                       b"/BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n" % (*gray.size, len(pixels))
                       + pixels + b"\nendstream")
        stream += b" q 468 0 0 %d 72 80 cm /Im1 Do Q" % round(468 * gray.size[1] / gray.size[0])
        xobject = b" /XObject << /Im1 6 0 R >>"
    objects[2] = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
                  b"/Resources << /Font << /F1 5 0 R >>" + xobject + b" >> >>")
    objects[3] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def docx(*pictures: bytes) -> bytes:
    """A minimal Word document whose pictures are in word/media, as when a scan is pasted into it."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                                          'package/2006/content-types"/>')
        z.writestr("word/document.xml", "<w:document/>")
        for n, data in enumerate(pictures, 1):
            z.writestr(f"word/media/image{n}.png", data)
        z.writestr("word/media/bomb.png", b"\0" * 5_000_000)      # compresses 1000:1: skipped as a zip bomb
    return out.getvalue()


DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def message(*attachments: tuple[str, str, bytes], sender: str = "alice@example.gov", to: str = "bob@example.org",
            subject: str = "Scans", body: str = "Please see the attached.\n", html: str | None = None) -> bytes:
    """A message with (filename, content type, bytes) attachments; `html` adds an HTML alternative."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Date"] = "Sun, 29 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = f"<img-{abs(hash((subject, len(attachments))))}@example.gov>"
    if html is not None:
        msg.set_content(html, subtype="html")
    else:
        msg.set_content(body)
    for filename, ctype, data in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def data_uri(data: bytes, ctype: str = "image/png") -> str:
    return f"data:{ctype};base64,{base64.b64encode(data).decode()}"
