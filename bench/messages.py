"""The benchmark's message mix, generated at run time (deterministic): text, HTML newsletter, attachments."""

from __future__ import annotations

import base64
import random
import textwrap

_WORDS = ("the department budget report meeting schedule project review staff quarterly policy update team "
          "please find attached notes from today office travel request approval training course deadline "
          "minutes agenda draft final figures contract supplier invoice network access account")
WORDS = _WORDS.split(" ")


def _prose(rng: random.Random, size: int) -> str:
    out, total = [], 0
    while total < size:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18))).capitalize() + "."
        out.append(sentence)
        total += len(sentence) + 1
    return "\n".join(textwrap.fill(p, 72) for p in _paragraphs(out, rng))


def _paragraphs(sentences: list[str], rng: random.Random) -> list[str]:
    paragraphs, i = [], 0
    while i < len(sentences):
        n = rng.randint(2, 6)
        paragraphs.append(" ".join(sentences[i:i + n]) + "\n")
        i += n
    return paragraphs


def _headers(subject: str, content_type: str, n: int) -> str:
    return (f"From: Alice Example <alice@example.gov>\nTo: Bob <bob@example.org>\nSubject: {subject}\n"
            f"Date: Sun, 29 Nov 2026 10:00:00 +0000\nMessage-ID: <bench-{n}@example.gov>\nMIME-Version: 1.0\n"
            f"{content_type}\n")


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def text_message(rng: random.Random, size: int = 5 * 1024) -> bytes:
    body = _prose(rng, size - 300)
    return _crlf(_headers("Weekly notes", "Content-Type: text/plain; charset=utf-8", 1) + "\n" + body + "\n")


def html_message(rng: random.Random, size: int = 20 * 1024) -> bytes:
    text = _prose(rng, 3000)
    rows = []
    total = 0
    while total < size - 4000:
        para = _prose(rng, 300).replace("\n", " ")
        row = (f'<tr><td style="padding:12px;font-family:Arial,sans-serif;font-size:14px;color:#333333">'
               f'<h2 style="margin:0 0 8px 0">{rng.choice(WORDS).title()} {rng.choice(WORDS)}</h2>\n'
               f'<p style="margin:0">{para}</p>\n<a href="https://intranet.example.gov/news/{total}">Read more</a>'
               f'</td></tr>\n')
        rows.append(row)
        total += len(row)
    html = ('<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Newsletter</title></head>\n<body>\n'
            '<table width="600" cellpadding="0" cellspacing="0" border="0">\n' + "".join(rows)
            + '</table>\n</body></html>')
    html = "\n".join(textwrap.wrap(html, 180, break_long_words=False, replace_whitespace=False))
    boundary = "=_newsletter_boundary_42"
    body = (f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n\n{text}\n"
            f"--{boundary}\nContent-Type: text/html; charset=utf-8\n\n{html}\n--{boundary}--\n")
    return _crlf(_headers("Department newsletter", f'Content-Type: multipart/alternative; boundary="{boundary}"', 2)
                 + "\n" + body)


def attachment_message(rng: random.Random, size: int, name: str) -> bytes:
    raw_size = size * 3 // 4 - 2000
    payload = b"%PDF-1.4\n" + rng.randbytes(raw_size)
    encoded = base64.encodebytes(payload).decode("ascii")
    boundary = "=_attachment_boundary_7"
    body = (f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n\nPlease find the file attached.\n"
            f"--{boundary}\nContent-Type: application/pdf; name=\"{name}\"\n"
            f"Content-Disposition: attachment; filename=\"{name}\"\nContent-Transfer-Encoding: base64\n\n"
            f"{encoded}--{boundary}--\n")
    return _crlf(_headers("Report attached", f'Content-Type: multipart/mixed; boundary="{boundary}"', 3) + "\n" + body)


def build(seed: int = 1) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {
        "text5k": text_message(rng),
        "html20k": html_message(rng),
        "att1m": attachment_message(rng, 1024 * 1024, "report.pdf"),
        "att10m": attachment_message(rng, 10 * 1024 * 1024, "archive.pdf"),
    }


# Mixes: name -> [(message type, weight)]
MIXES = {
    "text+html": [("text5k", 1), ("html20k", 1)],
    "full": [("text5k", 45), ("html20k", 45), ("att1m", 9), ("att10m", 1)],
    "text5k": [("text5k", 1)],
    "html20k": [("html20k", 1)],
    "att1m": [("att1m", 1)],
    "att10m": [("att10m", 1)],
}
