"""The transcript file (harness/transcript.py) in-process on a tmp dir: the size cap rotates it without losing or
renumbering an event, batches go out in one write system call (one per HTTP request through the site), and lost
writes are counted per event also when they carried a batch."""
from __future__ import annotations

import base64
import errno
import itertools
import json
import os
import random
import stat
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from harness import cli
from harness import transcript as transcript_module
from harness.org import load_org
from harness.protocols.autodiscover import SiteUrls
from harness.services.site import ExchangeSite
from harness.services.web import HttpFactory
from harness.transcript import Transcript
from tests.support import transcript_schema
from tests.support.fuzz import scaled

MARKERS = ("transcript_rotated", "transcript_gap")


@pytest.fixture(autouse=True)
def _made_up_events(request: pytest.FixtureRequest) -> None:
    """These tests record made-up kinds ("old", "huge", ...): the suite's schema check passes over their files."""
    if "tmp_path" in request.fixturenames:
        transcript_schema.synthetic(request.getfixturevalue("tmp_path"))


class CountingOs:
    """Stands in for the ``os`` module inside harness.transcript: counts write calls, and can make them fail or
    come up short, or refuse renames."""

    def __init__(self) -> None:
        self.writes: List[bytes] = []
        self.failure: Optional[str] = None     # None, "full" (ENOSPC) or "short" (half the bytes, then stop)
        self.refuse_renames = False

    def replace(self, source: str, target: str) -> None:
        if self.refuse_renames:
            raise OSError(errno.EACCES, "Permission denied")
        os.replace(source, target)

    def write(self, fd: int, data: bytes) -> int:
        self.writes.append(data)
        if self.failure == "full":
            raise OSError(errno.ENOSPC, "No space left on device")
        if self.failure == "short":
            return os.write(fd, data[:len(data) // 2])
        return os.write(fd, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


@pytest.fixture
def counting_os(monkeypatch: pytest.MonkeyPatch) -> CountingOs:
    fake = CountingOs()
    monkeypatch.setattr(transcript_module, "os", fake)
    return fake


def fake_clock() -> Callable[[], float]:
    ticks = itertools.count()
    return lambda: 1_700_000_000 + next(ticks) / 1000


def read_lines(path: str) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    assert text.endswith("\n") or not text, f"{path} ends in a torn line"
    return [json.loads(line) for line in text.splitlines()]


def files_oldest_first(path: str) -> List[str]:
    rotated = sorted((name for name in os.listdir(os.path.dirname(path))
                      if name.startswith(os.path.basename(path) + ".")), key=lambda name: -int(name.rsplit(".", 1)[1]))
    return [os.path.join(os.path.dirname(path), name) for name in rotated] + [path]


def record_many(transcript: Transcript, count: int) -> None:
    rng = random.Random(7)
    for index in range(count):   # lines of different lengths, so the cap falls between lines in many ways
        transcript.record("http", conn=index, path="/autodiscover/autodiscover.xml", note="x" * rng.randrange(200))


# ---- the size cap ---------------------------------------------------------------------------------------------
def test_a_capped_transcript_rotates_without_losing_or_renumbering_an_event(tmp_path) -> None:
    path, cap = str(tmp_path / "transcript.jsonl"), 2000
    transcript = Transcript(path, fake_clock(), max_bytes=cap, keep=100)
    record_many(transcript, 300)
    transcript.close()
    files = files_oldest_first(path)
    assert len(files) > 10 and os.path.basename(files[0]) == "transcript.jsonl.%d" % (len(files) - 1)
    seqs, previous_last = [], None
    for index, name in enumerate(files):
        assert os.path.getsize(name) <= cap, name
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600, name
        lines = read_lines(name)
        if index:   # every file but the first says where it continues from
            assert lines[0]["kind"] == "transcript_rotated" and lines[0]["previous"] == "transcript.jsonl.1"
            assert lines[0]["continues_from"] == previous_last and lines[0]["seq"] == lines[1]["seq"]
        events = [line for line in lines if line["kind"] not in MARKERS]
        seqs += [event["seq"] for event in events]
        previous_last = events[-1]["seq"]
    assert seqs == list(range(1, 301))


def test_only_keep_rotated_files_stay_the_oldest_is_dropped(tmp_path) -> None:
    path = str(tmp_path / "transcript.jsonl")
    transcript = Transcript(path, fake_clock(), max_bytes=1500, keep=2)
    record_many(transcript, 200)
    transcript.close()
    assert sorted(os.listdir(tmp_path)) == ["transcript.jsonl", "transcript.jsonl.1", "transcript.jsonl.2"]
    seqs = [line["seq"] for name in files_oldest_first(path) for line in read_lines(name)
            if line["kind"] not in MARKERS]
    assert seqs[0] > 1 and seqs == list(range(seqs[0], 201))   # the newest events, in order, none missing


def test_an_event_longer_than_the_cap_is_a_file_of_its_own(tmp_path) -> None:
    path = str(tmp_path / "transcript.jsonl")
    transcript = Transcript(path, fake_clock(), max_bytes=1000)
    transcript.record("small")
    transcript.record("huge", items=list(range(1000)))   # a list is not capped like free text is
    transcript.record("after")
    transcript.close()
    assert [[line["kind"] for line in read_lines(name)] for name in files_oldest_first(path)] == [
        ["small"], ["transcript_rotated", "huge"], ["transcript_rotated", "after"]]
    assert os.path.getsize(path + ".1") > 1000


def test_a_file_left_over_the_cap_by_an_earlier_run_rotates_at_the_first_write(tmp_path) -> None:
    path = tmp_path / "transcript.jsonl"
    path.write_text('{"seq": 1, "kind": "old"}\n' * 100)
    transcript = Transcript(str(path), fake_clock(), max_bytes=1000)
    transcript.record("new")
    transcript.close()
    (marker, event) = read_lines(str(path))
    assert (marker["kind"], marker["continues_from"], event["kind"]) == ("transcript_rotated", None, "new")
    assert len(read_lines(str(path) + ".1")) == 100


def test_a_failed_rotation_keeps_writing_to_the_current_file(tmp_path, counting_os) -> None:
    path, warnings = str(tmp_path / "transcript.jsonl"), []
    transcript = Transcript(path, fake_clock(), max_bytes=1000, warn=warnings.append)
    counting_os.refuse_renames = True
    record_many(transcript, 60)
    transcript.close()
    assert [line["seq"] for line in read_lines(path)] == list(range(1, 61)) and os.listdir(tmp_path) == [
        "transcript.jsonl"]
    assert warnings and all("cannot rotate the transcript" in text for text in warnings)
    # tried again once per cap's worth of bytes, not at every event
    assert len(warnings) <= os.path.getsize(path) // 1000 + 1 < 60 // 2


# ---- batches ----------------------------------------------------------------------------------------------------
def test_a_batch_is_one_write_and_listeners_still_see_each_event_at_once(tmp_path, counting_os) -> None:
    transcript = Transcript(str(tmp_path / "t.jsonl"), fake_clock())
    seen: List[str] = []
    transcript.listeners.append(lambda event: seen.append(event["kind"]))
    with transcript.batch():
        transcript.record("a")
        with transcript.batch():   # re-entrant: only the outermost block writes
            transcript.record("b")
        assert seen == ["a", "b"] and counting_os.writes == []
        transcript.record("c")
    assert len(counting_os.writes) == 1
    transcript.record("d")
    assert len(counting_os.writes) == 2
    assert [line["kind"] for line in read_lines(transcript.path)] == ["a", "b", "c", "d"]


def test_a_batch_is_written_even_when_its_block_raises(tmp_path) -> None:
    transcript = Transcript(str(tmp_path / "t.jsonl"), fake_clock())
    with pytest.raises(RuntimeError):
        with transcript.batch():
            transcript.record("before-the-error")
            raise RuntimeError("boom")
    assert [line["kind"] for line in read_lines(transcript.path)] == ["before-the-error"]


def test_a_batch_crossing_the_cap_rotates_in_between(tmp_path, counting_os) -> None:
    path = str(tmp_path / "transcript.jsonl")
    transcript = Transcript(path, fake_clock(), max_bytes=2000, keep=10)
    with transcript.batch():
        record_many(transcript, 40)
    transcript.close()
    files = files_oldest_first(path)
    assert len(files) > 1 and len(counting_os.writes) == len(files)   # one write per file
    assert all(os.path.getsize(name) <= 2000 for name in files)
    assert [line["seq"] for name in files for line in read_lines(name) if line["kind"] not in MARKERS] == list(
        range(1, 41))


def one_connection(factory: HttpFactory) -> Any:
    transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8443),
                                peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
    protocol = factory.buildProtocol(transport.getPeer())
    protocol.makeConnection(transport)
    return protocol, transport


def test_a_request_through_the_site_is_one_write(tmp_path, counting_os) -> None:
    org = load_org()
    alice = org.mailboxes[0]
    transcript = Transcript(str(tmp_path / "transcript.jsonl"), fake_clock())
    site = ExchangeSite(org, transcript, random.Random(1), SiteUrls.for_org(org, 8443))
    protocol, transport = one_connection(HttpFactory(site, tls=False, clock=task.Clock()))
    token = base64.b64encode(f"alice@contoso.test:{alice.password}".encode()).decode()
    body = (b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
            b'<Request><EMailAddress>alice@contoso.test</EMailAddress><AcceptableResponseSchema>'
            b'http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a'
            b'</AcceptableResponseSchema></Request></Autodiscover>')
    request = (f"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: autodiscover.contoso.test\r\n"
               f"Authorization: Basic {token}\r\nContent-Type: text/xml\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    for _ in range(3):
        before = len(counting_os.writes)
        protocol.dataReceived(request)
        assert transport.value().startswith(b"HTTP/1.1 200 OK\r\n")
        transport.clear()
        assert len(counting_os.writes) - before == 1
    transcript.close()
    kinds = [line["kind"] for line in read_lines(str(tmp_path / "transcript.jsonl"))]
    assert kinds == ["connect"] + ["auth", "autodiscover", "http"] * 3


def test_an_app_without_batch_is_served_as_before(tmp_path) -> None:
    """web.py asks the app for a batch only if it has one (test apps and other embedders need not)."""
    class Minimal:
        def connection_made(self, info: Any) -> None: ...
        def connection_lost(self, info: Any, reason: str) -> None: ...
        def response_sent(self, request: Any, response: Any, elapsed: float) -> None: ...

        def handle(self, request: Any) -> Any:
            from harness.protocols.http import HttpResponse
            return HttpResponse(200, "OK", [("Content-Type", "text/plain")], b"ok")

    protocol, transport = one_connection(HttpFactory(Minimal(), tls=False, clock=task.Clock()))
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 200 OK\r\n")


# ---- lost writes ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("failure", ["full", "short"])
def test_a_lost_batch_counts_each_of_its_events_and_leaves_no_torn_line(tmp_path, counting_os, failure) -> None:
    path, warnings = str(tmp_path / "t.jsonl"), []
    transcript = Transcript(path, fake_clock(), warn=warnings.append)
    transcript.record("before")
    counting_os.failure = failure
    with transcript.batch():
        for _ in range(4):
            transcript.record("during")
    transcript.record("during")                  # a lone event lost too: 5 in all
    counting_os.failure = None
    with transcript.batch():
        transcript.record("after")
        transcript.record("after")
    transcript.close()
    lines = read_lines(path)
    assert [line["kind"] for line in lines] == ["before", "transcript_gap", "after", "after"]
    assert lines[1]["lost"] == 5 and lines[1]["seq"] == lines[2]["seq"] == 7
    assert transcript.dropped == 0 and transcript.dropped_total == 5
    assert len(warnings) == 2 and "5 event(s)" in warnings[1]


def test_a_rotation_during_an_outage_keeps_both_markers(tmp_path, counting_os) -> None:
    path = str(tmp_path / "transcript.jsonl")
    transcript = Transcript(path, fake_clock(), max_bytes=1000, warn=lambda text: None)
    record_many(transcript, 5)
    last_written = read_lines(path)[-1]["seq"]
    counting_os.failure = "full"
    for _ in range(20):
        transcript.record("lost", note="y" * 100)   # enough to cross the cap: the file rotates, the writes fail
    counting_os.failure = None
    transcript.record("back")
    transcript.close()
    marker, gap, back = read_lines(path)
    assert (marker["kind"], marker["continues_from"]) == ("transcript_rotated", last_written)
    assert (gap["kind"], gap["lost"], back["kind"], back["seq"]) == ("transcript_gap", 20, "back", 26)


# ---- the command line ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, value", [("0", None), ("4096", 4096), ("50M", 50 << 20), ("8k", 8192),
                                         ("1G", 1 << 30)])
def test_transcript_size_values(text: str, value: Optional[int]) -> None:
    assert cli.transcript_max_bytes(text) == value


@pytest.mark.parametrize("args, message", [
    (["--transcript-max-bytes", "lots"], "--transcript-max-bytes 'lots': expected a size in bytes"),
    (["--transcript-max-bytes", "-5"], "expected a size in bytes"),
    (["--transcript-max-bytes", "100"], "at least 4096 bytes"),
    (["--transcript-keep", "0"], "--transcript-keep '0': expected a number of files, 1..100"),
    (["--transcript-keep", "three"], "expected a number of files"),
])
def test_a_bad_transcript_option_is_one_line_and_exit_2(tmp_path, capsys, args: List[str], message: str) -> None:
    assert cli.main(["serve", "--state-dir", str(tmp_path / "state"), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mockex: ") and message in err
    assert not os.path.exists(tmp_path / "state")   # refused before anything started


def test_the_transcript_options_reach_the_server_options(monkeypatch, tmp_path) -> None:
    from harness.services import server as server_module
    seen: Dict[str, Any] = {}

    class Refused(Exception):
        pass

    def capture(org: Any, options: Any, **_: Any) -> Iterator[None]:
        seen["options"] = options
        raise Refused

    monkeypatch.setattr(server_module, "MockExchange", capture)
    with pytest.raises(Refused):
        cli.main(["serve", "--state-dir", str(tmp_path), "--transcript-max-bytes", "64K", "--transcript-keep", "5"])
    assert (seen["options"].transcript_max_bytes, seen["options"].transcript_keep) == (65536, 5)


# ---- the cheaper hot path writes the same text --------------------------------------------------------------
def test_lines_are_what_json_dumps_writes(tmp_path) -> None:
    path = str(tmp_path / "t.jsonl")
    transcript = Transcript(path, lambda: 1_700_000_000.1234567)
    fields = dict(text="caf\u00e9 \u2603 \"quoted\"\n", number=1.5, flag=None, nested=[["a", 1], {"b": (2, 3)}],
                  other=ValueError("not JSON"), big=10 ** 30)
    event = transcript.record("kind", **fields)
    transcript.close()
    with open(path, encoding="utf-8") as handle:
        assert handle.read() == json.dumps(event, default=str) + "\n"
    assert event["time"] == 1_700_000_000.123457   # microseconds, as round(t, 6)


def test_header_masking_stays_whatever_names_were_seen_before() -> None:
    names = [f"X-Name-{index}" for index in range(2000)] + ["Authorization", " authorization", "Cookie"]
    for _ in range(2):   # the second time every plain name is known
        masked = dict((name, value) for name, value in transcript_module.mask_headers(
            [(name, "Basic c2VjcmV0OnNlY3JldA==") for name in names]))
        assert masked["X-Name-5"] == "Basic c2VjcmV0OnNlY3JldA=="
        assert all(masked[name] == "Basic ***(20 chars)" for name in ("Authorization", " authorization"))
        assert masked["Cookie"] == "Basic ***(20 chars)"   # a known scheme word is kept, whatever the header
    assert len(transcript_module._PLAIN_NAMES) <= transcript_module._MAX_PLAIN_NAMES


# A credential header name with each letter as it is, upper-cased or swapped for a non-ASCII case partner the
# pattern also matches (Kelvin sign for k, dotless i and dotted capital I for i, long s for s), then a separator.
PARTNERS = {"k": "\u212a", "i": "\u0131\u0130", "s": "\u017f"}


@st.composite
def credential_text(draw: Callable[..., Any]) -> str:
    name = draw(st.sampled_from(["authorization", "proxy-authorization", "cookie", "set-cookie", "cookies", "auth"]))
    letters = [draw(st.sampled_from([c, c.upper(), *PARTNERS.get(c, "")])) for c in name]
    separator = draw(st.sampled_from(["", ":", " :", "\t: ", "\\r:", "\r\n:"]))
    return "".join(letters) + separator + draw(st.text(max_size=6))


def pattern_only_redaction(text: str) -> str:
    """What header values were redacted to before the ASCII shortcut: the pattern run on every value with a colon."""
    if ":" in text and transcript_module._SECRET_TEXT.search(text):
        text = transcript_module._SECRET_TEXT.sub(lambda m: f"{m.group(1)}: ***", text)
    if "illegal " in text:
        text = transcript_module._REFUSED_LINE.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)} ***{m.group(2)}"
                                                   + (")" if "(" in m.group(1) else ""), text)
    return text


