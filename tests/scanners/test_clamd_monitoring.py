"""Monitoring sees the virus scanner: /healthz checks clamd (PING within [metrics] healthz_timeout),
`gateway_clamd_up` and `gateway_clamd_scan_errors_total` are fed by the clamd client in every process
and added up across workers, and the signature age comes from clamd's VERSION reply."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway import observability
from gateway.scanners.clamd import Clamd, ScanTimeout, parse_version
from tests.smtp.test_data_reader_workers_metrics import _sample, _wait_listening
from tests.support.clamav import ClamdServer, HangingScanner
from tests.support.peers import Sink, free_port, send


def test_version_reply_with_a_database_date():
    reply = "ClamAV 1.4.6/27469/Sun Nov 29 09:30:00 2026"
    version = parse_version(reply)
    assert version.engine == "ClamAV 1.4.6" and version.signatures == 27469
    assert version.published == time.mktime((2026, 11, 29, 9, 30, 0, 0, 0, -1))   # clamd's local time
    assert version.age(version.published + 3 * 86400) == 3 * 86400
    padded = parse_version("ClamAV 1.4.6/27476/Sun Dec  6 07:41:02 2026\n")        # ctime pads the day
    assert padded.published == time.mktime((2026, 12, 6, 7, 41, 2, 0, 0, -1))


def test_version_reply_without_a_date_is_unknown_not_an_error():
    version = parse_version("ClamAV 1.4.6")        # a locally written signature file, as tests/support/clamav.py makes
    assert version.engine == "ClamAV 1.4.6"
    assert version.signatures is None and version.published is None and version.age() is None


def attachment_message(n: int = 0) -> bytes:
    """A message with one small binary attachment: scanned by clamd (file and whole message)."""
    return (b"From: alice@example.gov\r\nTo: bob@example.org\r\nSubject: report %d\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
            b"see attached\r\n--B\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename=\"data.bin\"\r\n\r\n" % n
            + b"".join(b"%d row of figures\r\n" % i for i in range(40)) + b"--B--\r\n")


async def test_a_clamd_that_hangs_counts_as_down_and_as_a_timed_out_scan(tmp_path):
    hanging = await HangingScanner(tmp_path / "hang.sock").start()
    try:
        client = Clamd(hanging.address, timeout=0.3)
        before = _sample(observability.render({}), "gateway_clamd_scan_errors_total", reason="timeout") or 0
        with pytest.raises(ScanTimeout):
            await client.instream(b"quarterly figures")
        text = observability.render({})
        assert _sample(text, "gateway_clamd_scan_errors_total", reason="timeout") == before + 1
        assert _sample(text, "gateway_clamd_up") == 0
        with pytest.raises(ScanTimeout):
            await client.probe(0.3)          # the health probe: no answer to PING within the bound
    finally:
        await hanging.stop()


class Probe:
    """GET /healthz and the clamd samples of /metrics from a metrics server."""

    def __init__(self, http: httpx.AsyncClient, base: str) -> None:
        self.http, self.base = http, base

    async def healthz(self) -> httpx.Response:
        return await self.http.get(f"{self.base}/healthz", timeout=30)

    async def metrics(self) -> str:
        return (await self.http.get(f"{self.base}/metrics", timeout=30)).text


@pytest.fixture
async def own_clamd(tmp_path):
    server = await asyncio.to_thread(ClamdServer(tmp_path / "clamd").start)
    yield server
    server.stop()


async def test_healthz_and_gauge_follow_a_real_clamd_stopped_and_restarted(start_gateway, own_clamd, sink):
    gw = await start_gateway(antivirus={"clamd": own_clamd.address, "cache_seconds": 0},
                             metrics={"healthz_timeout": 2.0})
    observer = observability.Observer(gw.settings, gw.store, gw.gateway.pipeline.detectors)
    server = await observability.MetricsServer(observer, "127.0.0.1:0").start()
    try:
        async with httpx.AsyncClient() as http:
            probe = Probe(http, f"http://127.0.0.1:{server.port}")
            up = await probe.healthz()
            assert up.status_code == 200, up.text
            assert up.json()["checks"] == {"store": "ok", "next_hop": "ok", "antivirus": "ok"}
            details = up.json()["details"]["antivirus"]
            assert details["version"] == "ClamAV 1.4.6"          # the test database has no version or date
            assert details["signature_age_seconds"] == "unknown" == details["signatures_published"]
            text = await probe.metrics()
            assert _sample(text, "gateway_clamd_up") == 1
            assert math.isnan(_sample(text, "gateway_clamd_signature_age_seconds"))
            errors_before = _sample(text, "gateway_clamd_scan_errors_total", reason="unavailable") or 0

            own_clamd.stop()
            down = await probe.healthz()
            assert down.status_code == 503, down.text
            assert down.json()["status"] == "failing"
            assert down.json()["checks"]["antivirus"].startswith("Unavailable: cannot connect to clamd")
            assert down.json()["checks"]["next_hop"] == "ok"
            assert _sample(await probe.metrics(), "gateway_clamd_up") == 0
            code, _, _ = await send(gw.port, "alice@example.gov", ["bob@example.org"], attachment_message())
            assert code == 250                                    # held as unscanned.scanner_unavailable
            text = await probe.metrics()
            assert _sample(text, "gateway_clamd_scan_errors_total", reason="unavailable") >= errors_before + 1

            await asyncio.to_thread(own_clamd.start)
            again = await probe.healthz()
            assert again.status_code == 200, again.text
            assert again.json()["checks"]["antivirus"] == "ok"
            assert _sample(await probe.metrics(), "gateway_clamd_up") == 1
    finally:
        await server.stop()


async def test_healthz_says_off_when_no_scanner_is_configured(start_gateway, sink):
    gw = await start_gateway(antivirus={"clamd": ""})
    observer = observability.Observer(gw.settings, gw.store, gw.gateway.pipeline.detectors)
    server = await observability.MetricsServer(observer, "127.0.0.1:0").start()
    try:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{server.port}/healthz")
    finally:
        await server.stop()
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"
    assert response.json()["checks"]["antivirus"] == "off"


def _workers_config(tmp_path: Path, sink_port: int, smtp_port: int, metrics_port: int, clamd: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f"""
[smtp]
listen = "127.0.0.1:{smtp_port}"
hostname = "gateway.test"
workers = 2
drain_timeout = 5.0
[relay]
next_hop = "127.0.0.1:{sink_port}"
timeout = 5.0
[domains]
local = ["example.gov"]
[networks]
internal = ["127.0.0.1/32"]
[quarantine]
url = "sqlite:///{tmp_path / 'q.db'}"
[auth]
resolver = "none"
[antivirus]
clamd = "{clamd}"
cache_seconds = 0
[metrics]
listen = "127.0.0.1:{metrics_port}"
healthz_timeout = 2.0
[log]
level = "WARNING"
""")
    return path


async def test_two_workers_report_clamd_up_and_their_scan_errors_added_up(tmp_path, own_clamd):
    sink = await Sink().start()
    smtp_port, metrics_port = free_port(), free_port()
    config = _workers_config(tmp_path, sink.port, smtp_port, metrics_port, own_clamd.address)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(config)], env=env,
                               stderr=subprocess.DEVNULL)
    try:
        await _wait_listening(metrics_port, 60)
        await _wait_listening(smtp_port, 60)
        async with httpx.AsyncClient() as http:
            probe = Probe(http, f"http://127.0.0.1:{metrics_port}")
            results = await asyncio.gather(*(send(smtp_port, "alice@example.gov", ["bob@example.org"],
                                                  attachment_message(i)) for i in range(8)))
            assert [r[0] for r in results] == [250] * 8
            assert _sample(await probe.metrics(), "gateway_clamd_up") == 1
            assert (await probe.healthz()).status_code == 200

            own_clamd.stop()
            results = await asyncio.gather(*(send(smtp_port, "alice@example.gov", ["bob@example.org"],
                                                  attachment_message(100 + i)) for i in range(8)))
            assert [r[0] for r in results] == [250] * 8          # held as unscanned.scanner_unavailable
            text = await probe.metrics()
            assert _sample(text, "gateway_clamd_up") == 0
            # counted by the workers that scanned (the supervisor scans nothing), added up by the supervisor
            assert _sample(text, "gateway_clamd_scan_errors_total", reason="unavailable") >= 8
            assert (await probe.healthz()).status_code == 503

            await asyncio.to_thread(own_clamd.start)
            assert (await probe.healthz()).status_code == 200
            assert _sample(await probe.metrics(), "gateway_clamd_up") == 1
    finally:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        await sink.stop()
