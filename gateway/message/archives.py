"""Archives opened the careful way: zip, 7z, rar, tar, gzip, bzip2, xz, nested to a limited depth.

Every file of a message, attachment or archive member, becomes a `File` that the antivirus and
filetype detectors check; what could not be opened becomes a `Problem` ("encrypted",
"limits_exceeded", "unparsable") that the antivirus detector reports as unscanned.<kind>.

Every read is bounded: a member count, a total expanded size per attachment, an expansion ratio
and a depth. Declared sizes are checked before anything is expanded, and actual reads stop at the
budget even when the headers lie. The expansion of a message is done once, in a thread, and
shared by the detectors through the message's context (gateway/context.py, like the text).
"""

from __future__ import annotations

import bz2
import io
import logging
import lzma
import tarfile
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field

from gateway import offload
from gateway.config import AntivirusSettings
from gateway.model import Mail

log = logging.getLogger("gateway.archives")

READ = 64 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    max_depth: int = 4                       # archives inside archives
    max_members: int = 1000                  # per attachment, all levels
    max_bytes: int = 100 * 1024 * 1024       # expanded, per attachment, all levels
    max_ratio: float = 200.0                 # expanded / compressed ...
    ratio_floor: int = 10 * 1024 * 1024      # ... checked once the expansion passes this size


@dataclass(frozen=True, slots=True)
class File:
    """One file to check: an attachment (depth 0) or an archive member."""

    label: str                          # "part 2: a.zip" or "part 2: a.zip > docs/b.exe"
    names: tuple[str, ...]              # candidate names, best first
    data: bytes
    content_type: str | None = None     # declared (attachments only)
    depth: int = 0
    encrypted: bool = False             # an encrypted member: its name is known, its content is not
    parent: str = ""                    # the label of the archive it came out of ("" for an attachment)

    @property
    def name(self) -> str:
        return self.names[0] if self.names else ""


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str           # "encrypted" | "limits_exceeded" | "unparsable"
    label: str          # the archive or member concerned
    detail: str


@dataclass
class Inventory:
    files: list[File] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def shown(name: str) -> str:
    """A file name as a reviewer can read it: invisible, bidirectional and control characters spelled out."""
    return "".join(f"<U+{ord(c):04X}>" if unicodedata.category(c) in ("Cf", "Cc", "Zl", "Zp") else c
                   for c in name)[:200]


class _Stop(Exception):
    """A limit was reached: stop expanding this attachment."""


def sniff(data: bytes) -> str | None:
    """The archive format by its magic bytes (never by the name, which the sender chose)."""
    head = data[:8]
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return "zip"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    if head.startswith(b"Rar!\x1a\x07"):
        return "rar"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh") and len(data) > 4 and data[3:4].isdigit():
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if data[257:262] == b"ustar":
        return "tar"
    return None


