"""The DATA phase read in large chunks into a spool, with aiosmtpd's end-of-data and Postfix's lines.

aiosmtpd reads DATA one line at a time (StreamReader.readuntil per line): about 60 % of a no-op
relay's CPU on a 20 KB message (docs/performance.md). Here the end-of-data search, the
dot-unstuffing and the line-length check run over whole chunks in C (bytes.find/replace/split), and
the message goes into a `Spool` that keeps it in memory up to a threshold and on disk beyond it, so
that many slow senders of large messages do not each hold their message in memory.

Semantics (tests/smtp/test_data_reader_workers_metrics.py pins them against a line-at-a-time reference):
- only CRLF "." CRLF ends the data (a "." line right after DATA too), looked for in the bytes as
  received; bare CR or LF never do;
- an end-of-data look-alike with a bare CR or LF (SMTP smuggling) is looked for in the bytes as
  received, before anything is normalised, and recorded on the spool (`Spool.smuggling`);
- a line ends with CRLF or, as Postfix reads it, a bare LF; every line end is stored as CRLF
  (a bare CR is not a line end and stays as it is), so bare-LF clients (smtplib sending bytes) work;
- dot-unstuffing: the first "." of every line that starts with one is removed;
- the size limit counts the bytes as sent (dot-stuffed, line ends as sent, without the final ".CRLF");
  over the limit the rest is read and discarded and the caller answers 552;
- a line longer than `max_line` bytes before its line end: the rest is drained and the caller answers 500.
Bytes the client pipelined after the end of data stay in the reader for the next command.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import tempfile

log = logging.getLogger("gateway.dataread")

END = b"\r\n.\r\n"
DOT_CRLF = b".\r\n"
# A consumed stream ending with one of these could be the start of an END the reader has not seen whole.
_END_PREFIXES = (b"\r", b"\r\n", b"\r\n.", b"\r\n.\r")
# gateway/detectors/mime.py's end-of-data look-alikes with the look-ahead consumed: a match needs all
# its bytes present, so one split across two chunks is found once the second arrives, never guessed at.
_LOOK_ALIKE = re.compile(rb"(?:\r\n|\n|\r)\.(?:\r[^\n]|\n)|(?<!\r)\n\.\r\n|\r\.\r\n")
_CARRY = 8                  # bytes kept from one chunk for the next: a look-alike and the byte before it


class DataState(enum.Enum):
    NOMINAL = "nominal"
    TOO_MUCH = "too_much"       # over the size limit: 552
    TOO_LONG = "too_long"       # a line over the length limit: 500
    FAILED = "failed"           # the spool could not be written (disk full, bad spool_dir): 451


class Spool:
    """Message bytes: in memory up to `threshold`, then in an unnamed temporary file (gone on close)."""

    def __init__(self, threshold: int, directory: str | None = None) -> None:
        self.threshold = threshold
        self.directory = directory or None
        self.size = 0
        self.smuggling = False          # an end-of-data look-alike was in the bytes as received
        self._memory: list[bytes] | None = []
        self._file = None

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self._memory is not None:
            self._memory.append(data)
            if self.size <= self.threshold:
                return
            self._file = tempfile.TemporaryFile(dir=self.directory)     # noqa: SIM115 (closed in close())
            for chunk in self._memory:
                self._file.write(chunk)
            self._memory = None
            return
        self._file.write(data)

    def getvalue(self) -> bytes:
        if self._memory is not None:
            return b"".join(self._memory)
        self._file.flush()
        self._file.seek(0)
        return self._file.read()

    def discard(self) -> None:
        try:
            self.close()
        except OSError:
            pass
        self.size = 0
        self._memory = []

    def close(self) -> None:
        self._memory = None
        if self._file is not None:
            self._file.close()
            self._file = None


async def read_data(reader: asyncio.StreamReader, out: Spool, *, size_limit: int | None,
                    max_line: int) -> DataState:
    """Read one DATA payload up to and including CRLF.CRLF into `out` (unstuffed, line ends CRLF,
    final CRLF kept); `out.smuggling` says whether the bytes as received had an end-of-data look-alike.

    Raises asyncio.IncompleteReadError when the client goes away before the end of data.
    """
    carry = b"\r\n"         # the last bytes as received, for look-alikes across chunks (virtual CRLF first)
    tail = b"\r\n"          # the last bytes consumed, starting with a virtual CRLF before the first line
    careful = True          # until `tail` cannot begin an END, look for ".CRLF" and check what precedes it
    pending = b"\r\n"       # data not yet written: the CRLF ending the previous line and the partial line after
    lead = 2                # the virtual CRLF is not part of the message
    received = 0            # bytes as sent, the way aiosmtpd counts them against the size limit
    state = DataState.NOMINAL
    while True:
        if careful and not tail.endswith(_END_PREFIXES):
            careful = False
        try:
            block = await reader.readuntil(DOT_CRLF if careful else END)
            found = True
        except asyncio.LimitOverrunError as e:
            # No end in the buffered bytes (or further than the reader's limit): take what is safe to take.
            block = await reader.read(e.consumed)
            found = False
        end = found and (not careful or (tail + block[-5:])[-5:-3] == b"\r\n")
        tail = (tail + block[-4:])[-4:]
        if end:
            block = block[:-3]                    # the data ends with the CRLF before the "."
        received += len(block)
        if state is DataState.NOMINAL and size_limit and received > size_limit:
            state, pending = DataState.TOO_MUCH, b""
            out.discard()
        if state is DataState.NOMINAL:
            data = pending + block
            lines = data.split(b"\r\n")            # the pending CRLF first: never empty
            lf = data.count(b"\n")
            bare_lf = lf != len(lines) - 1
            if not out.smuggling:
                bare = bare_lf or data.count(b"\r") != lf
                window = carry + (block if bare else block[:_CARRY])      # no bare CR/LF inside: only the seam
                out.smuggling = _LOOK_ALIKE.search(window, 1) is not None
                carry = (carry + block[-_CARRY:])[-_CARRY:]
            if bare_lf:                                # a line end too (Postfix), stored as CRLF
                data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                lines = data.split(b"\r\n")
            cut = len(data) - 2 if end else len(data) - len(lines[-1]) - 2
            unit, pending = data[:cut], data[cut:]
            partial = len(lines[-1]) - (1 if pending.endswith(b"\r") else 0)
            if partial > max_line or (unit and max(map(len, lines[:-1])) > max_line):
                state, pending = DataState.TOO_LONG, b""
                out.discard()
            elif unit:
                unit = unit.replace(b"\r\n.", b"\r\n")       # dot-unstuffing (RFC 5321 4.5.2)
                try:
                    out.write(unit[lead:] if lead else unit)
                except OSError:
                    # Keep reading to the end of data all the same: the rest must never be taken as commands.
                    log.exception("cannot spool a message being received")
                    state, pending = DataState.FAILED, b""
                    out.discard()
                lead = 0
        if end:
            if state is DataState.NOMINAL and not lead:
                try:
                    out.write(b"\r\n")
                except OSError:
                    log.exception("cannot spool a message being received")
                    state = DataState.FAILED
                    out.discard()
            return state


class ByteBudget:
    """Message bytes being inspected at once, per process: a message waits (on disk if it was
    spooled) until its size fits, first come first served; one larger than the budget runs alone.

    Inspection holds several copies of a message (the parse, decoded parts, the relayed form), so
    this bounds the memory of large messages however many sessions send them at once."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.used = 0
        self._waiters: list[tuple[asyncio.Future, int]] = []

    async def acquire(self, n: int) -> int:
        n = max(0, min(n, self.capacity))
        if not self._waiters and self.used + n <= self.capacity:
            self.used += n
            return n
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((future, n))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(n)
            else:
                self._waiters.remove((future, n))
                self._wake()
            raise
        return n

    def release(self, n: int) -> None:
        self.used -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            future, n = self._waiters[0]
            if self.used and self.used + n > self.capacity:
                break
            self._waiters.pop(0)
            if not future.done():
                self.used += n
                future.set_result(None)
