"""The SQLite quarantine (held mail, the signing keys in `meta`) and its -wal/-shm are 0600 and belong to
the service user; `gateway ...` run as root creates them with that owner, and a user who cannot open
them is told how to run the command."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import stat
import tempfile
from pathlib import Path

import pytest

from gateway import cli
from gateway.quarantine import StoreError
from gateway.quarantine.sqlite import SqliteStore
from tests.support.quarantine_fixtures import held_item

SERVICE_UID = 65534          # "nobody": stands for the gateway user that owns /var/lib/gateway
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def open_and_write(path: Path) -> SqliteStore:
    store = SqliteStore(str(path))
    await store.open()
    await store.hold(held_item(subject="Payroll", kinds=("pii.ssn",)))
    assert await store.secret("dkim-test-key")
    return store


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


async def test_database_wal_and_shm_are_0600_after_open_and_write(tmp_path, loose_umask):
    db = tmp_path / "state" / "quarantine.db"
    store = await open_and_write(db)
    try:
        for name in ("", "-wal", "-shm"):
            assert mode(Path(f"{db}{name}")) == 0o600, (name, oct(mode(Path(f"{db}{name}"))))
    finally:
        await store.close()
    assert mode(db) == 0o600


async def test_a_database_left_world_readable_is_tightened(tmp_path, loose_umask):
    db = tmp_path / "quarantine.db"
    sqlite3.connect(db).close()
    os.chmod(db, 0o644)
    store = await open_and_write(db)
    await store.close()
    assert mode(db) == 0o600


@pytest.fixture
def service_dir():
    """A state directory owned by the service user, outside pytest's root-only temporary folders."""
    path = Path(tempfile.mkdtemp(prefix="gateway-state-"))
    os.chmod(path, 0o755)
    os.chown(path, SERVICE_UID, SERVICE_UID)
    yield path
    shutil.rmtree(path)


def config_in(directory: Path) -> str:
    config = directory.parent / f"{directory.name}.toml"
    config.write_text(f'[quarantine]\nurl = "sqlite:///{directory}/quarantine.db"\n'
                      '[domains]\nlocal = ["example.gov"]\n')
    os.chmod(config, 0o644)
    return str(config)


@as_root
async def test_root_creates_the_files_owned_by_the_service_user(service_dir, loose_umask, capsys):
    db = service_dir / "quarantine.db"
    config = config_in(service_dir)
    try:
        assert await asyncio.to_thread(cli.main, ["quarantine", "list", "--config", config]) == 0
        capsys.readouterr()
        assert db.exists() and (os.stat(db).st_uid, os.stat(db).st_gid) == (SERVICE_UID, SERVICE_UID)
        assert mode(db) == 0o600
        store = await open_and_write(db)           # root again, while the files are in use
        try:
            for name in ("", "-wal", "-shm"):
                st = os.stat(f"{db}{name}")
                assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (SERVICE_UID, 0o600), (name, st)
        finally:
            await store.close()
    finally:
        os.unlink(config)


@as_root
async def test_root_takes_back_a_file_an_earlier_root_run_left(service_dir, loose_umask):
    db = service_dir / "quarantine.db"
    sqlite3.connect(db).close()                    # root-owned, 0644: the service could not write it
    os.chmod(db, 0o644)
    store = await open_and_write(db)
    await store.close()
    assert (os.stat(db).st_uid, mode(db)) == (SERVICE_UID, 0o600)


@as_root
async def test_a_planted_link_is_refused_and_its_target_untouched(service_dir):
    victim = service_dir.parent / f"{service_dir.name}-victim"
    victim.write_text("root's file\n")
    os.chmod(victim, 0o644)
    try:
        os.symlink(victim, service_dir / "quarantine.db-wal")
        with pytest.raises(StoreError):
            await SqliteStore(str(service_dir / "quarantine.db")).open()
        assert (os.stat(victim).st_uid, mode(victim)) == (0, 0o644)
    finally:
        victim.unlink()


@as_root
def test_another_user_is_told_to_run_it_as_the_service_user(service_dir, capsys):
    config = config_in(service_dir)
    try:
        assert cli.main(["quarantine", "list", "--config", config]) == 0        # root: creates it for the service
        capsys.readouterr()
        os.setegid(12345)          # an admin's own account (the interpreter lives under /root: no subprocess)
        os.seteuid(12345)
        try:
            code = cli.main(["quarantine", "list", "--config", config])
        finally:
            os.seteuid(0)
            os.setegid(0)
        _, err = capsys.readouterr()
        lines = [line for line in err.strip().splitlines() if not line.startswith("gateway: config ")]
        assert code == 2 and len(lines) == 1 and "runuser -u nobody -- gateway" in lines[0], err
        assert "Traceback" not in err
    finally:
        os.unlink(config)
