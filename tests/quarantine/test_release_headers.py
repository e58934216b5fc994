"""A released message carries the headers a delivered one would: the Authentication-Results of its
receipt (the auth checks judge how it arrived and are not run again) and the X-Gateway-Scanned of the
release's own re-scan."""

from __future__ import annotations

import pytest

from gateway import cli
from gateway.headers import split
from tests.support import files
from tests.support.release_fixtures import make_release_site
from tests.support.review_fixtures import ThreadSink

FORGED = "Authentication-Results: gateway.test; dkim=pass header.d=example.gov; spf=pass; dmarc=pass\r\n"


@pytest.fixture
def sink():
    s = ThreadSink().start()
    yield s
    s.stop()


@pytest.fixture
def site(tmp_path, sink):
    site = make_release_site(tmp_path, sink)
    yield site
    site.scanner.stop()


def fields(data: bytes, name: str) -> list[str]:
    found = []
    for field in split(data)[0]:
        key, _, value = field.decode("utf-8", "replace").partition(":")
        if key.strip().lower() == name.lower():
            found.append(" ".join(value.split()))
    return found


def held_pdf(site, extra: str = ""):
    message = files.message_with([("report.pdf", files.pdf(), "application/pdf")], subject="Quarterly report")
    if extra:
        message = extra.encode() + message
    item = site.receive(message)
    assert item.rule == "inbound/unscanned"
    return item


def release(site, item_id: str, capsys) -> None:
    code = cli.main(["quarantine", "release", item_id, "--by", "rita", "--reason", "scanner was down",
                     "--config", site.config])
    out, err = capsys.readouterr()
    assert code == 0, (out, err)


def test_release_writes_receipt_auth_results_and_the_rescan_scanned_header(site, sink, capsys):
    item = held_pdf(site, FORGED)
    stored = site.item(item.id)
    assert stored.auth_results.startswith("gateway.test; ") and "spf=" in stored.auth_results
    assert "dkim=pass" not in stored.auth_results                # the sender's forged claim is not ours
    site.scanner.start()
    release(site, item.id, capsys)
    [got] = sink.messages
    assert fields(got.data, "Authentication-Results") == [stored.auth_results]
    [scanned] = fields(got.data, "X-Gateway-Scanned")
    assert scanned.startswith("ClamAV ")
    assert fields(got.data, "X-Gateway-Id") == [item.id]


def test_no_scanned_header_when_the_rescan_could_not_scan(site, sink, capsys):
    """clamd still down: the release of an unscanned message does not claim a scan (a reviewer chose it)."""
    item = held_pdf(site)
    release(site, item.id, capsys)
    [got] = sink.messages
    assert fields(got.data, "X-Gateway-Scanned") == []
    assert fields(got.data, "Authentication-Results") == [site.item(item.id).auth_results]


def test_an_item_held_before_the_value_was_stored_is_released_without_one(site, sink, capsys):
    item = held_pdf(site)

    async def forget(store):
        async with store._tx() as conn:
            await conn.execute("UPDATE held SET auth_results = '' WHERE id = ?", item.id)
    site.run(forget)
    site.scanner.start()
    release(site, item.id, capsys)
    [got] = sink.messages
    assert fields(got.data, "Authentication-Results") == []
    assert len(fields(got.data, "X-Gateway-Scanned")) == 1
