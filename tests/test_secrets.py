"""No password, hash or token reaches the transcript, whatever the shape of the header that carried it; the files
that hold secrets are 0600; a full disk never stops serving."""
from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import stat

from hypothesis import given
from hypothesis import strategies as st

from harness.faults.base import catalog
from harness.hooks import FaultSet, Scope, describe_answer
from harness.org import load_org
from harness.protocols.http import HttpRequest
from harness.protocols.httpauth import AuthOutcome, auth_result_hook
from harness.transcript import Transcript, mask_headers, redact_text
from tests.support import transcript_schema

SECRET = "P@ssw0rd-alice"
TOKEN = base64.b64encode(f"CONTOSO\\alice:{SECRET}".encode()).decode()

names = st.sampled_from(["Authorization", "authorization", "AUTHORIZATION", "Proxy-Authorization", "Cookie",
                         "Set-Cookie"]).flatmap(
    lambda name: st.tuples(st.sampled_from(["", " ", "\t"]), st.just(name), st.sampled_from(["", " ", "\t"]))
    .map("".join))
separators = st.sampled_from([" ", "\t", "  ", " \t ", ""])
schemes = st.sampled_from(["Basic", "basic", "NTLM", "Negotiate", "Bearer", "", "Bogus", TOKEN[:8]])


@given(name=names, scheme=schemes, separator=separators, tail=st.sampled_from(["", " ", "\t", ", x"]))
def test_credential_headers_are_masked_whatever_their_shape(name, scheme, separator, tail) -> None:
    value = f"{scheme}{separator}{TOKEN}{tail}"
    text = json.dumps(mask_headers([(name, value)]))
    assert TOKEN not in text and SECRET not in text
    assert TOKEN[:12] not in text


@given(name=names, scheme=schemes, separator=separators,
       template=st.sampled_from(["illegal header line: bytearray(b'{line}')", "{line}", "x\r\n{line}\r\nHost: a",
                                 "Invalid header {line!r}"]))
def test_free_text_quoting_a_credential_header_line_is_redacted(name, scheme, separator, template) -> None:
    line = f"{name}:{separator}{scheme} {TOKEN}" if ":" not in name else name
    text = template.format(line=line)
    transcript = Transcript()
    event = transcript.record("http_error", reason=text, detail=text)
    assert TOKEN not in json.dumps(event)


def test_free_text_is_capped() -> None:
    assert len(redact_text("a" * 1_000_000)) < 2100


def test_a_fault_firing_never_records_the_password() -> None:
    """auth.wrong-password answers an AuthOutcome that holds the Mailbox (with its password): its effect text must
    not carry it, as a repr did."""
    org = load_org()
    alice = org.find("alice@contoso.test")
    events = []
    fault = catalog()["auth.wrong-password"]()
    faults = FaultSet([fault], record=lambda kind, **fields: events.append(fields))
    request = HttpRequest("POST", "/autodiscover/autodiscover.xml", "/autodiscover/autodiscover.xml", "",
                          [("Authorization", f"Basic {TOKEN}")])
    outcome = AuthOutcome("success", scheme="Basic", user="alice", domain="CONTOSO", mailbox=alice)
    answer = faults.first(auth_result_hook, Scope(user=alice.email), request, outcome)
    assert answer is not None and answer.state == "failure"
    assert alice.password not in json.dumps(events) and alice.password not in describe_answer(answer)


def _raw_exchange(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    sock.settimeout(10)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                break
    except socket.timeout:
        pass
    return data


SHAPES = [
    f"Authorization: Basic\t{TOKEN}",
    f"Authorization: {TOKEN}",
    f"Authorization : Basic {TOKEN}",             # malformed: h11 quotes the line in its error
    f"authorization:Basic {TOKEN}",
    f"Proxy-Authorization: Basic {TOKEN}",
    f"Cookie: session={TOKEN}",
]


def test_no_shape_of_credential_header_reaches_the_transcript_file(server) -> None:
    http = server.endpoints["http"]
    for shape in SHAPES:
        for port, tls in ((server.https_port, True), (http["port"], False)):
            raw = socket.create_connection((server.host, port), timeout=10)
            sock = raw
            if tls:
                context = ssl.create_default_context(cafile=server.ca_file)
                sock = context.wrap_socket(raw, server_hostname="autodiscover.contoso.test")
            with sock:
                request = (f"GET /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: autodiscover.contoso.test\r\n"
                           f"{shape}\r\nContent-Length: 0\r\n\r\n").encode()
                assert _raw_exchange(sock, request).startswith(b"HTTP/1.1 ")
    # a last request on its own connection; once its event is in, so are the earlier ones (recorded before they
    # were answered)
    with socket.create_connection((server.host, http["port"]), timeout=10) as sock:
        _raw_exchange(sock, b"GET /secrets-sentinel HTTP/1.1\r\nHost: contoso.test\r\n\r\n")
    assert server.wait_for(lambda e: e.get("path") == "/secrets-sentinel", timeout=30)
    with open(server.endpoints["transcript"], encoding="utf-8") as handle:
        text = handle.read()
    assert TOKEN not in text and SECRET not in text
    assert TOKEN[:16] not in text


def test_files_holding_secrets_are_private(server) -> None:
    for path in (os.path.join(server.state_dir, "endpoints.json"), server.endpoints["transcript"]):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_a_full_disk_loses_events_but_counts_them_and_says_so_once(tmp_path) -> None:
    transcript_schema.synthetic(tmp_path)   # made-up kinds
    path = str(tmp_path / "transcript.jsonl")
    full = {"on": False}
    warnings = []

    def opener(name: str) -> int:
        if full["on"]:
            return os.open("/dev/full", os.O_WRONLY)
        return os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    transcript = Transcript(path, opener=opener, warn=warnings.append)
    transcript.record("before")
    full["on"] = True
    transcript._fd = opener(path)          # the disk fills up under the open file
    for _ in range(5):
        transcript.record("during")         # never raises
    full["on"] = False
    transcript.record("after")
    transcript.close()
    with open(path, encoding="utf-8") as handle:
        events = [json.loads(line) for line in handle]
    assert [e["kind"] for e in events] == ["before", "transcript_gap", "after"]
    assert events[1]["lost"] == 5
    assert len(warnings) == 2 and "cannot write the transcript" in warnings[0] and "5 event(s)" in warnings[1]
