"""Bounding the nesting of hostile HTML before a parser sees it, in one linear pass.

HTML parsers (lexbor for text, html5ever under nh3 for the review preview) check scopes by walking
the stack of open elements, so their cost grows with size times depth: 1 MB of markup nested 30,000
deep took seconds of CPU in each. Mail is never legitimately nested hundreds deep, so markup whose
open elements go past MAX_DEPTH (counted by a tokenizer that knows void elements and the implied
ends of p, li, td, ...) is read by a tag stripper (`flat_text`) instead, for the detectors' text and
for the review app's preview. Markup with fewer than CHEAP_TAGS tags cannot cost much and is not scanned.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

MAX_DEPTH = 256
CHEAP_TAGS = 4000        # fewer "<" than this: the parsers' worst case is well under 0.1 s

_TOKEN = re.compile(r"<!--.*?(?:-->|\Z)|<(/?)([A-Za-z][^\s/>]*)[^>]*>?|<[!?][^>]*>?", re.S)
_VOID = frozenset({"area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "image", "img",
                   "input", "keygen", "link", "meta", "param", "source", "track", "wbr", "html", "head", "body"})
# Elements whose content is raw text (no tags); noscript is not: mail readers run no scripts, so they
# show what it holds, and so must we.
_RAW = frozenset({"script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "plaintext"})
_RAW_END = {name: re.compile(f"</{name}", re.I) for name in _RAW}
_UNSEEN = frozenset({"script", "style", "title", "iframe", "noembed", "noframes"})
_OPTIONAL_END = frozenset({"p", "li", "dd", "dt", "option", "optgroup", "tr", "td", "th", "tbody", "thead",
                           "tfoot", "colgroup", "caption", "rb", "rt", "rp", "rtc"})
# A start tag that ends the open element on top of the stack, as the parsers do.
_ENDS = {"li": {"li"}, "dd": {"dd", "dt"}, "dt": {"dd", "dt"}, "option": {"option"}, "td": {"td", "th"},
         "th": {"td", "th"}, "tr": {"tr", "td", "th"}, "tbody": {"tbody", "thead", "tfoot", "tr", "td", "th"},
         "thead": {"tbody", "thead", "tfoot", "tr", "td", "th"}, "tfoot": {"tbody", "thead", "tfoot", "tr", "td", "th"}}
_CLOSES_P = frozenset({"address", "article", "aside", "blockquote", "center", "details", "dialog", "dir", "div",
                       "dl", "fieldset", "figcaption", "figure", "footer", "header", "hgroup", "main", "menu", "nav",
                       "ol", "p", "section", "summary", "ul", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "listing",
                       "form", "li", "dd", "dt", "hr", "plaintext", "xmp"})
_BLOCK = frozenset({"p", "div", "br", "tr", "li", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6",
                    "blockquote", "pre", "hr", "section", "article", "header", "footer", "dd", "dt", "address",
                    "center", "form", "fieldset"})


def _tokens(markup: str, limit: int) -> Iterator[tuple[int, int, str, bool]]:
    """(start, end, tag name or "" for text/comment, kept) for every tag the depth count drops or keeps;
    text between them is not yielded. Linear: each search starts where the last one ended."""
    stack: list[str] = []
    dropped: dict[str, int] = {}
    pos, size = 0, len(markup)
    search = _TOKEN.search
    while pos < size:
        match = search(markup, pos)
        if match is None:
            return
        start, end = match.span()
        slash, name = match.group(1, 2)
        if not name:                                     # comment, doctype, processing instruction
            yield start, end, "", False
            pos = end
            continue
        name = name.lower()
        if slash:
            if dropped.get(name):
                dropped[name] -= 1
                yield start, end, name, False
            else:
                if stack and stack[-1] == name:
                    stack.pop()
                elif name in stack[-4:]:                 # past a few implied ends (</ul> after an open <li>)
                    at = len(stack) - 1 - stack[:-5:-1].index(name)
                    if all(x in _OPTIONAL_END for x in stack[at + 1:]):
                        del stack[at:]
                yield start, end, "/" + name, True
        elif name in _VOID:
            yield start, end, name, True
        else:
            ends = _ENDS.get(name, ())
            while stack and stack[-1] in ends:
                stack.pop()
            if name in _CLOSES_P and stack and stack[-1] == "p":
                stack.pop()
            if len(stack) >= limit:
                dropped[name] = dropped.get(name, 0) + 1
                yield start, end, name, False
            else:
                stack.append(name)
                yield start, end, name, True
            if name in _RAW:                             # raw text to its end tag, or to the end
                close = _RAW_END[name].search(markup, end)
                raw_end = close.start() if close else size
                if stack and stack[-1] == name and close is None:
                    stack.pop()
                yield end, raw_end, "#raw:" + name, True
                end = raw_end
        pos = end


def too_deep(markup: str, limit: int = MAX_DEPTH) -> bool:
    """Whether the markup's open elements would go past `limit` (only looked for in large markup)."""
    if markup.count("<") < CHEAP_TAGS:
        return False
    return any(not kept and name for _, _, name, kept in _tokens(markup, limit))


def flat_text(markup: str) -> str:
    """All the text of the markup, tags stripped in one pass: blocks on their own lines, cells apart,
    scripts, styles and comments left out, entities decoded. Nothing is treated as hidden, so no stack of
    open elements is kept: one search per tag (this runs on the deepest markup, 200,000 tags a megabyte)."""
    from gateway.message.text import normalise

    out: list[str] = []
    last = pos = 0
    size = len(markup)
    search = _TOKEN.search
    while (match := search(markup, pos)) is not None:
        start, end = match.span()
        out.append(markup[last:start])
        name = match.group(2)
        if name:
            name = name.lower()
            if name in _RAW and not match.group(1):          # raw text to its end tag, or to the end
                close = _RAW_END[name].search(markup, end)
                raw_end = close.start() if close else size
                if name not in _UNSEEN:
                    out.append(markup[end:raw_end])
                end = raw_end
            elif name in _BLOCK:
                out.append("\n")
            elif name in ("td", "th"):
                out.append(" ")
        last = pos = end
    out.append(markup[last:])
    return normalise(html.unescape("".join(out)))
