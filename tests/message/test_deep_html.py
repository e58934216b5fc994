"""HTML nested tens of thousands of levels deep costs at most a second of CPU wherever it is read: the
text extraction on the SMTP path (every content detector shares it), HTML attachments, and the review
app's message page and sanitised preview; the message is still handled."""

from __future__ import annotations

import time

import pytest

from gateway.message.text import html_text
from gateway.model import Envelope
from gateway.review import render
from tests.support import contentmail as cm
from tests.support.peers import send
from tests.support.quarantine_fixtures import held_item

DEPTH = 30_000
SHAPES = {
    # the reported one: 1 MB, 30,000 levels of <div> with text at every level
    "div": ("<div>privileged and confidential " * DEPTH) + "</div>" * DEPTH,
    "blockquote": ("<blockquote>reply " * DEPTH) + "</blockquote>" * DEPTH,
    # siblings deep inside a chain: every hidden element or quotation asks about all its ancestors
    "hidden-under-spans": "<span>" * 15_000 + '<i style="display:none">x</i>' * 15_000,
    "quotes-under-spans": "<span>" * 15_000 + "<blockquote>x</blockquote>" * 15_000,
    # nesting a naive open/close count misses: misnested formatting, list items, optgroups
    "misnested": "<b><div></b>x" * 70_000,
    "list-items": "<li><dd>x" * 100_000,
    "optgroups": "<optgroup>x" * 90_000,
    # one style that a backtracking pattern rescanned per `height:0`
    "style": ('<span style="' + "height:0;" * 450 + '">x</span>') * 240,
}


def cpu(fn, *args):
    start = time.process_time()
    result = fn(*args)
    return time.process_time() - start, result


@pytest.mark.parametrize("shape", SHAPES)
def test_text_and_preview_of_deep_html_take_under_a_second(shape):
    from gateway.message import htmldepth

    markup = SHAPES[shape]
    spent, (visible, hidden) = cpu(html_text, markup)
    assert spent < 1.0, f"html_text {spent:.2f} s"
    if shape in ("div", "blockquote"):
        assert visible.count("confidential" if shape == "div" else "reply") == DEPTH      # no text is lost
    spent, preview = cpu(render.preview_body, markup)
    assert spent < 1.0, f"preview {spent:.2f} s"
    if shape != "style":            # deep: shown as its text, escaped; "style" is shallow and sanitised as usual
        assert htmldepth.too_deep(markup)
        assert preview.startswith("<p><em>This HTML is nested too deep") and "<pre>" in preview
        assert "<div" not in preview and "<li" not in preview and "<b>" not in preview


def test_deep_nesting_cannot_hide_text_or_make_it_quoted():
    """Past the depth limit every word counts as visible, new text, whatever the tags say."""
    markup = ('<span style="display:none">' + "<blockquote>" * 300 + "Attorney-Client Privileged"
              + "</blockquote>" * 300 + "</span>") * 20
    visible, hidden = html_text(markup)
    assert "Attorney-Client Privileged" in visible and "> Attorney" not in visible and hidden == ""
    visible, _ = html_text("<div>" * 300 + "<noscript>shown to readers</noscript>" + "<br>" * 4000)
    assert "shown to readers" in visible                             # mail readers run no scripts
    shallow, hidden = html_text('<span style="display:none">secret</span><p>shown</p>')
    assert (shallow, hidden) == ("shown", "secret")                 # ordinary mail is read as before


def deep_message() -> bytes:
    """HTML only (no text/plain alternative), so the review page reads the HTML for its text too."""
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@example.gov", "bob@example.org", "Deep"
    msg.set_content(SHAPES["div"], subtype="html", cte="base64")
    raw = msg.as_bytes()
    assert len(raw) > 1_000_000
    return raw


async def test_the_smtp_path_inspects_deep_html_within_a_second_and_still_decides(start_gateway, sink):
    gw = await start_gateway()
    raw = deep_message()
    pipeline = gw.gateway.pipeline
    envelope = Envelope("alice@example.gov", ("bob@example.org",), "127.0.0.1")
    await pipeline.inspect(envelope, cm.message("warm-up", html="<p>warm</p>"))
    start = time.process_time()
    inspection = await pipeline.inspect(envelope, raw)
    spent = time.process_time() - start
    assert spent < 1.0, f"inspection {spent:.2f} s, rule {inspection.verdict.rule}"
    assert "confidential.legal" in inspection.verdict.kinds, inspection.verdict       # the deep text was read
    attached = cm.message("See the page.", subject="Page", attachments=(("page.html", "text/html",
                                                                          SHAPES["misnested"].encode()),))
    start = time.process_time()
    inspection = await pipeline.inspect(envelope, attached)                 # an HTML attachment: documents.py
    assert time.process_time() - start < 1.0, inspection.verdict
    # and through a real SMTP session: held or delivered, never a crash or a 4xx
    code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], raw)
    assert code == 250, text
    [item] = await gw.store.list()
    assert "confidential.legal" in item.kinds and sink.messages == []


async def test_the_review_page_and_preview_of_deep_html_take_under_a_second(gw):
    item = held_item(subject="Deep", raw=deep_message(), kinds=("confidential.legal",))
    spent, rendered = cpu(render.render, gw.settings, item)
    assert spent < 1.0 and rendered is not None, f"render {spent:.2f} s"
    assert rendered.text_source == "text/html (as text)" and str(rendered.text).count("confidential") > 1000
    spent, preview = cpu(render.preview_html, gw.settings, item)
    assert spent < 1.0, f"preview {spent:.2f} s"
    assert preview.count("confidential") == DEPTH


def test_deep_markup_previewed_as_text_is_escaped():
    markup = ("<div>" * 400 + "&lt;script&gt;alert(1)&lt;/script&gt; <script>alert(2)</script>"
              '<a href="javascript:alert(3)" onclick="x()">link</a>' + "</div>" * 400) * 12
    preview = render.preview_body(markup)
    assert preview.startswith("<p><em>This HTML is nested too deep")
    assert "<script" not in preview.lower() and "<a " not in preview and "onclick" not in preview
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in preview and "alert(2)" not in preview and "link" in preview
