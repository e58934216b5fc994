"""The asyncio INSTREAM client against a real clamd: unix and TCP, found/clean, StreamMaxLength, clamd's
own limits (AlertExceedsMax), no clamd, and a clamd that never answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config
from gateway.scanners import clamd
from tests.support import files
from tests.support.clamav import FOUND, ClamdServer, HangingScanner
from tests.support.peers import free_port


@pytest.fixture(scope="module")
def small_clamd(tmp_path_factory):
    """A clamd with small limits, listening on TCP as well: StreamMaxLength 1 MB, MaxFileSize 256 KB."""
    port = free_port()
    server = ClamdServer(tmp_path_factory.mktemp("small-clamd"), StreamMaxLength="1M", MaxFileSize="256K",
                         MaxScanSize="512K", TCPSocket=str(port), TCPAddr="127.0.0.1")
    server.tcp = f"tcp://127.0.0.1:{port}"
    yield server.start()
    server.stop()


async def test_unix_socket_found_and_clean(clamd_server):
    client = clamd.Clamd(clamd_server.address)
    assert (await client.instream(files.eicar())).signature == FOUND
    clean = await client.instream(files.pdf())
    assert clean.clean and clean.signature == ""
    assert (await client.version()).startswith("ClamAV 1.")
    assert await client.ping()


async def test_tcp_socket(small_clamd):
    client = clamd.Clamd(small_clamd.tcp, stream_max_length=1024 * 1024)
    assert (await client.instream(files.eicar())).signature == FOUND
    assert (await client.instream(files.png())).clean


async def test_several_chunks(clamd_server):
    data = b"x" * (clamd.CHUNK * 3 + 17) + files.eicar()       # four chunks, the signature in the last
    assert (await clamd.Clamd(clamd_server.address).instream(data)).signature == FOUND


async def test_over_max_file_size_is_an_alert_not_clean(small_clamd):
    result = await clamd.Clamd(small_clamd.tcp).instream(b"x" * (300 * 1024))
    assert result.signature == "Heuristics.Limits.Exceeded.MaxFileSize"


async def test_stream_over_clamds_limit_is_limits_exceeded_not_clean(small_clamd):
    # We believe clamd takes 100 MB; it takes 1 MB and hangs up: a broken pipe, never "clean".
    client = clamd.Clamd(small_clamd.address, stream_max_length=100 * 1024 * 1024)
    with pytest.raises(clamd.LimitsExceeded):
        await client.instream(b"\0" * (8 * 1024 * 1024))


async def test_stream_over_our_configured_limit_is_not_sent(clamd_server):
    client = clamd.Clamd(clamd_server.address, stream_max_length=1000)
    with pytest.raises(clamd.LimitsExceeded, match="StreamMaxLength"):
        await client.instream(b"y" * 1001)


async def test_clamd_alerts_when_its_own_limits_stop_it(small_clamd):
    # AlertExceedsMax: a member over MaxFileSize is reported, so it can never pass as clean.
    archive = files.zip_of({"big.bin": b"z" * (400 * 1024), "eicar.txt": files.eicar()}, deflate=True)
    result = await clamd.Clamd(small_clamd.address).instream(archive)
    assert result.signature.startswith(("Heuristics.Limits.Exceeded", FOUND)), result


async def test_no_clamd_is_unavailable(tmp_path):
    client = clamd.Clamd(f"unix://{tmp_path / 'nothing.sock'}")
    with pytest.raises(clamd.Unavailable, match="cannot connect"):
        await client.instream(b"data")
    assert not await client.ping()
    with pytest.raises(clamd.Unavailable):
        await clamd.Clamd(f"tcp://127.0.0.1:{free_port()}").instream(b"data")


async def test_hanging_clamd_times_out(tmp_path):
    hanging = await HangingScanner(tmp_path / "hang.sock").start()
    try:
        client = clamd.Clamd(hanging.address, timeout=0.3)
        with pytest.raises(clamd.ScanTimeout, match=r"did not answer within 0\.3 s"):
            await client.instream(b"data")
    finally:
        await hanging.stop()


def test_reply_parsing_and_addresses():
    assert clamd.parse_scan_reply("stream: OK") == clamd.Result()
    assert clamd.parse_scan_reply("stream: Win.Test.EICAR_HDB-1 FOUND").signature == "Win.Test.EICAR_HDB-1"
    with pytest.raises(clamd.LimitsExceeded):
        clamd.parse_scan_reply("INSTREAM size limit exceeded. ERROR")
    with pytest.raises(clamd.ClamdError, match="Can't allocate memory"):
        clamd.parse_scan_reply("Can't allocate memory ERROR")
    assert clamd.parse_address("unix:///run/clamav/clamd.ctl") == ("unix", "/run/clamav/clamd.ctl")
    assert clamd.parse_address("tcp://127.0.0.1:3310") == ("tcp", ("127.0.0.1", 3310))
    for bad in ("tcp://host", "http://x:1", "clamd.ctl"):
        with pytest.raises(ValueError):
            clamd.parse_address(bad)


def test_production_clamd_conf_is_accepted_by_clamd_and_never_passes_what_it_cannot_scan(tmp_path):
    """deploy/clamav/clamd.conf, with its paths moved to a temporary directory, starts a clamd."""
    deploy = Path(__file__).resolve().parents[2] / "deploy" / "clamav" / "clamd.conf"
    text = deploy.read_text()
    options = dict(line.split(None, 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))
    assert options["AlertExceedsMax"] == options["AlertEncrypted"] == options["ScanArchive"] == "yes"
    assert int(options["StreamMaxLength"].rstrip("M")) * 1024 * 1024 >= config.AntivirusSettings().stream_max_length
    assert config.AntivirusSettings().clamd == f"unix://{options['LocalSocket']}"

    class Deployed(ClamdServer):
        def config(self) -> str:
            moved = {"LocalSocket": str(self.socket), "DatabaseDirectory": str(self.dir / "db"),
                     "LogFile": str(self.dir / "clamd.log"), "PidFile": str(self.dir / "clamd.pid"),
                     "User": "root", "LocalSocketGroup": "root", "Foreground": "yes"}
            kept = {k: v for k, v in options.items() if k not in moved}
            return "".join(f"{k} {v}\n" for k, v in {**kept, **moved}.items())

    server = Deployed(tmp_path / "deployed").start()
    try:
        assert server.ping()
    finally:
        server.stop()


def test_antivirus_settings_name_a_bad_clamd_address():
    with pytest.raises(config.ConfigError, match=r"\[antivirus\] clamd: clamd address 'clamd.ctl'"):
        config.from_dict({"antivirus": {"clamd": "clamd.ctl"}}, source="gw.toml")
    assert config.from_dict({"antivirus": {"clamd": ""}}).antivirus.clamd == ""
    assert config.from_dict({"antivirus": {"archive_max_ratio": 50}}).antivirus.archive_max_ratio == 50.0
