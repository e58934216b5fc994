"""gateway.message.archives: every format, nested, with every limit; never a crash, never an unbounded read."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import time
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.message.archives import Inventory, Limits, expand, sniff
from tests.support import files
from tests.support.paths import CORPUS


def walk(data: bytes, name: str = "a", limits: Limits | None = None) -> Inventory:
    inventory = Inventory()
    expand(f"part 2: {name}", (name,), data, None, limits or Limits(), inventory)
    return inventory


def labels(inventory: Inventory) -> list[str]:
    return [f.label for f in inventory.files]


def test_zip_tar_gz_7z_members_are_listed_with_their_content():
    tgz = files.tar_gz_of({"docs/a.txt": b"alpha"})
    inv = walk(files.zip_of({"b.txt": b"beta", "inner.tgz": tgz, "c.7z": files.seven_zip_of({"c.txt": b"gamma"})}),
               "all.zip")
    assert labels(inv) == ["part 2: all.zip", "part 2: all.zip > b.txt", "part 2: all.zip > inner.tgz",
                           "part 2: all.zip > inner.tgz > inner.tar", "part 2: all.zip > inner.tgz > inner.tar > "
                           "docs/a.txt", "part 2: all.zip > c.7z", "part 2: all.zip > c.7z > c.txt"]
    assert [f.data for f in inv.files if f.label.endswith(("a.txt", "b.txt", "c.txt"))] == [b"beta", b"alpha", b"gamma"]
    assert inv.problems == []


@pytest.mark.parametrize("compress,name,leaf", [(gzip.compress, "x.txt.gz", "x.txt"), (bz2.compress, "x.txt.bz2",
                                                 "x.txt"), (lzma.compress, "x.txt.xz", "x.txt")])
def test_single_stream_compressors(compress, name, leaf):
    inv = walk(compress(b"hello world"), name)
    assert [(f.name, f.data) for f in inv.files[1:]] == [(leaf, b"hello world")]


def test_concatenated_gzip_members_are_all_read():
    inv = walk(gzip.compress(b"hello ") + gzip.compress(b"world"), "x.gz")
    assert inv.files[1].data == b"hello world"


def test_encrypted_zip_member_and_encrypted_7z(tmp_path):
    inv = walk(files.encrypted_zip(tmp_path, "secret.exe", b"MZ"), "e.zip")
    assert [(p.kind, p.label) for p in inv.problems] == [("encrypted", "part 2: e.zip > secret.exe")]
    assert inv.files[1].name == "secret.exe" and inv.files[1].encrypted and inv.files[1].data == b""
    inv = walk(files.seven_zip_of({"a.txt": b"x"}, password="pw"), "e.7z")
    assert [p.kind for p in inv.problems] == ["encrypted"]


def test_zip_bomb_is_refused_from_its_declared_sizes():
    bomb = files.zip_bomb(32 * 1024 * 1024)
    start = time.perf_counter()
    inv = walk(bomb, "bomb.zip")
    assert time.perf_counter() - start < 1
    [problem] = inv.problems
    assert problem.kind == "limits_exceeded" and "zip bomb" in problem.detail


def test_gzip_bomb_without_declared_sizes_stops_at_the_ratio():
    bomb = gzip.compress(b"\0" * (16 * 1024 * 1024))
    inv = walk(bomb, "bomb.gz", Limits(max_ratio=50))
    [problem] = inv.problems
    assert problem.kind == "limits_exceeded" and "50 times" in problem.detail
    assert sum(len(f.data) for f in inv.files[1:]) == 0       # nothing half-expanded is handed on


def test_total_size_member_count_and_depth_limits():
    inv = walk(files.zip_of({"a.bin": b"a" * 4000, "b.bin": b"b" * 4000}), "z.zip", Limits(max_bytes=5000))
    assert [p.kind for p in inv.problems] == ["limits_exceeded"]
    inv = walk(files.zip_of({f"f{i}.txt": b"x" for i in range(30)}), "many.zip", Limits(max_members=20))
    assert "more than 20" in inv.problems[0].detail
    data = b"deep"
    for level in range(6):
        data = files.zip_of({f"l{level}": data})
    inv = walk(data, "deep.zip", Limits(max_depth=3))
    assert inv.problems[0].kind == "limits_exceeded" and "deeper than 3" in inv.problems[0].detail


def test_lying_zip_header_is_unparsable_not_trusted():
    data = bytearray(files.zip_of({"a.txt": b"0123456789" * 100}))
    central = data.rfind(b"PK\x01\x02")
    data[central + 24:central + 28] = (10).to_bytes(4, "little")     # declared size 10, actual 1000
    inv = walk(bytes(data), "lie.zip")
    assert [p.kind for p in inv.problems] == ["unparsable"]


def test_broken_archives_are_unparsable():
    for data, name in ((b"PK\x03\x04" + b"\xff" * 60, "a.zip"), (b"7z\xbc\xaf\x27\x1c" + b"\0" * 40, "a.7z"),
                       (gzip.compress(b"x" * 1000)[:25], "a.gz"), (b"Rar!\x1a\x07\x00" + b"\0" * 30, "a.rar")):
        inv = walk(data, name)
        assert [p.kind for p in inv.problems] == ["unparsable"], name
        assert name in inv.problems[0].label


def test_sniff_is_by_content_not_name():
    assert sniff(files.zip_of({"a": b"b"})) == "zip"
    assert sniff(files.pdf()) is None
    assert sniff(gzip.compress(b"x")) == "gzip"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from([b"PK\x03\x04", b"7z\xbc\xaf\x27\x1c", b"\x1f\x8b", b"BZh9",
                                                   b"\xfd7zXZ\x00", b"Rar!\x1a\x07\x00"]))
def test_garbage_behind_archive_magic_never_crashes(tail, magic):
    inv = walk(magic + tail, "fuzz")
    assert all(p.kind in ("unparsable", "limits_exceeded", "encrypted") for p in inv.problems)


def test_zip_truncated_anywhere_never_crashes():
    data = files.zip_of({"a.txt": b"hello" * 50, "b.zip": files.zip_of({"c.txt": b"x"})}, deflate=True)
    for cut in range(0, len(data), 7):
        walk(data[:cut], "cut.zip")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == ["a.txt", "b.zip"]


def test_rar_members_are_expanded_with_unar():
    # No tool here writes RAR, so the RAR 3 archive (one compressed member) comes from the shared corpus.
    from gateway.message import mime

    if not (CORPUS / "malformed").is_dir():
        pytest.skip(f"no corpus at {CORPUS}")
    raw = (CORPUS / "malformed" / "rspamd-gargantua.eml").read_bytes()
    [rar] = [p.payload for p in mime.parse(raw).parts if sniff(p.payload) == "rar"]
    inv = walk(rar, "t.rar")
    assert inv.problems == []
    assert [(f.name, f.data) for f in inv.files[1:]] == [("t/t.txt", b"42")]
