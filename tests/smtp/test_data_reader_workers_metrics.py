"""The fast path: the chunked DATA reader, worker processes with a graceful drain, /metrics and /healthz."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import observability
from gateway.smtp.dataread import DataState, Spool, read_data
from tests.support.peers import RawClient, Sink, free_port, make_message, send

MAX_LINE = 999          # aiosmtpd: a line of more than 1001 bytes with its CRLF is too long


# ---------------------------------------------------------------------------------------------------
# The reader against a line-at-a-time reference (aiosmtpd's semantics), over random chunkings


def reference(stream: bytes, size_limit: int | None) -> tuple[set[DataState], bytes, bytes, bool] | None:
    """(possible states, unstuffed data, bytes left for the next command, smuggling look-alike seen);
    None if never terminated. Only CRLF "." CRLF ends the data (looked for in the bytes as received);
    then CR LF and bare LF both end a line (Postfix's reading), and every line end becomes CRLF."""
    from gateway.detectors.mime import _SMUGGLING
    i = (b"\r\n" + stream).find(b"\r\n.\r\n")
    if i < 0:
        return None
    raw, rest = stream[:i], stream[i + 3:]                   # raw: the data as sent, its final CRLF included
    smuggling = _SMUGGLING.search(b"\r\n" + raw + b".\r\n") is not None
    lines = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").split(b"\r\n")[:-1]
    states = set()
    if size_limit and len(raw) > size_limit:
        states.add(DataState.TOO_MUCH)
    if any(len(line) > MAX_LINE for line in lines):
        states.add(DataState.TOO_LONG)
    data = b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return states or {DataState.NOMINAL}, data, rest, smuggling


async def run_reader(stream: bytes, cuts: list[int], size_limit: int | None) -> tuple[DataState, bytes, bytes, bool]:
    reader = asyncio.StreamReader(limit=1001)

    async def feed() -> None:
        last = 0
        for cut in [*sorted(set(cuts)), len(stream)]:
            if cut > last:
                reader.feed_data(stream[last:cut])
                last = cut
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.ensure_future(feed())
    spool = Spool(threshold=64)
    state = await read_data(reader, spool, size_limit=size_limit, max_line=MAX_LINE)
    data = spool.getvalue() if state is DataState.NOMINAL else b""
    spool.close()
    await feeder
    return state, data, await reader.read(), spool.smuggling


TOKENS = [b"\r", b"\n", b".", b"..", b"a", b"Hello world", b"\r\n", b".\r\n", b"\r\n.\r\n", b"\x00", b"\xff\xfe",
          b"x" * 998, b"y" * 1200, b"\r\n..\r\n", b"\n.\n", b"\r.\r", b"z" * 600 + b"\n", b"\n..", b"\n.\r\n"]


@settings(max_examples=300, deadline=None)
@given(body=st.lists(st.sampled_from(TOKENS), max_size=40), cuts=st.lists(st.integers(0, 6000), max_size=12),
       size_limit=st.sampled_from([None, 20, 500, 3000]))
def test_chunked_reader_matches_line_reader(body, cuts, size_limit):
    stream = b"".join(body) + b"\r\n.\r\nNOOP\r\n"
    expected = reference(stream, size_limit)
    assert expected is not None
    states, data, rest, smuggling = expected
    state, got, left, seen = asyncio.run(run_reader(stream, cuts, size_limit))
    assert state in states
    assert left == rest                      # pipelined bytes after the end stay for the next command
    if state is DataState.NOMINAL:
        assert got == data
        assert seen == smuggling             # found in the bytes as received, whatever the chunking


@pytest.mark.parametrize("stream, data", [
    (b".\r\n", b""),                                     # a "." line right after DATA: empty message
    (b"\r\n.\r\n", b"\r\n"),
    (b"..\r\n.\r\n", b".\r\n"),                          # dot-unstuffing on the first line
    (b"a\r\n...b\r\n.c\r\n.\r\n", b"a\r\n..b\r\nc\r\n"),
    (b"a\n.\nb\r.\rc\r\n.\r\n", b"a\r\n\r\nb\r.\rc\r\n"),   # bare LF / CR never end the data
    (b"a\nb\n..c\r\n.\r\n", b"a\r\nb\r\n.c\r\n"),           # bare LF ends a line: CRLF, unstuffed
    (b"\n" + b"v" * 900 + b"\n" + b"w" * 900 + b"\r\n.\r\n", b"\r\n" + b"v" * 900 + b"\r\n" + b"w" * 900 + b"\r\n"),
])
async def test_reader_exact_cases(stream, data):
    state, got, left, _ = await run_reader(stream + b"QUIT\r\n", [1, 2, 3, 4, 5], None)
    assert (state, got, left) == (DataState.NOMINAL, data, b"QUIT\r\n")


async def test_reader_spools_large_data_to_disk():
    reader = asyncio.StreamReader(limit=1001)
    payload = (b"z" * 900 + b"\r\n") * 2000
    reader.feed_data(payload + b".\r\n")
    spool = Spool(threshold=100_000)
    assert await read_data(reader, spool, size_limit=None, max_line=MAX_LINE) is DataState.NOMINAL
    assert spool.on_disk and spool.size == len(payload)
    assert spool.getvalue() == payload
    spool.close()


# ---------------------------------------------------------------------------------------------------
# The reader in real sessions through the gateway


SMUGGLING = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n\x00.\r\n", b"\r.\r", b"\n.\r", b"\r\n.\r"]


@pytest.mark.parametrize("reader", ["chunked", "lines"])
async def test_smuggling_never_splits_a_transaction(start_gateway, sink, reader):
    gw = await start_gateway(smtp={"data_reader": reader})
    for seq in SMUGGLING:
        client = await RawClient.connect(gw.port)
        try:
            await client.cmd("EHLO client.test")
            await client.cmd("MAIL FROM:<alice@example.gov>")
            await client.cmd("RCPT TO:<bob@example.org>")
            code, text = await client.send_data(b"Subject: first\r\n\r\nhello" + seq + b"MAIL FROM:<evil@example.gov>"
                                                b"\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nSubject: smuggled\r\n")
            assert code == 250, (seq, text)
            assert (await client.cmd("NOOP"))[0] == 250, seq
        finally:
            await client.close()
    await asyncio.sleep(0.05)
    assert not any(m.mail_from == "evil@example.gov" for m in sink.messages)
    held = await gw.store.list()
    assert held and all("malformed.smtp_smuggling" in item.kinds for item in held)
    assert len(held) + len(sink.messages) == len(SMUGGLING)


async def test_dot_unstuffing_and_8bit_binary_arrive_intact(gw, sink):
    body = bytes(b for b in range(256) if b not in (10, 13)) * 3
    message = (b"From: alice@example.gov\r\nTo: bob@example.org\r\nSubject: bin\r\n\r\n"
               b".leading dot\r\n..two dots\r\n.\x00\r\n" + body + b"\r\n...\r\nend\r\n")
    client = await RawClient.connect(gw.port)
    try:
        await client.cmd("EHLO client.test")
        await client.cmd("MAIL FROM:<alice@example.gov> BODY=8BITMIME")
        await client.cmd("RCPT TO:<bob@example.org>")
        stuffed = message.replace(b"\r\n.", b"\r\n..")
        code, text = await client.send_data(stuffed.removesuffix(b"\r\n"))
        assert code == 250, text
    finally:
        await client.close()
    [got] = await sink.wait_for(1)
    assert got.data.endswith(message)


async def test_oversize_answers_552_after_draining_and_session_continues(start_gateway, sink):
    gw = await start_gateway(smtp={"max_message_size": 50_000})
    client = await RawClient.connect(gw.port)
    try:
        await client.cmd("EHLO client.test")
        await client.cmd("MAIL FROM:<alice@example.gov>")
        await client.cmd("RCPT TO:<bob@example.org>")
        code, text = await client.send_data(make_message(body="x" * 900 + "\r\n") * 100)
        assert code == 552 and "5.3.4" in text
        assert (await client.cmd("NOOP"))[0] == 250           # in step: the rest was drained, not read as commands
        assert (await client.cmd("MAIL FROM:<alice@example.gov>"))[0] == 250
        assert (await client.cmd("RCPT TO:<bob@example.org>"))[0] == 250
        assert (await client.send_data(make_message()))[0] == 250
    finally:
        await client.close()
    assert len(await sink.wait_for(1)) == 1 and b"x" * 900 not in sink.messages[0].data


async def test_very_long_line_answers_500(gw, sink):
    client = await RawClient.connect(gw.port)
    try:
        await client.cmd("EHLO client.test")
        await client.cmd("MAIL FROM:<alice@example.gov>")
        await client.cmd("RCPT TO:<bob@example.org>")
        code, text = await client.send_data(b"Subject: long\r\n\r\n" + b"w" * 200_000)
        assert code == 500 and "5.5.2" in text
        assert (await client.cmd("NOOP"))[0] == 250
        code, _ = await client.cmd("MAIL FROM:<alice@example.gov>")
        assert code == 250
        await client.cmd("RCPT TO:<bob@example.org>")
        code, _ = await client.send_data(b"Subject: ok\r\n\r\n" + b"w" * 999)      # exactly the limit
        assert code == 250
    finally:
        await client.close()
    assert len(await sink.wait_for(1)) == 1


async def test_ten_megabyte_message_arrives_intact_through_the_spool(start_gateway, sink):
    # text limits raised so that 10 MB of plain text is read by the content detectors, not held unread
    gw = await start_gateway(smtp={"spool_threshold": 1_000_000, "memory_budget": 4_000_000},
                             text={"max_body_chars": 20_000_000, "max_chars": 20_000_000})
    line = bytes(range(33, 127)) + b"\r\n"
    body = line * (10 * 1024 * 1024 // len(line))
    message = make_message(subject="big", body="") + body
    before = _sample(observability.render({}), "gateway_spooled_messages_total") or 0.0
    code, text, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], message)
    assert code == 250, text
    [got] = await sink.wait_for(1)
    assert got.data.endswith(message) and len(got.data) < len(message) + 200
    assert _sample(observability.render({}), "gateway_spooled_messages_total") == before + 1


