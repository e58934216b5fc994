"""The shared text extraction honours the configured [text] limits whichever detector asks first:
a content detector that runs before the others must not start it with the default limits."""

from __future__ import annotations

from gateway.model import Envelope
from tests.support.peers import make_message


def site(tmp_path, text: str) -> dict:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return {"site": str(path)}


async def test_text_limits_hold_when_a_detector_without_its_own_limits_reads_first(start_gateway, tmp_path):
    # commercial runs first and used to start the extraction with the default limits, so pii then read
    # the whole body and the configured limit was never reported.
    gw = await start_gateway(policy=site(tmp_path, '[detectors]\nenabled = ["commercial", "pii"]\n'),
                             text={"max_body_chars": 200})
    body = "Quarterly figures attached.\n" * 40
    inspection = await gw.gateway.pipeline.inspect(Envelope("alice@example.gov", ("bob@example.org",), "127.0.0.1"),
                                                   make_message(subject="figures", body=body))
    limited = [f for f in inspection.verdict.findings if f.kind == "unscanned.text_limits"]
    assert [f.detector for f in limited] == ["pii"]
    assert "200 character body limit" in limited[0].detail
