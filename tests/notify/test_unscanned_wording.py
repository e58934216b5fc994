"""A file the virus scanner could not check: the staff notice says what happened in plain words (the
scanner was down, or the file is encrypted), never the scanner's socket path, host or port."""

from __future__ import annotations

import pytest

from tests.notify.test_notices_end_to_end import hold, notifier, parsed, text_of
from tests.support import files
from tests.support.peers import free_port

NOTIFY = {"from": "policy@example.gov", "base_url": "https://review.example.gov"}


async def notice_text(gw, sink, message: bytes) -> tuple[str, list]:
    item_id = await hold(gw, message)
    item = await gw.store.get(item_id)
    assert item is not None and item.status == "held" and item.rule == "outbound/unscanned", item
    await (await notifier(gw)).run_once()
    [received] = [m for m in sink.messages if m.rcpt_tos == ["alice@example.gov"]]
    notice = parsed(received)
    return text_of(notice) + "\n" + notice.get_body(("html",)).get_content(), item.findings


def outbound(name: str, data: bytes, ctype: str) -> bytes:
    return files.message_with([(name, data, ctype)], sender="alice@example.gov", to="bob@example.org",
                              subject="The report")


@pytest.mark.parametrize("address", ["unix:///run/nowhere/clamd-{port}.ctl", "tcp://127.0.0.1:{port}"])
async def test_scanner_down_says_the_scanner_was_unavailable_without_paths_or_hosts(start_gateway, sink, address):
    port = free_port()
    gw = await start_gateway(antivirus={"clamd": address.format(port=port)}, notify=NOTIFY)
    text, findings = await notice_text(gw, sink, outbound("report.pdf", files.pdf(), "application/pdf"))
    assert "unscanned.scanner_unavailable" in [f.kind for f in findings]
    for detail in [f.detail for f in findings] + [text]:
        for internal in ("clamd", "unix:", "/run/nowhere", "127.0.0.1", str(port), "tcp:", "Errno", "refused"):
            assert internal not in detail, (internal, detail)
    assert "virus scanner was not available" in text and "report.pdf" in text
    assert "encrypted" not in text and "too large" not in text


async def test_encrypted_file_says_it_is_encrypted(start_gateway, sink, tmp_path):
    gw = await start_gateway(notify=NOTIFY)
    zipped = files.encrypted_zip(tmp_path, "plan.txt", b"the plan\n" * 50)
    text, findings = await notice_text(gw, sink, outbound("plan.zip", zipped, "application/zip"))
    assert "unscanned.encrypted" in [f.kind for f in findings]
    assert "encrypted" in text and "plan" in text
    assert "clamd" not in text and "Heuristics." not in text and "not available" not in text
