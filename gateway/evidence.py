"""Evidence is shown to people (notices, review pages, the API, the CLI, logs), so it passes one
masking step: every identifier the pii and credentials detectors recognise, at any confidence, is
replaced by their mask ("***-**-8471", "ghp_… (40 characters)", "********") wherever it appears.

`Finding` applies `mask` to its evidence and detail whoever made it, including findings read back
from the store. Detectors quoting message text build the quote with `excerpt`: at most LIMIT
characters around what matched, cut only after the text around it was masked, so that a cut never
leaves part of a number in the clear and the recognisers see the keywords near a value.
"""

from __future__ import annotations

LIMIT = 80
"""An excerpt of message text is at most this many characters, ellipses included."""
CONTEXT = 200
"""Characters on each side of the match that are masked before the excerpt is cut from them: more than
the widest keyword window a recogniser needs to accept a value next to the excerpt."""


def redactions(text: str) -> list[tuple[int, int, str]]:
    """(start, end, mask) of every recognised value in `text`, sorted, overlaps merged."""
    from gateway.detectors import credentials, pii  # they import gateway.model, which imports us lazily

    spans = sorted(pii.redactions(text) + credentials.redactions(text))
    merged: list[tuple[int, int, str]] = []
    for start, end, masked in spans:
        if merged and start < merged[-1][1]:
            first = merged[-1]
            if end > first[1]:
                merged[-1] = (first[0], end, first[2] if first[1] - first[0] >= end - start else masked)
            continue
        merged.append((start, end, masked))
    return merged


def mask(text: str) -> str:
    """`text` with every recognised value replaced by its mask (masked text comes back unchanged)."""
    if not text:
        return text
    return _apply(text, redactions(text), 0, 0)[0]


def excerpt(text: str, start: int, end: int, limit: int = LIMIT) -> str:
    """A masked one-line excerpt of at most `limit` characters around text[start:end], "…" where cut."""
    lo, hi = max(0, start - CONTEXT), min(len(text), end + CONTEXT)
    flat, s, e = _flatten(text[lo:hi], start - lo, end - lo)
    masked, s, e = _apply(flat, redactions(flat), s, e)
    if lo:
        masked, s, e = "…" + masked, s + 1, e + 1      # there was more before: never shown, but cut
    if hi < len(text):
        masked += "…"
    return _cut(masked, s, e, limit)


def _flatten(window: str, start: int, end: int) -> tuple[str, int, int]:
    """Blank runs as one space, with the match's new offsets (str.split: C speed)."""
    left = " ".join(window[:start].split())
    if left and window[start - 1].isspace():
        left += " "
    s = len(left)
    return " ".join(window.split()), s, s + len(" ".join(window[start:end].split()))


def _apply(text: str, spans: list[tuple[int, int, str]], start: int, end: int) -> tuple[str, int, int]:
    """The spans' masks put in, with the new offsets of text[start:end] (grown to cover a mask it touches)."""
    if not spans:
        return text, start, end
    out: list[str] = []
    last = shift = 0
    new_start, new_end = start, end
    for a, b, masked in spans:
        out += [text[last:a], masked]
        grow = len(masked) - (b - a)
        if a < start:
            new_start = a + shift if start < b else new_start + grow
        if a < end:
            new_end = a + shift + len(masked) if end <= b else new_end + grow
        shift += grow
        last = b
    out.append(text[last:])
    return "".join(out), new_start, max(new_start, new_end)


def _cut(text: str, start: int, end: int, limit: int) -> str:
    if len(text) <= limit:
        return text
    end = min(end, start + limit - 2)          # a match longer than the excerpt is itself cut
    room = limit - (end - start) - 2           # an ellipsis on each side reserved
    left = min(start, room // 2)
    right = min(len(text) - end, room - left)
    left = min(start, room - right)
    a, b = start - left, end + right
    return ("…" if a > 0 else "") + text[a:b] + ("…" if b < len(text) else "")
