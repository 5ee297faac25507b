"""Network faults as real clients see them: curl exit codes, socket errnos, ssl and http.client errors.

Each server carries several faults, one host each (hosts with a port-level fault get their own loopback address,
which endpoints.json and DNS give out); the servers of this module start in parallel, once.
"""
from __future__ import annotations

import errno
import http.client
import signal
import socket
import ssl
import time

import pytest

from harness.scenario import load_scenario
from harness.yamlfile import SpecError
from tests.support.clients import AUTODISCOVER, EX01, EX02, MAIL, POX_PATH, ROOT, address, curl, dns_query, tls_socket
from tests.support.servers import EXPECT_PASSES, scenario_args, scenario_servers, server_running
from tests.support.transcript import fault_fired

SCENARIOS = {
    "connect": f"""
name: connect
faults:
  - network.refused: {{host: {AUTODISCOVER}}}
  - network.blackhole: {{host: {EX01}}}
  - network.reset: {{host: {EX02}}}
  - network.stall: {{host: {MAIL}}}
  - network.refused: {{host: {ROOT}, port: 80}}
""",
    "output": f"""
name: output
faults:
  - network.reset: {{host: {MAIL}, when: after-bytes, bytes: 100}}
  - network.reset: {{host: {EX01}, when: mid-response}}
  - network.truncate-body: {{host: {AUTODISCOVER}, keep: 50}}
  - network.close-after-headers: {{host: {EX02}}}
  - network.slicer: {{host: {ROOT}, average_size: 16, size_variation: 8}}
""",
    "pacing": f"""
name: pacing
faults:
  - network.latency: {{host: {EX02}, ms: 400, jitter_ms: 50}}
  - network.bandwidth: {{host: {AUTODISCOVER}, bytes_per_second: 2000}}
  - network.stall: {{host: {EX01}, when: response}}
  - network.stall: {{host: {MAIL}, when: response, seconds: 0.3}}
  - network.reset: {{when: after-bytes, bytes: 10, port: 80}}
""",
}

STEPPED = f"""
name: stepped
faults:
  - network.blackhole: {{port: 80}}
steps:
  - after: {{requests: 1, status: 401}}
    apply: [{{network.refused: {{host: {MAIL}}}}}]
"""


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """The servers of SCENARIOS by name, started in parallel once."""
    scenarios = {name: text + EXPECT_PASSES for name, text in SCENARIOS.items()}
    with scenario_servers(tmp_path_factory.mktemp("network"), scenarios) as started:
        yield started


def read_until_error(sock) -> tuple:
    """(the sizes of each read, the exception that ended reading or 'eof')."""
    sizes = []
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return sizes, "eof"
            sizes.append(len(data))
    except OSError as exc:
        return sizes, exc


def get(host: str) -> bytes:
    return f"GET {POX_PATH} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def response_to_get(sock, host: str) -> http.client.HTTPResponse:
    sock.sendall(get(host))
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response


# ---- the port itself -------------------------------------------------------------------------------------------
def test_refused_port_gives_econnrefused_and_curl_7(servers):
    served = servers["connect"]
    dedicated = address(served, AUTODISCOVER)
    assert dedicated != served.host and dedicated.startswith("127.")
    answer = dns_query(served, AUTODISCOVER, "A")
    assert [r.address for rrset in answer.answer for r in rrset] == [dedicated]
    with pytest.raises(ConnectionRefusedError) as refused:
        socket.create_connection((dedicated, served.https_port), timeout=2)
    assert refused.value.errno == errno.ECONNREFUSED
    result = curl(served, AUTODISCOVER)
    assert result.exit_code == 7 and "Failed to connect" in result.stderr
    assert curl(served, AUTODISCOVER, scheme="http").status == 302  # only the HTTPS port is closed
    assert served.endpoints["listeners"][dedicated] == {"https": "refused", "http": "open"}
    assert served.wait_for(lambda e: e["kind"] == "listener" and e["address"] == dedicated and e["role"] == "https"
                           and e["state"] == "refused" and e["fault"] == "network.refused")


def test_refused_port_80_leaves_https_alone(servers):
    served = servers["connect"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address(served, ROOT), served.endpoints["http"]["port"]), timeout=2)
    assert curl(served, ROOT, scheme="http").exit_code == 7
    assert curl(served, ROOT).status == 401


def test_blackholed_port_times_out_the_connect(servers):
    served = servers["connect"]
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        socket.create_connection((address(served, EX01), served.https_port), timeout=0.5)
    assert time.monotonic() - started >= 0.45
    result = curl(served, EX01, "--connect-timeout", "0.5")
    assert result.exit_code == 28 and "Failed to connect" in result.stderr
    assert served.endpoints["listeners"][address(served, EX01)]["https"] == "blackhole"


def test_reset_at_connect_breaks_the_handshake(servers):
    served = servers["connect"]
    with pytest.raises(ConnectionResetError) as reset:
        tls_socket(served, EX02)
    assert reset.value.errno == errno.ECONNRESET
    result = curl(served, EX02)
    # curl reports the RST as a failed connect (7) when it lands before curl looked, else as a failed handshake
    assert (result.exit_code, result.exit_code == 35 and "Connection reset by peer" in result.stderr) in (
        (7, False), (35, True))
    assert fault_fired(served, "network.reset", host=EX02)


def test_stall_at_connect_times_out_the_handshake(servers):
    served = servers["connect"]
    with pytest.raises(TimeoutError, match="handshake operation timed out"):
        tls_socket(served, MAIL, timeout=0.5)
    result = curl(served, MAIL, max_time=0.5)
    assert result.exit_code == 28 and "timed out" in result.stderr.lower()


