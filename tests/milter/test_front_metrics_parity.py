"""The same messages through the SMTP front end and through a real Postfix with the milter move the
per-message metrics the same way: gateway_messages_total, the category and DATA-reply counters and
the stage timings, under `front="smtp"` and `front="milter"` respectively."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from gateway import observability
from gateway.app import Gateway
from gateway.config import split_host_port
from tests.milter.test_postfix_both_modes import (
    MALFORMED,
    eicar_message,
    milter_postfix,
    milter_stack,
    settle,
    sink,
    site,
)
from tests.support.peers import make_message, send
from tests.support.postfix import postfix_available
from tests.support.settings import make_settings

pytestmark = pytest.mark.skipif(not postfix_available(), reason="needs /usr/sbin/postfix and root (scripts/setup test)")

__all__ = ["milter_postfix", "milter_stack", "sink"]         # the real Postfix's fixtures, used below

POLICY = ('[detectors.size]\nmax_message_bytes = 20000\n\n[[inbound.rules]]\nname = "no-big"\n'
          'match = ["oversize.message"]\naction = "reject"\nreply = "Too large for the department link"\n')
FAMILIES = ("gateway_messages_total", "gateway_message_categories_total", "gateway_data_replies_total",
            "gateway_stage_seconds_count")


def messages() -> list[tuple[str, list[str], bytes, int]]:
    """(sender, recipients, message, the SMTP client's reply code): delivered both ways, held as
    malformed and as a virus, and refused by the site's rule."""
    big = make_message(sender="mallory@example.org", to="bob@example.gov", subject="Minutes",
                       body="The minutes of the meeting, item by item.\n" * 800)
    return [
        ("mallory@example.org", ["bob@example.gov"],
         make_message(sender="mallory@example.org", to="bob@example.gov", subject="Lunch"), 250),
        ("alice@example.gov", ["carol@example.org"], make_message(subject="Agenda", to="carol@example.org"), 250),
        ("mallory@example.org", ["bob@example.gov"], MALFORMED, 250),
        ("mallory@example.org", ["bob@example.gov"], eicar_message(), 250),
        ("mallory@example.org", ["bob@example.gov"], big, 550),
    ]


def by_front(text: str, front: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(family, labels without `front`) -> value, for one front end's samples of FAMILIES."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:]+)\{(.*)\} (\S+)$", line)
        if not match or match.group(1) not in FAMILIES:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2)))
        if labels.pop("front", None) == front:
            found[(match.group(1), tuple(sorted(labels.items())))] += float(match.group(3))
    return found


def moved(before: str, after: str, front: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    old, new = by_front(before, front), by_front(after, front)
    return {key: new[key] - old.get(key, 0.0) for key in new if new[key] != old.get(key, 0.0)}


async def test_smtp_and_milter_fronts_move_the_same_metrics(milter_stack, sink, tmp_path):
    policy = site(tmp_path, POLICY)
    gateway, postfix = await milter_stack(policy=policy)
    smtp_settings = make_settings(tmp_path / "smtp", sink.port, policy=policy)
    (tmp_path / "smtp").mkdir()
    smtp = await Gateway.create(smtp_settings)
    await smtp.start_smtp()
    try:
        before = observability.render({}).decode()
        for sender, rcpts, message, expected in messages():
            code, text, _ = await send(split_host_port(smtp_settings.smtp.listen)[1], sender, rcpts, message)
            assert code == expected, text
            code, text, _ = await send(postfix.port, sender, rcpts, message)
            assert code == expected, text
        await settle(postfix)
        after = observability.render({}).decode()
    finally:
        await smtp.close()
    via_smtp, via_milter = moved(before, after, "smtp"), moved(before, after, "milter")

    def key(family: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return family, tuple(sorted(labels.items()))

    # What both should show, then that they show exactly the same.
    assert via_smtp[key("gateway_messages_total", direction="inbound", verdict="deliver", rule="inbound/default")] == 1
    assert via_smtp[key("gateway_messages_total", direction="outbound", verdict="deliver",
                        rule="outbound/default")] == 1
    assert via_smtp[key("gateway_messages_total", direction="inbound", verdict="quarantine",
                        rule="inbound/malformed")] == 1
    assert via_smtp[key("gateway_messages_total", direction="inbound", verdict="quarantine", rule="inbound/virus")] == 1
    assert via_smtp[key("gateway_messages_total", direction="inbound", verdict="reject", rule="inbound/no-big")] == 1
    assert via_smtp[key("gateway_message_categories_total", direction="inbound", category="virus")] == 1
    assert via_smtp[key("gateway_message_categories_total", direction="inbound", category="malformed")] == 1
    assert via_smtp[key("gateway_message_categories_total", direction="inbound", category="oversize")] == 1
    assert via_smtp[key("gateway_data_replies_total", code="2xx")] == 4
    assert via_smtp[key("gateway_data_replies_total", code="5xx")] == 1
    for stage in ("parse", "detectors", "policy", "action", "total"):
        assert via_smtp[key("gateway_stage_seconds_count", stage=stage)] == 5, stage
    assert via_milter == via_smtp
