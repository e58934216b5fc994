"""Messages through the milter front end are measured like those through the SMTP front end: the
per-message counters and stage timings on /metrics move, labelled with the front end."""

from __future__ import annotations

import httpx

from gateway import observability
from gateway.milter import codec
from tests.milter.test_session import MALFORMED
from tests.milter.test_session import client_for as client_for
from tests.milter.test_session import start_milter as start_milter
from tests.smtp.test_data_reader_workers_metrics import _sample
from tests.support.milter_client import MilterClient
from tests.support.peers import make_message


async def _metrics(gateway) -> str:
    observer = observability.Observer(gateway.settings, gateway.store, gateway.pipeline.detectors)
    server = await observability.MetricsServer(observer, "127.0.0.1:0").start()
    try:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"http://127.0.0.1:{server.port}/metrics")).text
    finally:
        await server.stop()


async def test_milter_messages_move_the_message_counters_and_stage_timings(start_milter, client_for):
    gateway = await start_milter()
    before = await _metrics(gateway)
    c: MilterClient = await client_for(gateway, client="127.0.0.1")
    for _ in range(2):
        replies = await c.message(make_message(), "alice@example.gov", ["carol@example.org"])
        assert replies[-1].command == codec.SMFIR_CONTINUE
    replies = await c.message(MALFORMED, "mallory@example.org", ["bob@example.gov"])
    assert [r.command for r in replies] == [codec.SMFIR_DISCARD]          # held in our quarantine
    after = await _metrics(gateway)

    def delta(name: str, **labels: str) -> float:
        return (_sample(after, name, **labels) or 0.0) - (_sample(before, name, **labels) or 0.0)

    assert delta("gateway_messages_total", front="milter", direction="outbound", verdict="deliver",
                 rule="outbound/default") == 2
    assert delta("gateway_messages_total", front="milter", direction="inbound", verdict="quarantine",
                 rule="inbound/malformed") == 1
    assert delta("gateway_message_categories_total", front="milter", direction="inbound", category="malformed") == 1
    assert delta("gateway_data_replies_total", front="milter", code="2xx") == 3
    assert delta("gateway_stage_seconds_count", front="milter", stage="parse") == 3
    assert delta("gateway_stage_seconds_count", front="milter", stage="total") == 3
    assert delta("gateway_detector_seconds_count", detector="mime") == 3
