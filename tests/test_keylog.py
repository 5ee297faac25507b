"""`mockex serve --keylog FILE` (or SSLKEYLOGFILE): every TLS session's secrets in the NSS key log format, so that
Wireshark decrypts a capture of the loopback interface. tshark is the judge where it is installed."""
from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import socket
import ssl
import stat
import subprocess
from typing import Callable, Iterator, Sequence

import pytest

from harness.testing import start_server
from tests.support.autodiscover import pox_request
from tests.support.clients import curl, exchanger, needs_exchanger, requires_exchanger
from tests.support.servers import start_on_port_443

TSHARK = shutil.which("tshark")
LABELS = {b"CLIENT_RANDOM", b"CLIENT_HANDSHAKE_TRAFFIC_SECRET", b"SERVER_HANDSHAKE_TRAFFIC_SECRET",
          b"CLIENT_TRAFFIC_SECRET_0", b"SERVER_TRAFFIC_SECRET_0", b"EXPORTER_SECRET"}


@pytest.fixture
def keylogged(tmp_path):
    keys = tmp_path / "keys.log"
    served = start_server(str(tmp_path / "state"), "--keylog", str(keys))
    yield served, keys
    served.stop()


def handshake(served, version: ssl.TLSVersion) -> None:
    """One TLS session at ``version``, with one request in it."""
    context = ssl.create_default_context(cafile=served.ca_file)
    context.minimum_version = context.maximum_version = version
    with socket.create_connection(("127.0.0.1", served.endpoints["https"]["port"]), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname="mail.contoso.test") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: mail.contoso.test\r\nConnection: close\r\n\r\n")
            tls.recv(1)


def labels_of(keys) -> list:
    lines = keys.read_bytes().splitlines()
    assert all(len(line.split(b" ")) == 3 and len(line.split(b" ")[1]) == 64 for line in lines)
    return [line.split(b" ")[0] for line in lines]


def test_every_session_is_logged_in_nss_format_in_a_private_file(keylogged):
    """TLS 1.2, as Exchange 2013 speaks it: one CLIENT_RANDOM line (the master secret) per session."""
    served, keys = keylogged
    handshake(served, ssl.TLSVersion.TLSv1_2)
    handshake(served, ssl.TLSVersion.TLSv1_2)
    assert labels_of(keys) == [b"CLIENT_RANDOM"] * 2
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600
    assert served.endpoints["keylog"] == str(keys)


def test_tls_1_3_sessions_log_their_traffic_secrets(tmp_path):
    """Served with `--tls-max 1.3` (a newer server): a TLS 1.3 session logs its five secrets, a TLS 1.2 one its
    CLIENT_RANDOM line."""
    keys = tmp_path / "keys.log"
    served = start_server(str(tmp_path / "state"), "--keylog", str(keys), "--tls-max", "1.3")
    try:
        handshake(served, ssl.TLSVersion.TLSv1_2)
        handshake(served, ssl.TLSVersion.TLSv1_3)
    finally:
        served.stop()
    labels = labels_of(keys)
    assert labels.count(b"CLIENT_RANDOM") == 1                    # the TLS 1.2 session
    assert labels.count(b"CLIENT_TRAFFIC_SECRET_0") == 1          # the TLS 1.3 one
    assert set(labels) == LABELS