# ---------------------------------------------------------------------------------------------------
# /metrics and /healthz


def _sample(text: bytes | str, name: str, **labels: str) -> float | None:
    if isinstance(text, bytes):
        text = text.decode()
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:]+)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


@pytest.fixture
async def observed(gw):
    observer = observability.Observer(gw.settings, gw.store, gw.gateway.pipeline.detectors)
    server = await observability.MetricsServer(observer, "127.0.0.1:0").start()
    yield gw, f"http://127.0.0.1:{server.port}"
    await server.stop()


async def test_metrics_after_a_few_messages(observed, sink):
    gw, base = observed
    async with httpx.AsyncClient() as http:
        before = (await http.get(f"{base}/metrics")).text
        for _ in range(2):
            assert (await send(gw.port, "alice@example.gov", ["bob@example.org"], make_message()))[0] == 250
        malformed = (b"From: alice@example.gov\r\nSubject: r\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; "
                     b"boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n")
        assert (await send(gw.port, "alice@example.gov", ["bob@example.org"], malformed))[0] == 250
        response = await http.get(f"{base}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = response.text

    def delta(name: str, **labels: str) -> float:
        return (_sample(after, name, **labels) or 0.0) - (_sample(before, name, **labels) or 0.0)

    assert delta("gateway_messages_total", front="smtp", direction="outbound", verdict="deliver",
                 rule="outbound/default") == 2
    assert delta("gateway_messages_total", front="smtp", direction="outbound", verdict="quarantine",
                 rule="outbound/malformed") == 1
    assert delta("gateway_message_categories_total", front="smtp", direction="outbound", category="malformed") == 1
    assert delta("gateway_data_replies_total", front="smtp", code="2xx") == 3
    assert delta("gateway_stage_seconds_count", front="smtp", stage="parse") == 3
    assert delta("gateway_stage_seconds_count", front="smtp", stage="total") == 3
    assert delta("gateway_detector_seconds_count", detector="mime") == 3
    assert _sample(after, "gateway_quarantine_items") == 1
    assert 0 <= _sample(after, "gateway_quarantine_oldest_age_seconds") < 60
    assert _sample(after, "gateway_outbox_depth") == 0
    assert "# TYPE gateway_clamd_up gauge" in after


async def test_healthz_fails_when_the_next_hop_is_down(observed, sink):
    gw, base = observed
    async with httpx.AsyncClient() as http:
        ok = await http.get(f"{base}/healthz")
        assert ok.status_code == 200, ok.text
        assert ok.json()["status"] == "ok"
        assert ok.json()["checks"] == {"store": "ok", "next_hop": "ok", "antivirus": "ok"}
        await sink.stop()
        down = await http.get(f"{base}/healthz")
        before = _sample((await http.get(f"{base}/metrics")).text, "gateway_next_hop_errors_total", stage="connect")
        assert (await send(gw.port, "alice@example.gov", ["bob@example.org"], make_message()))[0] == 451
        after = _sample((await http.get(f"{base}/metrics")).text, "gateway_next_hop_errors_total", stage="connect")
    assert (after or 0) - (before or 0) == 1
    assert down.status_code == 503
    body = down.json()
    assert body["status"] == "failing" and body["checks"]["store"] == "ok"
    assert body["checks"]["next_hop"] != "ok" and "Connect" in body["checks"]["next_hop"]


async def test_healthz_runs_detector_health_checks(gw, sink):
    class Clamd:
        name = "antivirus"

        async def health(self) -> None:
            raise ConnectionRefusedError("clamd socket refused the connection")

    observer = observability.Observer(gw.settings, gw.store, [Clamd()])
    results = await observability.health(observer)
    assert results["antivirus"].startswith("ConnectionRefusedError: clamd socket refused")
    assert results["next_hop"] == "ok"


# ---------------------------------------------------------------------------------------------------
# Worker processes


def _write_config(tmp_path: Path, sink_port: int, smtp_port: int, metrics_port: int) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f"""
[smtp]
listen = "127.0.0.1:{smtp_port}"
hostname = "gateway.test"
workers = 2
drain_timeout = 20.0
max_connections_per_client = 100
[relay]
next_hop = "127.0.0.1:{sink_port}"
timeout = 5.0
[domains]
local = ["example.gov"]
[networks]
internal = ["127.0.0.1/32"]
[quarantine]
url = "sqlite:///{tmp_path / 'q.db'}"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[log]
json = true
level = "WARNING"
""")
    return path