class _Walk:
    def __init__(self, limits: Limits, inventory: Inventory, top_size: int) -> None:
        self.limits = limits
        self.inv = inventory
        self.top_size = max(top_size, 1)
        self.members = 0
        self.bytes = 0

    # -- budget ---------------------------------------------------------------------------------
    def take(self, label: str, count: int = 0, size: int = 0) -> None:
        self.members += count
        self.bytes += size
        limits = self.limits
        if self.members > limits.max_members:
            self.stop(label, f"more than {limits.max_members} archive members")
        if self.bytes > limits.max_bytes:
            self.stop(label, f"expands to more than {limits.max_bytes // (1024 * 1024)} MB")
        if self.bytes > limits.ratio_floor and self.bytes / self.top_size > limits.max_ratio:
            self.stop(label, f"expands more than {limits.max_ratio:g} times (a zip bomb?)")

    def stop(self, label: str, detail: str) -> None:
        self.inv.problems.append(Problem("limits_exceeded", label, f"Archive {detail}"))
        raise _Stop

    def room(self) -> int:
        return max(0, self.limits.max_bytes - self.bytes)

    def read(self, stream: io.RawIOBase | io.BufferedIOBase, label: str) -> bytes:
        """Read a member stream within the remaining budget."""
        chunks = []
        while True:
            chunk = stream.read(READ)
            if not chunk:
                return b"".join(chunks)
            self.take(label, size=len(chunk))
            chunks.append(chunk)

    # -- walk -------------------------------------------------------------------------------------
    def container(self, data: bytes, label: str, depth: int) -> None:
        kind = sniff(data)
        if kind is None:
            return
        if depth >= self.limits.max_depth:
            self.stop(label, f"nesting is deeper than {self.limits.max_depth} levels")
        try:
            getattr(self, f"_{kind}")(data, label, depth + 1)
        except _Stop:
            raise
        except Exception as e:       # every library's idea of a broken archive
            # The library's message goes to the log, not into the finding that notices quote.
            log.info("%s: the %s archive could not be read: %s: %s", label, kind, type(e).__name__, str(e)[:200])
            self.inv.problems.append(Problem("unparsable", label, f"The {kind} archive could not be read (it is "
                                                                  "damaged or in a form the gateway cannot open)"))

    def member(self, name: str, data: bytes, label: str, depth: int, encrypted: bool = False) -> None:
        child = f"{label} > {name}"
        self.inv.files.append(File(label=child, names=(name,) if name else (), data=data, depth=depth,
                                   encrypted=encrypted, parent=label))
        if encrypted:
            self.inv.problems.append(Problem("encrypted", child, f"Archive member {shown(name)!r} is encrypted"))
        elif data:
            self.container(data, child, depth)

    def _zip(self, data: bytes, label: str, depth: int) -> None:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            self.check_declared(label, len(infos), sum(i.file_size for i in infos), len(data))
            for info in infos:
                self.take(label, count=1)
                if info.flag_bits & 0x1:
                    self.member(info.filename, b"", label, depth, encrypted=True)
                    continue
                with zf.open(info) as stream:
                    self.member(info.filename, self.read(stream, label), label, depth)

    def _7z(self, data: bytes, label: str, depth: int) -> None:
        import py7zr
        import py7zr.io

        walk = self

        class Sink(py7zr.io.Py7zIO):
            def __init__(self) -> None:
                self.buf = io.BytesIO()

            def write(self, s: bytes | bytearray) -> int:
                walk.take(label, size=len(s))
                return self.buf.write(s)

            def read(self, size: int | None = None) -> bytes:
                return self.buf.read(size)

            def seek(self, offset: int, whence: int = 0) -> int:
                return self.buf.seek(offset, whence)

            def flush(self) -> None:
                pass

            def size(self) -> int:
                return self.buf.getbuffer().nbytes

        class Factory(py7zr.io.WriterFactory):
            def __init__(self) -> None:
                self.sinks: dict[str, Sink] = {}

            def create(self, filename: str) -> Sink:
                return self.sinks.setdefault(filename, Sink())

        try:
            archive = py7zr.SevenZipFile(io.BytesIO(data), mode="r")
        except py7zr.exceptions.PasswordRequired:
            self.inv.problems.append(Problem("encrypted", label, "The 7z archive's file list is encrypted"))
            return
        with archive:
            infos = [i for i in archive.list() if not i.is_directory]
            self.check_declared(label, len(infos), sum(i.uncompressed or 0 for i in infos), len(data))
            if archive.needs_password():
                for info in infos:
                    self.take(label, count=1)
                    self.member(info.filename, b"", label, depth, encrypted=True)
                return
            factory = Factory()
            archive.extractall(factory=factory)
            for info in infos:
                self.take(label, count=1)
                sink = factory.sinks.get(info.filename)
                self.member(info.filename, sink.buf.getvalue() if sink else b"", label, depth)

    def _rar(self, data: bytes, label: str, depth: int) -> None:
        rarfile = _rarfile()
        with rarfile.RarFile(io.BytesIO(data), errors="strict") as rf:
            if rf.needs_password():
                self.inv.problems.append(Problem("encrypted", label, "The rar archive's file list is encrypted"))
                return
            infos = [i for i in rf.infolist() if not i.is_dir()]
            self.check_declared(label, len(infos), sum(i.file_size or 0 for i in infos), len(data))
            for info in infos:
                self.take(label, count=1)
                if info.needs_password():
                    self.member(info.filename, b"", label, depth, encrypted=True)
                    continue
                with rf.open(info) as stream:          # through the unar tool (see _rarfile)
                    self.member(info.filename, self.read(stream, label), label, depth)

    def _tar(self, data: bytes, label: str, depth: int) -> None:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            for info in tf:
                if not info.isfile():
                    continue
                self.take(label, count=1)
                stream = tf.extractfile(info)
                self.member(info.name, self.read(stream, label) if stream else b"", label, depth)

    def _gzip(self, data: bytes, label: str, depth: int) -> None:
        self.stream(lambda: zlib.decompressobj(wbits=31), data, label, depth, (".gz", ".tgz", ".z"))

    def _bzip2(self, data: bytes, label: str, depth: int) -> None:
        self.stream(bz2.BZ2Decompressor, data, label, depth, (".bz2", ".tbz2", ".tbz"))

    def _xz(self, data: bytes, label: str, depth: int) -> None:
        self.stream(lzma.LZMADecompressor, data, label, depth, (".xz", ".txz"))

    def stream(self, new, data: bytes, label: str, depth: int, suffixes: tuple[str, ...]) -> None:
        """A compressed stream (concatenated streams too), expanded within the budget."""
        out = []
        rest = data
        while rest:
            decomp = new()
            is_zlib = hasattr(decomp, "unconsumed_tail")
            pending = rest
            while not decomp.eof:
                chunk = decomp.decompress(pending, READ)
                self.take(label, size=len(chunk))
                out.append(chunk)
                pending = decomp.unconsumed_tail if is_zlib else b""
                if not chunk and not pending and (is_zlib or decomp.needs_input):
                    raise EOFError("compressed stream ended early")
            rest = decomp.unused_data.lstrip(b"\0")     # concatenated streams
        self.take(label, count=1)
        leaf = label.rsplit(" > ", 1)[-1].rsplit(": ", 1)[-1].rsplit("/", 1)[-1]
        lower = leaf.lower()
        name = next((leaf[: -len(s)] + (".tar" if s.startswith(".t") else "") for s in suffixes
                     if lower.endswith(s)), leaf + ".out")
        self.member(name, b"".join(out), label, depth)

    def check_declared(self, label: str, count: int, size: int, packed: int) -> None:
        """Refuse before expanding what the archive itself says is too much."""
        limits = self.limits
        if self.members + count > limits.max_members:
            self.stop(label, f"has {count} members, more than {limits.max_members}")
        if self.bytes + size > limits.max_bytes:
            self.stop(label, f"declares {size} bytes expanded, more than {limits.max_bytes // (1024 * 1024)} MB")
        if size > limits.ratio_floor and size / max(packed, 1) > limits.max_ratio:
            self.stop(label, f"declares {size} bytes from {packed}: more than {limits.max_ratio:g} times "
                             f"(a zip bomb?)")