@settings(max_examples=scaled(400), deadline=None)
@given(before=st.text(max_size=8), middle=credential_text(), after=st.text(max_size=8))
def test_the_cheap_credential_check_agrees_with_the_pattern(before: str, middle: str, after: str) -> None:
    """The ASCII shortcut of ``_quotes_credentials`` never rules out text the pattern would find (case-insensitive
    matching also pairs the Kelvin sign with k, a dotless i with i, a long s with s)."""
    text = before + middle + after
    assert transcript_module._quotes_credentials(text) == bool(transcript_module._SECRET_TEXT.search(text))
    for header in ("Date", "X-Whatever"):   # a credential line folded into another header is hidden either way
        assert transcript_module.mask_headers([(header, text)]) == [[header, pattern_only_redaction(text)]]
    assert transcript_module.redact_text(text) == pattern_only_redaction(text)


def test_a_folded_credential_line_in_any_case_is_hidden_from_header_values() -> None:
    for value in ("Sun, 06 Dec 2026 12:13:04 GMT\r\n AUTHORIZATION: Basic c2VjcmV0", "x\r\ncOoKiE: id=secret",
                  "x\r\ncoo\u212aie: id=secret", "x\r\nauthor\u0131zation: Basic c2VjcmV0"):   # Kelvin sign, dotless i
        masked = transcript_module.mask_headers([("Date", value)])[0][1]
        assert "secret" not in masked and "c2VjcmV0" not in masked, masked
    assert transcript_module.mask_headers([("Date", "Sun, 06 Dec 2026 12:13:04 GMT")]) == \
        [["Date", "Sun, 06 Dec 2026 12:13:04 GMT"]]