async def _wait_listening(port: int, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"nothing listening on {port}")


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


@pytest.fixture
async def workers(tmp_path):
    sink = await Sink().start()
    smtp_port, metrics_port = free_port(), free_port()
    config = _write_config(tmp_path, sink.port, smtp_port, metrics_port)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(config)], env=env,
                               stderr=subprocess.DEVNULL)
    try:
        await _wait_listening(metrics_port)
        await _wait_listening(smtp_port)
        yield process, sink, smtp_port, metrics_port, metrics_dir
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        subprocess.run(["pkill", "-KILL", "-P", str(process.pid)], check=False)
        await sink.stop()


def _listeners(port: int) -> int:
    """Listening sockets on 127.0.0.1:port (one per worker with SO_REUSEPORT), from /proc/net/tcp."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for r in rows if r[1] == f"0100007F:{port:04X}" and r[3] == "0A")


async def test_two_workers_accept_and_relay(workers):
    process, sink, smtp_port, metrics_port, metrics_dir = workers
    end = time.monotonic() + 30
    while _listeners(smtp_port) < 2 and time.monotonic() < end:
        await asyncio.sleep(0.1)
    assert _listeners(smtp_port) == 2            # two processes, each with its own SO_REUSEPORT listener
    results = await asyncio.gather(*(send(smtp_port, "alice@example.gov", ["bob@example.org"],
                                          make_message(subject=f"m{i}")) for i in range(30)))
    assert [r[0] for r in results] == [250] * 30
    assert len(await sink.wait_for(30)) == 30
    worker_pids = {int(m.group(1)) for p in metrics_dir.iterdir()
                   if (m := re.match(r"counter_(\d+)\.db", p.name))} - {process.pid}
    assert len(worker_pids) == 2, worker_pids        # each worker process handled messages
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    assert _sample(text, "gateway_messages_total", front="smtp", direction="outbound", verdict="deliver",
                   rule="outbound/default") == 30      # the supervisor adds up both workers
    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 30) == 0


async def test_sigterm_drains_sessions_in_flight_then_exits(workers):
    process, sink, smtp_port, metrics_port, metrics_dir = workers
    busy = await RawClient.connect(smtp_port)
    idle = await RawClient.connect(smtp_port)
    await busy.cmd("EHLO client.test")
    await idle.cmd("EHLO client.test")
    assert (await busy.cmd("MAIL FROM:<alice@example.gov>"))[0] == 250
    assert (await busy.cmd("RCPT TO:<bob@example.org>"))[0] == 250
    assert (await busy.cmd("DATA"))[0] == 354
    busy.writer.write(make_message(subject="in flight")[:60])        # half of the message
    await busy.writer.drain()
    process.send_signal(signal.SIGTERM)
    # a worker still compiling its pipeline in the background (a loaded machine) closes its listener
    # when that returns: allow for it, well inside the 30 s the busy session may take to drain
    end = time.monotonic() + 20
    while not await _refused(smtp_port) and time.monotonic() < end:
        await asyncio.sleep(0.1)
    assert await _refused(smtp_port), "new sessions are refused while draining"
    code, text = await idle.reply(timeout=10)
    assert code == 421 and "4.3.2" in text            # the idle session is told to come back later
    assert process.poll() is None                     # still draining the busy session
    busy.writer.write(make_message(subject="in flight")[60:] + b"\r\n.\r\n")
    await busy.writer.drain()
    code, text = await busy.reply(timeout=15)
    assert code == 250, text
    await busy.close()
    await idle.close()
    assert await asyncio.to_thread(process.wait, 30) == 0
    [got] = await sink.wait_for(1)
    assert b"Subject: in flight" in got.data


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n", b"\r\n.", b"x" * 5]), max_size=30))
def test_fast_smuggling_check_equals_the_regex_search(pieces):
    from gateway.detectors.mime import _SMUGGLING, has_smuggling
    raw = b"".join(pieces)
    assert has_smuggling(raw) == bool(_SMUGGLING.search(raw))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n", b"\r\n.", b".."]), max_size=30))
def test_fast_data_encoding_equals_aiosmtplib(pieces):
    from aiosmtplib import protocol

    from gateway.relay import encode_data
    message = b"".join(pieces)
    expected = protocol.PERIOD_REGEX.sub(b"..", protocol.normalize_message_line_endings(message)) + b".\r\n"
    assert b"".join(encode_data(message)) == expected


async def test_spool_that_cannot_be_written_answers_451_and_stays_in_step(start_gateway, sink, tmp_path):
    gw = await start_gateway(smtp={"spool_threshold": 10_000, "spool_dir": str(tmp_path / "missing")})
    client = await RawClient.connect(gw.port)
    try:
        await client.cmd("EHLO client.test")
        await client.cmd("MAIL FROM:<alice@example.gov>")
        await client.cmd("RCPT TO:<bob@example.org>")
        body = b"Subject: big\r\n\r\n" + b"RCPT TO:<victim@example.org>\r\n" * 2000
        code, text = await client.send_data(body)
        assert code == 451 and "4.3.0" in text
        assert (await client.cmd("NOOP"))[0] == 250          # the rest of the data was not taken as commands
    finally:
        await client.close()
    assert sink.messages == []