def test_hosts_without_faults_are_untouched(servers):
    served = servers["connect"]
    assert address(served, ROOT) != served.host  # its port 80 is refused, so it has its own address
    assert curl(served, "contoso.test").status == 401
    assert served.endpoints["listeners"][served.host] == {"https": "open", "http": "open"}


# ---- what the server writes --------------------------------------------------------------------------------------
def test_reset_after_bytes_lets_exactly_those_through(servers):
    served = servers["output"]
    with tls_socket(served, MAIL, suppress_ragged_eofs=False) as tls:
        tls.sendall(get(MAIL))
        sizes, ending = read_until_error(tls)
    assert sum(sizes) == 100
    assert isinstance(ending, ssl.SSLEOFError)  # what Python's ssl makes of an RST inside TLS
    result = curl(served, MAIL)
    assert result.exit_code == 56 and "Connection reset by peer" in result.stderr


def test_reset_mid_response_cuts_the_body(servers):
    served = servers["output"]
    result = curl(served, EX01)
    assert result.exit_code == 56 and "Connection reset by peer" in result.stderr and result.size > 0
    with tls_socket(served, EX01) as tls:
        response = response_to_get(tls, EX01)
        assert response.status == 401
        with pytest.raises(http.client.IncompleteRead) as short:
            response.read()
    assert 0 < len(short.value.partial) < short.value.expected + len(short.value.partial)


def test_truncated_body_is_seen_as_a_short_transfer(servers):
    served = servers["output"]
    result = curl(served, AUTODISCOVER)
    assert result.exit_code == 18 and "transfer closed with" in result.stderr and result.size == 50
    with tls_socket(served, AUTODISCOVER) as tls:
        response = response_to_get(tls, AUTODISCOVER)
        with pytest.raises(http.client.IncompleteRead) as short:
            response.read()
    assert len(short.value.partial) == 50


def test_close_after_headers_sends_no_body(servers):
    served = servers["output"]
    result = curl(served, EX02)
    assert result.exit_code == 18 and result.status == 401 and result.size == 0


def test_slicer_sends_tiny_records_that_a_correct_client_reassembles(servers):
    served = servers["output"]
    with tls_socket(served, ROOT) as tls:
        tls.sendall(f"GET {POX_PATH} HTTP/1.1\r\nHost: {ROOT}\r\nConnection: close\r\n\r\n".encode())
        sizes, ending = read_until_error(tls)
    assert ending == "eof" and len(sizes) > 20 and max(sizes) <= 24  # each TLS record is one 8..24-byte piece
    result = curl(served, ROOT)
    assert result.exit_code == 0 and result.status == 401 and result.size > 0
    assert fault_fired(served, "network.slicer", host=ROOT)


# ---- pacing and silence ------------------------------------------------------------------------------------------
def test_latency_delays_the_answer(servers):
    served = servers["pacing"]
    slow, fast = curl(served, EX02), curl(served, ROOT)
    assert slow.exit_code == 0 and slow.status == 401 and slow.first_byte >= 0.35
    assert fast.first_byte < 0.35


def test_bandwidth_limits_the_transfer_rate(servers):
    served = servers["pacing"]
    result = curl(served, AUTODISCOVER, "-D", "/dev/null")
    assert result.exit_code == 0 and result.status == 401
    headers_and_body = result.size + 400  # the 401's headers come through the same pipe
    assert result.seconds >= 0.8 * headers_and_body / 2000


def test_stall_at_response_times_the_client_out(servers):
    served = servers["pacing"]
    result = curl(served, EX01, max_time=0.5)
    assert result.exit_code == 28 and "0 bytes received" in result.stderr
    with tls_socket(served, EX01, timeout=0.5) as tls:  # the handshake completes; the answer never comes
        tls.sendall(get(EX01))
        with pytest.raises(TimeoutError):
            tls.recv(100)


def test_stall_then_drop_is_an_empty_reply(servers):
    served = servers["pacing"]
    result = curl(served, MAIL)
    assert result.exit_code == 52 and "Empty reply from server" in result.stderr and result.seconds >= 0.25


def test_unscoped_fault_applies_to_the_whole_plain_http_listener(servers):
    served = servers["pacing"]
    with socket.create_connection((served.host, served.endpoints["http"]["port"]), timeout=2) as plain:
        plain.sendall(get(AUTODISCOVER))
        sizes, ending = read_until_error(plain)
    assert sum(sizes) == 10 and isinstance(ending, ConnectionResetError)
    assert curl(served, AUTODISCOVER, scheme="http").exit_code == 56


# ---- listeners follow the faults at runtime ---------------------------------------------------------------------
def test_a_step_closes_a_port_and_sighup_opens_it_again(tmp_path):
    with server_running(*scenario_args(tmp_path, "stepped", STEPPED + EXPECT_PASSES)) as served:
        mail = address(served, MAIL)
        with pytest.raises(TimeoutError):  # port 80 is black-holed on every address, the dedicated one too
            socket.create_connection((mail, served.endpoints["http"]["port"]), timeout=0.3)
        assert curl(served, MAIL).status == 401  # the first request: the step fires after it
        assert served.wait_for(lambda e: e["kind"] == "listener" and e["state"] == "refused")
        assert curl(served, MAIL).exit_code == 7
        served.process.send_signal(signal.SIGHUP)
        assert served.wait_for(lambda e: e["kind"] == "listener" and e["state"] == "open")
        assert curl(served, MAIL).status == 401


def test_network_faults_take_no_user(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nfaults:\n  - network.refused: {user: alice@contoso.test}\n")
    with pytest.raises(SpecError) as error:
        load_scenario(str(path))
    assert (error.value.line, error.value.field) == (3, "faults[0].network.refused.user")
    assert "before any user is known" in str(error.value)
