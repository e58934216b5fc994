"""adult_content: the detector's wiring with pictures made here (the built-in skin model, a plugged-in
model, NudeNet when its optional extra is installed), the policy end to end over SMTP, and the
blurred thumbnail the review page shows."""

from __future__ import annotations

import io
import random
import time

import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageStat

from gateway import config
from gateway.detectors import REGISTRY, OptionError
from gateway.detectors import adult_content as module
from gateway.detectors.adult_content import AdultContent
from gateway.message import images, mime
from gateway.model import Direction, Envelope, Mail
from gateway.scanners import adult_models
from tests.support import imagegen as gen
from tests.support.peers import send


@pytest.fixture(autouse=True)
def empty_cache():
    module._SCORES.clear()
    yield
    module._SCORES.clear()


def mail_of(raw: bytes, direction: Direction = Direction.INBOUND) -> Mail:
    return Mail("test", Envelope("x@outside.test", ("staff@example.gov",)), raw, mime.parse(raw), direction,
                time.time())


def detector(**options) -> AdultContent:
    return AdultContent(config.Settings(), options)


def skin_body(seed: int = 3) -> Image.Image:
    """A large shaded skin-toned shape on a dark background: what the skin heuristic looks for."""
    rng = random.Random(seed)
    image = Image.new("RGB", (640, 480), (30, 30, 35))
    draw = ImageDraw.Draw(image)
    for i in range(0, 150, 3):
        tone = (205 - i // 3 + rng.randint(-8, 8), 150 - i // 4 + rng.randint(-6, 6), 120 - i // 5)
        draw.ellipse((120 + i // 2, 20 + i // 3, 520 - i // 2, 470 - i // 3), fill=tone)
    return image.filter(ImageFilter.GaussianBlur(2))


def test_registered():
    assert REGISTRY["adult_content"] is AdultContent


def test_skin_model_scores_flat_colour_and_text_low_and_a_shaded_skin_shape_higher():
    model = adult_models.SkinModel()
    flat_blue = model.score(gen.flat())
    flat_beige = model.score(gen.flat((224, 172, 140)))      # skin-coloured, but a flat fill: no texture
    scan = model.score(gen.form())
    photo = model.score(gen.photo())
    body = model.score(skin_body())
    assert flat_blue == 0.0 and flat_beige == 0.0 and scan == 0.0 and photo < 0.1
    assert body > 0.3


async def test_message_without_pictures_pays_nothing(monkeypatch):
    def no_pool(*args, **kwargs):
        raise AssertionError("the worker pool was used for a message without pictures")
    monkeypatch.setattr(images, "run", no_pool)
    raw = gen.message(("notes.txt", "text/plain", b"a note on GIF89a"), html="<p>data:image/png;base64, only</p>")
    assert await detector().check(mail_of(raw)) == []


async def test_flat_colour_image_gives_no_finding():
    raw = gen.message(("blue.png", "image/png", gen.encode(gen.flat())), ("scan.png", "image/png",
                                                                        gen.encode(gen.form())))
    assert await detector().check(mail_of(raw)) == []


async def test_threshold_makes_a_finding_that_names_the_image():
    raw = gen.message(("beach.jpg", "image/jpeg", gen.encode(skin_body(), "JPEG")))
    [finding] = await detector(threshold=0.2).check(mail_of(raw))
    assert finding.kind == "adult_content.image" and finding.detector == "adult_content"
    assert finding.part == "part 2: beach.jpg"
    assert finding.score is not None and finding.score >= 0.2
    assert finding.detail == (f"Image part 2: beach.jpg looks like adult content (score {finding.score:.2f}, "
                              "threshold 0.20, skin model)")
    assert finding.evidence == (f"skin score {finding.score:.2f}",)


async def test_a_zipped_image_is_checked_and_named_by_its_member():
    from tests.support import files

    archive = files.zip_of({"holiday/beach.jpg": gen.encode(skin_body(), "JPEG"),
                            "holiday/notes.txt": b"see you Monday"}, deflate=True)
    raw = gen.message(("holiday.zip", "application/zip", archive))
    [finding] = await detector(threshold=0.2).check(mail_of(raw))
    assert finding.kind == "adult_content.image" and finding.part == "part 2: holiday.zip > holiday/beach.jpg"
    assert finding.score is not None and finding.score >= 0.2


class FixedModel:
    """A plugged-in model (what a site's own classifier looks like to the detector)."""

    name = "fixed"
    calls = 0

    def score(self, image) -> float:
        FixedModel.calls += 1
        return 0.97 if image.getpixel((0, 0)) == (255, 0, 0) else 0.01


async def test_a_plugged_in_model_is_used_once_per_distinct_image(monkeypatch):
    monkeypatch.setitem(adult_models.MODELS, "fixed", FixedModel)
    FixedModel.calls = 0
    red = gen.encode(gen.flat((255, 0, 0)))
    html = f'<p>hi</p><img src="{gen.data_uri(red)}">'
    raw = gen.message(("a.png", "image/png", red), ("b.png", "image/png", red),
                      ("green.png", "image/png", gen.encode(gen.flat((0, 200, 0)))), html=html)
    findings = await detector(model="fixed").check(mail_of(raw))
    assert [(f.part, f.score) for f in findings] == [
        ("part 1 inline image 1", 0.97), ("part 2: a.png", 0.97), ("part 3: b.png", 0.97)]
    assert FixedModel.calls == 2          # red once, green once
    again = await detector(model="fixed").check(mail_of(raw))
    assert len(again) == 3 and FixedModel.calls == 2
    doc = gen.message(("slides.docx", gen.DOCX, gen.docx(gen.encode(gen.flat((255, 0, 0), size=(300, 300))))))
    assert [f.part for f in await detector(model="fixed").check(mail_of(doc))] == ["part 2: slides.docx image 1"]


async def test_small_broken_and_non_images_are_not_judged(monkeypatch):
    monkeypatch.setitem(adult_models.MODELS, "fixed", FixedModel)
    red_icon = gen.encode(gen.flat((255, 0, 0), size=(32, 32)))
    raw = gen.message(("icon.png", "image/png", red_icon), ("broken.png", "image/png", red_icon[:60]),
                      ("bomb.png", "image/png", gen.bomb_png()),
                      ("scan.pdf", "application/pdf", gen.image_pdf(gen.flat((255, 0, 0)))))
    assert await detector(model="fixed").check(mail_of(raw)) == []


async def test_too_many_images_is_unscanned(monkeypatch):
    monkeypatch.setitem(adult_models.MODELS, "fixed", FixedModel)
    attachments = [(f"{i}.png", "image/png", gen.encode(gen.flat((0, 0, i)))) for i in range(3)]
    [finding] = await detector(model="fixed", max_images=2).check(mail_of(gen.message(*attachments)))
    assert finding.kind == "unscanned.image_limits" and finding.part == "part 4: 2.png"
    assert finding.detail == ("1 images were not checked for adult content: over the limit of 2 distinct images "
                              "per message")


def test_options_are_checked():
    with pytest.raises(OptionError, match="unknown adult-content model 'huge'"):
        detector(model="huge")
    with pytest.raises(OptionError, match="between 0 and 1"):
        detector(threshold=1.5)
    with pytest.raises(OptionError, match="unknown option 'colour'"):
        detector(colour="red")


def test_nudenet_is_an_optional_extra():
    try:
        import nudenet  # noqa: F401
    except ImportError:
        with pytest.raises(OptionError, match=r"pip install 'gateway\[adult\]'"):
            detector(model="nudenet")
        return
    model = adult_models.load("nudenet")
    assert model.score(gen.flat()) < 0.2 and model.score(gen.form()) < 0.2


async def test_inbound_adult_image_is_quarantined_over_smtp(start_gateway, sink, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text("[detectors.adult_content]\nthreshold = 0.2\n")
    gw = await start_gateway(policy={"site": str(site)})
    raw = gen.message(("beach.jpg", "image/jpeg", gen.encode(skin_body(), "JPEG")), sender="x@outside.test",
                      to="staff@example.gov")
    code, _, _ = await send(gw.port, "x@outside.test", ["staff@example.gov"], raw, source="127.0.0.2")
    assert code == 250 and sink.messages == []
    [held] = await gw.store.list()
    assert held.rule == "inbound/adult-content"
    [finding] = [f for f in held.findings if f.kind == "adult_content.image"]
    assert finding.part == "part 2: beach.jpg"


async def test_outbound_flat_colour_image_is_delivered_over_smtp(gw, sink):
    raw = gen.message(("chart.png", "image/png", gen.encode(gen.flat())))
    code, _, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], raw)
    assert code == 250
    [got] = await sink.wait_for(1)
    assert b'filename="chart.png"' in got.data
    assert await gw.store.list() == []


def test_blurred_thumbnail_is_small_and_blurred():
    sharp = gen.form()
    thumb = Image.open(io.BytesIO(images.blurred_thumbnail(gen.encode(sharp))))
    assert thumb.format == "JPEG" and max(thumb.size) <= 256
    # the black-on-white text is smeared into grey: nothing near black is left
    assert min(ImageStat.Stat(thumb.convert("L")).extrema[0]) > 120
    with pytest.raises(images.ImageError):
        images.blurred_thumbnail(b"not an image")


def test_thumbnail_for_the_part_a_finding_names():
    pdf = gen.image_pdf(gen.flat((255, 255, 255)), gen.flat((200, 0, 0)))
    raw = gen.message(("scan.pdf", "application/pdf", pdf), ("form.png", "image/png", gen.encode(gen.form())))
    parsed = mime.parse(raw)
    page2 = Image.open(io.BytesIO(images.thumbnail_for_part(parsed, "part 2: scan.pdf page 2")))
    red, green, blue = (int(v) for v in ImageStat.Stat(page2).mean)
    assert red > 150 and green < 60 and blue < 60          # page 2 (red), not page 1 (white)
    assert images.thumbnail_for_part(parsed, "part 3: form.png") is not None
    assert images.thumbnail_for_part(parsed, "part 9: missing.png") is None
