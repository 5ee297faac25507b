"""The probe's per-host checks against small loopback servers: every certificate shape harness.pki can serve gets
its own reason, old-TLS-only and client-certificate servers are recognised, and a connection that is closed,
reset or left unanswered before any TLS answer fails the port step, not the certificate."""
import socket
import struct

import pytest
from OpenSSL import SSL

from harness.pki import PKI, server_context
from harness.probe.hosts import ProbeContext, check_host
from harness.probe.http import Credentials
from harness.probe.net import Budget, Resolution
from harness.probe.report import Step
from tests.support.servers import LoopbackListener, tls_accept

HOST = "mail.contoso.test"


class LoopbackResolver:
    """Every name is 127.0.0.1 (the servers below listen there)."""

    def resolve(self, host, timeout):
        return Resolution(host, ("127.0.0.1",), "A", "test")


class Server(LoopbackListener):
    """Per connection, does ``behaviour``: a pyOpenSSL context (handshake, then answer any request with 404),
    "close" (FIN after the ClientHello), "reset" (RST via SO_LINGER 0) or "stall" (never answer)."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.held = []
        super().__init__()

    def _serve(self, sock):
        if self.behaviour == "close":
            sock.recv(4096)   # read the ClientHello first, or the close turns into a reset
            sock.close()
        elif self.behaviour == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        elif self.behaviour == "stall":
            self.held.append(sock)
        else:
            try:
                conn = tls_accept(self.behaviour, sock)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                conn.shutdown()
            except (SSL.Error, OSError):
                pass
            finally:
                sock.close()

    def stop(self):
        super().stop()
        for sock in self.held:
            sock.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(str(tmp_path_factory.mktemp("probe-pki")))


@pytest.fixture
def serve():
    servers = []

    def start(behaviour):
        server = Server(behaviour)
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.stop()


def run_checks(pki, port, ca_file=None, timeout=2.0):
    context = ProbeContext(email="alice@contoso.test", credentials=Credentials("alice", "CONTOSO", "pw"),
                           resolver=LoopbackResolver(), budget=Budget(timeout, 30.0),
                           ca_file=ca_file or pki.ca_file, https_port=port)
    parent = Step("outlook-anywhere", "OA", None, HOST)
    connector = check_host(context, parent, HOST, port, secure=True)
    return parent, connector, {child.step: child for child in parent.children}


@pytest.mark.parametrize("shape, reason", [
    ("expired", "certificate-expired"),
    ("not-yet-valid", "certificate-not-yet-valid"),
    ("wrong-host", "name-mismatch"),
    ("no-san", "name-mismatch"),
    ("self-signed", "self-signed"),
    ("untrusted-root", "untrusted-root"),
    ("missing-intermediate", "missing-intermediate"),
    ("weak-key", "weak-key"),
    ("sha1-signature", "weak-signature"),
])
def test_each_bad_certificate_shape_has_its_reason(pki, serve, shape, reason):
    credential = pki.issue([HOST], shape=shape)
    server = serve(server_context({HOST: credential}, credential))
    parent, connector, steps = run_checks(pki, server.port)
    assert connector is None
    assert (steps["certificate"].status, steps["certificate"].reason) == ("fail", reason), steps["certificate"].message
    assert (parent.status, parent.reason, parent.cause) == ("fail", reason, steps["certificate"].id)
    assert steps["port"].status == "pass" and steps["dns"].status == "pass"


def test_a_valid_certificate_passes_and_the_strict_connection_opens(pki, serve):
    credential = pki.issue([HOST])
    server = serve(server_context({HOST: credential}, credential))
    parent, connector, steps = run_checks(pki, server.port)
    certificate = steps["certificate"]
    assert certificate.status == "pass", certificate.message
    assert certificate.evidence["tls_version"] == "TLSv1.3" and HOST in certificate.evidence["san"]
    assert certificate.evidence["sent_chain"][1].startswith("contoso-CA01-CA")
    conn = connector.open()
    try:
        assert conn.secure and conn.request("GET", "/").status == 404
    finally:
        conn.close()


def test_a_chain_to_another_root_is_untrusted(pki, serve, tmp_path):
    credential = pki.issue([HOST])
    server = serve(server_context({HOST: credential}, credential))
    other_root = PKI(str(tmp_path), org_name="fabrikam.test").ca_file
    _parent, _connector, steps = run_checks(pki, server.port, ca_file=other_root)
    assert steps["certificate"].reason == "untrusted-root"
    assert steps["certificate"].evidence["verify_code"] == 20   # the intermediate's issuer is not trusted


def test_a_server_that_only_speaks_tls_1_0(pki, serve):
    credential = pki.issue([HOST])
    server = serve(server_context({HOST: credential}, credential, min_version=SSL.TLS1_VERSION,
                                  max_version=SSL.TLS1_VERSION))
    _parent, _connector, steps = run_checks(pki, server.port)
    assert steps["certificate"].reason == "tls-version"
    assert "TLSv1" in steps["certificate"].message


@pytest.mark.parametrize("max_version", [None, SSL.TLS1_2_VERSION])
def test_a_server_that_requires_a_client_certificate(pki, serve, max_version):
    credential = pki.issue([HOST])
    server = serve(server_context({HOST: credential}, credential, require_client_cert=True, max_version=max_version))
    _parent, _connector, steps = run_checks(pki, server.port)
    assert steps["certificate"].reason == "client-certificate-required", steps["certificate"].message


@pytest.mark.parametrize("behaviour, reason", [
    ("close", "connection-closed"),
    ("reset", "connection-reset"),
    ("stall", "no-response"),
])
def test_a_connection_broken_before_any_tls_answer_is_a_port_failure(pki, serve, behaviour, reason):
    server = serve(behaviour)
    parent, connector, steps = run_checks(pki, server.port, timeout=0.5)
    assert connector is None
    assert (steps["port"].status, steps["port"].reason) == ("fail", reason)
    assert steps["certificate"].status == "skip"
    assert (parent.reason, parent.cause) == (reason, steps["port"].id)


def test_a_closed_port_is_refused(pki):
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    _parent, connector, steps = run_checks(pki, port)
    assert connector is None and steps["port"].reason == "connection-refused" and "certificate" not in steps
