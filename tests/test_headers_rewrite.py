"""headers.rewrite: a Subject we decode and write again ends as the sender's field ended, so the lines
after it and the body are byte for byte what arrived (found by the fuzz target)."""

from __future__ import annotations

import pytest

from gateway import headers
from gateway.message import mime


@pytest.mark.parametrize("raw", [
    # a bare CR before the CRLF: the next "line" is an empty CRLF that must not become the end of the header
    b"Subject: =?x-unknown?q?Invoice?=\r\r\nX-A: 1\r\nFrom: a@example.org\r\n\r\nbody\r\n",
    b"Subject: =?utf-8?q?caf=C3=A9?=\nTo: b@example.gov\n\nbody\n",
    b"From: a@example.org\r\nSubject: =?x-unknown?b?AAAA?=\r\n\r\nbody\r\n",
])
def test_a_rewritten_subject_leaves_the_rest_of_the_message_as_it_was(raw):
    out = headers.rewrite(raw, remove=frozenset(), add=[("X-Gateway-Id", "t1")], subject_prefix="[TAG]")
    assert headers.split(out)[2] == headers.split(raw)[2]
    assert out.endswith(raw[raw.index(b"X-A") if b"X-A" in raw else raw.index(b"body"):])
    subject = next(f for f in headers.split(out)[0] if headers.field_name(f) == "subject")
    value = mime.decode_header_value(subject.partition(b":")[2].decode("ascii"))
    assert value.strip().startswith("[TAG]") and "x-unknown" not in value.lower()
