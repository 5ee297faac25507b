"""TLS faults as real clients see them: Python's ssl verify codes and messages, curl exit codes, protocol versions.

Each server carries one TLS fault per host name (scope = SNI); hosts without a fault keep the valid certificate.
"""
from __future__ import annotations

import functools
import ssl
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.faults.base import FaultParamError
from harness.faults.tls import ProtocolVersion
from harness.pki import PKI
from harness.services.tls import client_hello_server_name
from tests.support.clients import AUTODISCOVER, EX01, EX02, EXPECTED_VERIFY_ERRORS, MAIL, ROOT, curl, tls_socket
from tests.support.fuzz import scaled
from tests.support.servers import EXPECT_PASSES, scenario_servers
from tests.support.transcript import fault_fired

SCENARIOS = {
    "chains": f"""
name: chains
faults:
  - tls.expired: {{host: {MAIL}}}
  - tls.not-yet-valid: {{host: {AUTODISCOVER}}}
  - tls.self-signed: {{host: {EX01}}}
  - tls.untrusted-root: {{host: {EX02}}}
  - tls.missing-intermediate: {{host: {ROOT}}}
""",
    "crypto": f"""
name: crypto
faults:
  - tls.weak-key: {{host: {MAIL}}}
  - tls.sha1-signature: {{host: {AUTODISCOVER}}}
  - tls.wrong-host: {{host: {EX01}}}
  - tls.no-san: {{host: {EX02}}}
""",
    "protocol": f"""
name: protocol
faults:
  - tls.protocol-version: {{host: {MAIL}, min: 1.0, max: 1.0}}
  - tls.protocol-version: {{host: {AUTODISCOVER}, max: "1.2"}}
  - tls.client-certificate-required: {{host: {EX01}}}
""",
}

SHAPE_HOSTS = [("chains", MAIL, "expired"), ("chains", AUTODISCOVER, "not-yet-valid"), ("chains", EX01, "self-signed"),
               ("chains", EX02, "untrusted-root"), ("chains", ROOT, "missing-intermediate"),
               ("crypto", MAIL, "weak-key"), ("crypto", AUTODISCOVER, "sha1-signature"),
               ("crypto", EX01, "wrong-host")]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """The servers of SCENARIOS by name, started in parallel once."""
    scenarios = {name: text + EXPECT_PASSES for name, text in SCENARIOS.items()}
    with scenario_servers(tmp_path_factory.mktemp("tls"), scenarios) as started:
        yield started


def verify_error(served, host: str, context: ssl.SSLContext = None) -> tuple:
    with pytest.raises(ssl.SSLCertVerificationError) as failure:
        tls_socket(served, host, context=context)
    return failure.value.verify_code, failure.value.verify_message


@pytest.mark.parametrize("server, host, shape", SHAPE_HOSTS)
def test_each_certificate_shape_gives_its_verify_error(servers, server, host, shape):
    served = servers[server]
    code, message = EXPECTED_VERIFY_ERRORS[shape]
    if shape == "wrong-host":
        message = f"Hostname mismatch, certificate is not valid for '{host}'."
    assert verify_error(served, host) == (code, message)
    result = curl(served, host)
    assert result.exit_code == 60, result.stderr
    assert fault_fired(served, f"tls.{shape}", host=host)


def test_hosts_without_a_fault_keep_the_valid_certificate(servers):
    assert curl(servers["crypto"], ROOT).status == 401
    assert curl(servers["protocol"], ROOT).status == 401


def test_no_san_fails_only_clients_that_ignore_the_common_name(servers):
    served = servers["crypto"]
    with tls_socket(served, EX02) as tls:  # Python's default still falls back to the CN
        assert tls.version()
    strict = ssl.create_default_context(cafile=served.ca_file)
    strict.hostname_checks_common_name = False  # as urllib3 2 (requests, exchangelib) and browsers
    assert verify_error(served, EX02, strict) == (62, f"Hostname mismatch, certificate is not valid for '{EX02}'.")
    assert curl(served, EX02).status == 401  # curl falls back to the CN too