def limits_for(av: AntivirusSettings) -> Limits:
    """The archive limits of the [antivirus] settings: one inventory serves every reader of the message."""
    return Limits(max_depth=av.archive_max_depth, max_members=av.archive_max_members,
                  max_bytes=av.archive_max_bytes, max_ratio=av.archive_max_ratio,
                  ratio_floor=min(Limits().ratio_floor, av.archive_max_bytes // 2))


_RAR_READY = False


def _rarfile():
    """rarfile, set up to expand members with `unar` (Debian's unrar-free fails on compressed RAR 3
    members: a CRC error), falling back to whatever rarfile finds."""
    global _RAR_READY
    import rarfile

    if not _RAR_READY:
        try:
            rarfile.tool_setup(unrar=False, unar=True, bsdtar=False, sevenzip=False, sevenzip2=False, force=True)
        except rarfile.RarCannotExec:
            rarfile.tool_setup(force=True)
        _RAR_READY = True
    return rarfile


def expand(label: str, names: tuple[str, ...], data: bytes, content_type: str | None,
           limits: Limits, inventory: Inventory) -> None:
    """Add one attachment and, when it is an archive, everything inside it, to the inventory."""
    inventory.files.append(File(label=label, names=names, data=data, content_type=content_type))
    walk = _Walk(limits, inventory, len(data))
    try:
        walk.container(data, label, 0)
    except _Stop:
        pass
    except RecursionError:
        inventory.problems.append(Problem("limits_exceeded", label, "Archive nesting is too deep"))


def build(mail: Mail, limits: Limits) -> Inventory:
    inventory = Inventory()
    for part in mail.parsed.attachments:
        expand(part.label, part.filenames, part.payload, part.content_type, limits, inventory)
    return inventory


async def inventory(mail: Mail, limits: Limits) -> Inventory:
    """The message's files, expanded once per message (the first detector to ask starts it)."""
    return await offload.once(mail, "archives", 0, lambda: build(mail, limits))     # nothing to open: inline
