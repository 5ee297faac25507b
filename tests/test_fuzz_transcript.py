"""Fuzz target "transcript": a generated secret, carried by a credential header of any shape (any case, spacing,
scheme or none, cookie syntax, folded into another header, a corrupted line h11 refuses and quotes in its error),
never appears in the line the transcript writes (harness/transcript.py: mask_header, redact_text, record).

The secret goes through what the edge really does with a request head: the sans-IO HTTP core parses it, and the
site records either the request's masked headers and host (``http``) or h11's complaint (``http_error``)."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Iterator, Tuple

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from harness.protocols.httpconn import Deliver, HttpConnection, RefuseMalformed
from harness.transcript import KNOWN_SCHEMES, SECRET_HEADERS, Transcript, mask_headers
from tests.support import corpus
from tests.support.fuzz import scaled

# Printable ASCII but quotes and backslash (a repr would escape them, and the check looks for the secret as sent).
secrets = st.text(st.sampled_from([chr(c) for c in range(0x21, 0x7F) if chr(c) not in "'\"\\"]), min_size=8,
                  max_size=40)
names = st.tuples(st.sampled_from(sorted(SECRET_HEADERS)), st.lists(st.booleans(), min_size=19, max_size=19)).map(
    lambda pair: "".join(c.upper() if up else c for c, up in zip(pair[0], pair[1])))
schemes = st.sampled_from(["Basic", "basic", "NTLM", "Negotiate", "Kerberos", "Bearer", "Digest", "Bogus", ""])
gaps = st.sampled_from(["", " ", "\t", "  ", " \t "])
values = st.one_of(
    st.builds("{0}{1}{2}{3}{4}".format, gaps, schemes, gaps, st.just("{secret}"), st.sampled_from(["", " ", ", x"])),
    st.builds("{0}={{secret}}; path=/".format, st.sampled_from(["session", "a=b; sid", "X"])),
    st.builds('{0} realm="x", {{secret}}'.format, schemes),
)


@st.composite
def header_lines(draw: st.DrawFn) -> Tuple[bytes, str]:
    """(one header line as sent, the secret in it): a credential header in any shape, folded into the line before
    it, or with a few bytes of its name or separator changed, so that h11 may refuse and quote it."""
    secret = draw(secrets)
    value = draw(values).format(secret=secret)
    line = f"{draw(names)}{draw(gaps)}:{draw(gaps)}{value}"
    head = line[:line.index(secret)]
    if draw(st.booleans()):
        data = bytearray(head.encode("latin-1"))
        for _ in range(draw(st.integers(1, 3))):
            position = draw(st.integers(0, len(data)))
            edit = draw(st.sampled_from(["insert", "replace", "delete"]))
            byte = draw(st.integers(0, 255).filter(lambda b: b not in b"\r\n"))
            if edit == "insert" or position == len(data):
                data[position:position] = bytes([byte])
            elif edit == "replace":
                data[position] = byte
            else:
                del data[position]
        head = data.decode("latin-1")
    folded = draw(st.sampled_from(["", " ", "\t"]))       # leading whitespace: h11 folds it into the previous line
    return (folded + head + line[len(head):]).encode("latin-1"), secret


def texts(event: Any) -> Iterator[str]:
    if isinstance(event, str):
        yield event
    elif isinstance(event, dict):
        for key, value in event.items():
            yield key
            yield from texts(value)
    elif isinstance(event, list):
        for value in event:
            yield from texts(value)


def carried_as_credential(line: bytes) -> bool:
    """Whether a server reading ``line`` sees a credential header (perhaps folded into the line before it)."""
    name = line.lstrip(b" \t").partition(b":")[0].strip().decode("latin-1")
    return name.lower() in SECRET_HEADERS


def check_recorded_head(line: bytes, secret: str) -> bool:
    """The head ``Host: a`` + ``line`` through the HTTP core, recorded as the site records it: the written
    transcript line must not hold ``secret``. False when the secret is not a credential's (h11 read the line
    as another header: an edit made a new name of it), nothing checked."""
    if secret.lower() in KNOWN_SCHEMES | SECRET_HEADERS or secret in "GET /x HTTP/1.1 Host: a":
        return False
    core = HttpConnection()
    core.start()
    actions = core.receive(b"GET /x HTTP/1.1\r\nHost: a\r\n" + line + b"\r\n\r\n")
    if any(isinstance(action, Deliver) for action in actions) and not carried_as_credential(line):
        return False
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "transcript.jsonl")
        transcript = Transcript(path)
        for action in actions:
            if isinstance(action, Deliver):   # as ExchangeSite.response_sent and RedirectSite record them
                request = action.request
                transcript.record("http", method=request.method, path=request.target, host=request.host,
                                  request_headers=mask_headers(request.headers))
            elif isinstance(action, RefuseMalformed):   # as the sites' bad_request
                transcript.record("http_error", status=action.status, reason=action.message)
        transcript.close()
        with open(path, encoding="utf-8") as handle:
            written = handle.read()
    assert written, "nothing was recorded"
    assert secret not in written
    assert not any(secret in text for event in map(json.loads, written.splitlines()) for text in texts(event))
    return True


@settings(max_examples=scaled(300), deadline=None)
@given(header_lines())
def test_a_secret_in_any_shape_of_credential_header_never_reaches_the_transcript_file(line_and_secret):
    assume(check_recorded_head(*line_and_secret))


@pytest.mark.parametrize("entry", corpus.entries("transcript"))
def test_transcript_corpus(entry):
    assert check_recorded_head(corpus.as_bytes(entry["line"]), entry["secret"])