@contextlib.contextmanager
def capturing(host: str, port: int, capture, tls_port: Sequence[str]) -> Iterator[Callable[[], None]]:
    """tshark capturing ``host``:``port`` on lo into ``capture`` for the block, which gets ``wait_for_all()``:
    returns once every packet sent so far is in the capture."""
    # -P -l: a summary line per packet as it is written, so the test knows when the capture holds the whole exchange
    sniffer = subprocess.Popen([TSHARK, "-i", "lo", "-f", f"host {host} and tcp port {port}", *tls_port, "-w",
                                str(capture), "-P", "-l"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        started = b""
        while b"Capturing on" not in started:   # tshark says so once the capture runs
            ready, _, _ = select.select([sniffer.stderr], [], [], 60)
            chunk = os.read(sniffer.stderr.fileno(), 4096) if ready else b""
            if not chunk:
                pytest.skip(f"tshark cannot capture on lo here: {started.decode(errors='replace')[-300:]}")
            started += chunk
        # The capture runs some time after tshark says so: knock on the port until a packet shows up in it.
        for _ in range(400):
            socket.create_connection((host, port), timeout=30).close()
            if select.select([sniffer.stdout], [], [], 0.25)[0]:
                break
        else:
            pytest.skip("tshark never saw a packet on lo")
        os.read(sniffer.stdout.fileno(), 65536)

        def wait_for_all() -> None:
            """Everything sent so far is in the file: a marker connection made now is captured after it, so once
            the marker's FIN shows up in tshark's summaries, nothing before it can still be missing."""
            with socket.create_connection((host, port), timeout=30) as marker:
                marker_port = marker.getsockname()[1]
            seen = b""
            needle = f"{marker_port} \u2192 {port} [FIN".encode()
            while needle not in seen:
                ready, _, _ = select.select([sniffer.stdout], [], [], 60)
                chunk = os.read(sniffer.stdout.fileno(), 65536) if ready else b""
                assert chunk, f"the capture stopped early: {seen.decode(errors='replace')[-500:]}"
                seen += chunk
        yield wait_for_all
    finally:
        sniffer.send_signal(signal.SIGINT)
        sniffer.wait(timeout=60)


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (Debian: apt-get install tshark)")
def test_tshark_decrypts_a_capture_of_a_curl_pox_exchange(keylogged, tmp_path):
    served, keys = keylogged
    port, capture = served.endpoints["https"]["port"], tmp_path / "lo.pcapng"
    tls_port = ["-d", f"tcp.port=={port},tls"]   # an ephemeral port: say it carries TLS
    with capturing("127.0.0.1", port, capture, tls_port) as wait_for_all:
        alice = served.user("alice")
        answer = curl(served, "autodiscover.contoso.test", "-u", f"{alice['upn']}:{alice['password']}",
                      data=pox_request())
        assert answer.status == 200
        wait_for_all()
    assert set(labels_of(keys)) == {b"CLIENT_RANDOM"}   # TLS 1.2, as Exchange 2013 speaks it
    read = [TSHARK, "-r", str(capture), *tls_port, "-o", f"tls.keylog_file:{keys}"]
    requests = subprocess.run(read + ["-Y", "http.request", "-T", "fields", "-e", "http.request.method",
                                      "-e", "http.request.uri"], capture_output=True, text=True, timeout=120)
    assert "POST\t/autodiscover/autodiscover.xml" in requests.stdout.splitlines(), requests.stderr
    malformed = subprocess.run(read + ["-Y", "_ws.malformed"], capture_output=True, text=True, timeout=120)
    assert malformed.stdout.strip() == ""
    without_keys = subprocess.run([TSHARK, "-r", str(capture), *tls_port, "-Y", "http.request"], capture_output=True,
                                  text=True, timeout=120)
    assert without_keys.stdout.strip() == ""   # the keys are what made the difference


@requires_exchanger
@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (Debian: apt-get install tshark)")
def test_tshark_decrypts_a_capture_of_an_exchanger_session(tmp_path):
    """Outlook Anywhere as impacket's exchanger.py speaks it (NTLM on both channels, RPC over HTTP at :443):
    with the key log tshark shows its RPC_IN_DATA/RPC_OUT_DATA requests, and nothing malformed."""
    keys, capture = tmp_path / "keys.log", tmp_path / "lo.pcapng"
    served = start_on_port_443(str(tmp_path / "state"), "--keylog", str(keys))
    try:
        needs_exchanger(served)
        with capturing(served.host, 443, capture, []) as wait_for_all:
            result = exchanger(served, ["nspi", "list-tables"])
            assert result.returncode == 0, result.stderr
            wait_for_all()
    finally:
        served.stop()
    read = [TSHARK, "-r", str(capture), "-o", f"tls.keylog_file:{keys}"]
    requests = subprocess.run(read + ["-Y", "http.request", "-T", "fields", "-e", "http.request.method"],
                              capture_output=True, text=True, timeout=120)
    methods = requests.stdout.split()
    assert "RPC_IN_DATA" in methods and "RPC_OUT_DATA" in methods, requests.stderr
    malformed = subprocess.run(read + ["-Y", "_ws.malformed"], capture_output=True, text=True, timeout=120)
    assert malformed.stdout.strip() == ""


def request_type(fields: str) -> str:
    """X-RequestType from tshark's http.request.line / http.response.line (header lines as written, CRLF escaped)."""
    match = re.search(r"X-RequestType: (\w+)", fields)
    assert match, fields
    return match.group(1)


MAPI_HTTP_ON = "name: mapi-http-on\nconfig:\n  mapi_http: {Enabled: true}\nexpect:\n  analyzer: {passes: true}\n"


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (Debian: apt-get install tshark)")
def test_tshark_decrypts_a_capture_of_a_mapi_http_session(tmp_path):
    """The probe's MAPI over HTTP session (Connect, Execute x3, Disconnect on /mapi/emsmdb/; Bind, ResolveNames,
    Unbind on /mapi/nspi/ after the Connect; chunked PROCESSING/DONE answers): with the key log tshark's HTTP
    dissector reads every request and answer, and
    nothing is malformed. (Wireshark 4.0 has no MAPI/HTTP body dissector: its "MAPI" is the Exchange 5.5 EMSMDB
    over DCE/RPC, so the judge is the HTTP layer.)"""
    from harness.probe.runner import probe
    from tests.support.clients import probe_options
    keys, capture, scenario = tmp_path / "keys.log", tmp_path / "lo.pcapng", tmp_path / "mapi.yaml"
    scenario.write_text(MAPI_HTTP_ON)
    served = start_server(str(tmp_path / "state"), "--keylog", str(keys), "--scenario", str(scenario))
    try:
        port = served.endpoints["https"]["port"]
        tls_port = ["-d", f"tcp.port=={port},tls"]
        with capturing("127.0.0.1", port, capture, tls_port) as wait_for_all:
            report = probe(probe_options(served))
            assert report.verdict.passed and report.phases[-1].id == "mapi-http"
            wait_for_all()
    finally:
        served.stop()
    read = [TSHARK, "-r", str(capture), *tls_port, "-o", f"tls.keylog_file:{keys}"]
    requests = subprocess.run(read + ["-Y", 'http.request.uri contains "/mapi/emsmdb/"', "-T", "fields",
                                      "-e", "http.request.method", "-e", "http.request.line"],
                              capture_output=True, text=True, timeout=120)
    lines = requests.stdout.splitlines()
    assert lines and all(line.startswith("POST\t") for line in lines), requests.stderr
    kinds = [request_type(line) for line in lines]
    authenticated = [kind for kind, line in zip(kinds, lines) if "Cookie: MapiContext=" in line]
    assert kinds[0] == "Connect" and "Connect" not in authenticated   # Connect opens the session: no cookie yet
    assert authenticated == ["Execute"] * 3 + ["Disconnect"]
    book = subprocess.run(read + ["-Y", 'http.request.uri contains "/mapi/nspi/"', "-T", "fields",
                                  "-e", "http.request.method", "-e", "http.request.line"],
                          capture_output=True, text=True, timeout=120).stdout.splitlines()
    book_kinds = [request_type(line) for line in book]
    assert book_kinds[0] == "Bind" and [kind for kind, line in zip(book_kinds, book)
                                        if "Cookie: MapiContext=" in line] == ["ResolveNames", "Unbind"]
    answers = subprocess.run(read + ["-Y", 'http.response and http.content_type == "application/mapi-http"',
                                     "-T", "fields", "-e", "http.response.code", "-e", "http.response.line"],
                             capture_output=True, text=True, timeout=120)
    answered = answers.stdout.splitlines()
    assert len(answered) == 8 and all(line.startswith("200\t") and "X-ResponseCode: 0" in line
                                      and "Transfer-Encoding: chunked" in line for line in answered), answers.stdout
    assert [request_type(line) for line in answered] == ["Connect", "Bind", "ResolveNames", "Unbind", "Execute",
                                                         "Execute", "Execute", "Disconnect"]
    # the bodies too: the Connect request names the mailbox's legacy DN, each chunked answer is PROCESSING ... DONE
    bodies = subprocess.run(read + ["-Y", 'http.request.line contains "X-RequestType: Connect" and '
                                          'http.file_data contains "/o=Contoso"'], capture_output=True, text=True,
                            timeout=120)
    assert bodies.stdout.strip(), bodies.stderr
    done = subprocess.run(read + ["-Y", 'http.response and http.file_data contains "PROCESSING\r\nDONE\r\n"'],
                          capture_output=True, text=True, timeout=120)
    assert len(done.stdout.splitlines()) == 8, done.stdout
    malformed = subprocess.run(read + ["-Y", "_ws.malformed"], capture_output=True, text=True, timeout=120)
    assert malformed.stdout.strip() == ""
    count = subprocess.run(read + ["-Y", "tls.app_data"], capture_output=True, text=True, timeout=120)
    assert len(count.stdout.splitlines()) > 10    # the exchange above really went through the decrypted stream