def test_tls_1_0_only_is_refused_by_a_modern_client_and_spoken_by_an_old_one(servers):
    served = servers["protocol"]
    with pytest.raises(ssl.SSLError, match="TLSV1_ALERT_PROTOCOL_VERSION"):
        tls_socket(served, MAIL)
    legacy = ssl.create_default_context(cafile=served.ca_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        legacy.minimum_version = ssl.TLSVersion.TLSv1
    legacy.set_ciphers("DEFAULT:@SECLEVEL=0")
    with tls_socket(served, MAIL, context=legacy) as tls:
        assert tls.version() == "TLSv1"
    assert curl(served, MAIL).exit_code == 35
    assert served.wait_for(lambda e: e["kind"] == "tls" and not e["ok"] and e["sni"] == MAIL)


def test_tls_1_2_ceiling_still_serves_modern_clients(servers):
    served = servers["protocol"]
    with tls_socket(served, AUTODISCOVER) as capped, tls_socket(served, ROOT) as free:
        assert (capped.version(), free.version()) == ("TLSv1.2", "TLSv1.3")
    assert curl(served, AUTODISCOVER).status == 401


def test_client_certificate_required_refuses_clients_without_one(servers):
    served = servers["protocol"]
    with tls_socket(served, EX01) as tls:  # TLS 1.3: the server's refusal arrives after the client's Finished
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
            tls.recv(100)
    result = curl(served, EX01)
    assert result.exit_code == 56 and "certificate required" in result.stderr
    assert curl(served, EX01, "--tls-max", "1.2").exit_code == 35


def test_any_client_certificate_is_enough(servers):
    served = servers["protocol"]
    client = ssl.create_default_context(cafile=served.ca_file)
    credential = PKI(served.state_dir).issue(["client.contoso.test"])
    client.load_cert_chain(credential.cert_file, credential.key_file)
    with tls_socket(served, EX01, context=client) as tls:
        tls.sendall(b"GET /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: ex01.contoso.test\r\n\r\n")
        assert tls.recv(100).startswith(b"HTTP/1.1 401")


def test_protocol_version_parameters_are_checked():
    assert ProtocolVersion(min=1.0, max="1.2").values["min"] == "1.0"
    with pytest.raises(FaultParamError, match="below min"):
        ProtocolVersion(min="1.2", max="1.0")
    with pytest.raises(FaultParamError, match="not a TLS version"):
        ProtocolVersion(max=2.0)


# ---- reading the SNI off the wire ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def client_hello(server_name) -> bytes:
    """The ClientHello Python's ssl sends, captured from a memory BIO."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def split_into_records(hello: bytes, size: int) -> bytes:
    """The same handshake message carried in several TLS records of at most ``size`` bytes."""
    body = hello[5:]
    return b"".join(hello[:3] + len(body[at:at + size]).to_bytes(2, "big") + body[at:at + size]
                    for at in range(0, len(body), size))


def test_client_hello_sni_is_read_whole_or_split():
    hello = client_hello(MAIL)
    assert client_hello_server_name(hello) == (True, MAIL)
    assert client_hello_server_name(hello[:-1]) == (False, None)
    assert client_hello_server_name(split_into_records(hello, 100)) == (True, MAIL)
    assert client_hello_server_name(client_hello(None)) == (True, None)
    assert client_hello_server_name(b"GET / HTTP/1.1\r\n") == (True, None)


@settings(max_examples=scaled(200), deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=0, max_value=600))
def test_client_hello_reader_never_fails_on_garbage(noise, cut):
    hello = client_hello(MAIL)
    for data in (noise, hello[:cut] + noise, b"\x16\x03\x01" + noise):
        complete, name = client_hello_server_name(data)
        assert isinstance(complete, bool) and (name is None or isinstance(name, str))
