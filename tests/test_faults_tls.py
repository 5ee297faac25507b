"""TLS faults as real clients see them: Python's ssl verify codes and messages, curl exit codes, protocol versions;
and what a host without a fault is served (TLS 1.2 at most, as Exchange 2013 on Windows Server 2012 R2).

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
from harness.protocols.tls import EXCHANGE_2013_MAX_VERSION, TLS_VERSIONS, TlsProfile
from harness.services.tls import client_hello_server_name
from tests.support.clients import (
    AUTODISCOVER,
    EX01,
    EX02,
    EXPECTED_VERIFY_ERRORS,
    MAIL,
    ROOT,
    curl,
    s_client,
    tls_socket,
)
from tests.support.fuzz import scaled
from tests.support.servers import EXPECT_PASSES, scenario_args, servers_running
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
  - tls.protocol-version: {{host: {EX02}, max: "1.3"}}
""",
}
# The protocol scenario again on a server that models a newer Windows (`serve --tls-max 1.3`).
NEWER = "protocol-tls-1.3"

SHAPE_HOSTS = [("chains", MAIL, "expired"), ("chains", AUTODISCOVER, "not-yet-valid"), ("chains", EX01, "self-signed"),
               ("chains", EX02, "untrusted-root"), ("chains", ROOT, "missing-intermediate"),
               ("crypto", MAIL, "weak-key"), ("crypto", AUTODISCOVER, "sha1-signature"),
               ("crypto", EX01, "wrong-host")]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """The servers of SCENARIOS by name, started in parallel once."""
    root = tmp_path_factory.mktemp("tls")
    arguments = [scenario_args(root, name, text + EXPECT_PASSES) for name, text in SCENARIOS.items()]
    arguments.append((*scenario_args(root, NEWER, SCENARIOS["protocol"] + EXPECT_PASSES), "--tls-max", "1.3"))
    with servers_running(*arguments) as started:
        yield dict(zip([*SCENARIOS, NEWER], started))


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


def only_tls_1_3() -> ssl.SSLContext:
    return context_for_versions(ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3)


def context_for_versions(low: ssl.TLSVersion, high: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE   # versions are what is looked at here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # TLS 1.0 and 1.1 are deprecated in Python's ssl
        context.minimum_version, context.maximum_version = low, high
    return context


def test_a_host_without_a_fault_speaks_tls_1_2_at_most_as_exchange_2013(servers):
    served = servers["protocol"]
    with tls_socket(served, ROOT) as tls:
        assert tls.version() == "TLSv1.2"
    with pytest.raises(ssl.SSLError, match="TLSV1_ALERT_PROTOCOL_VERSION"):
        tls_socket(served, ROOT, context=only_tls_1_3())
    status, said = s_client(served, ROOT, "-tls1_3")
    assert status != 0 and "alert protocol version" in said
    status, said = s_client(served, ROOT, "-tls1_2")
    assert status == 0 and "Protocol version: TLSv1.2" in said
    verbose = curl(served, ROOT, "-v")
    assert verbose.status == 401 and "SSL connection using TLSv1.2" in verbose.stderr


def test_the_suite_and_curve_are_those_schannel_of_2012_r2_prefers(servers):
    """SChannel's order, not the client's: the first suite of Windows Server 2012 R2's list both sides have
    (ECDHE-RSA with AES-256-CBC and SHA-384; SChannel there has no ECDHE-RSA-GCM), on P-256 (P-384 for a client
    offering only that), never X25519."""
    served = servers["protocol"]
    with tls_socket(served, ROOT) as tls:
        assert tls.cipher()[0] == "ECDHE-RSA-AES256-SHA384"
    status, said = s_client(served, ROOT)
    assert status == 0 and "Ciphersuite: ECDHE-RSA-AES256-SHA384" in said
    assert "Server Temp Key: ECDH, prime256v1" in said
    status, said = s_client(served, ROOT, "-curves", "P-384")
    assert status == 0 and "Server Temp Key: ECDH, secp384r1" in said
    status, said = s_client(served, ROOT, "-curves", "X25519")   # no ECDHE then: SChannel's plain RSA suites
    assert status == 0 and "Ciphersuite: AES256-GCM-SHA384" in said
    status, said = s_client(served, ROOT, "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")   # not in SChannel's list
    assert status != 0 and "handshake failure" in said
    status, said = s_client(served, ROOT, "-cipher", "AES128-SHA:ECDHE-RSA-AES128-SHA256")   # its order, not ours
    assert status == 0 and "Ciphersuite: ECDHE-RSA-AES128-SHA256" in said


def test_tls_1_0_and_1_1_stay_open_to_clients_that_allow_them(servers):
    """Windows Server 2012 R2 enables TLS 1.0 and 1.1 too; OpenSSL 3 clients offer them only at security level 0."""
    served = servers["protocol"]
    for version, name in ((ssl.TLSVersion.TLSv1, "TLSv1"), (ssl.TLSVersion.TLSv1_1, "TLSv1.1")):
        legacy = context_for_versions(version, version)
        legacy.set_ciphers("DEFAULT:@SECLEVEL=0")
        with tls_socket(served, ROOT, context=legacy) as tls:
            assert (tls.version(), tls.cipher()[0]) == (name, "ECDHE-RSA-AES256-SHA")


def test_a_protocol_version_fault_brings_tls_1_3_back_for_its_host(servers):
    served = servers["protocol"]
    with tls_socket(served, EX02) as opened, tls_socket(served, AUTODISCOVER) as capped:
        assert (opened.version(), capped.version()) == ("TLSv1.3", "TLSv1.2")
    status, said = s_client(served, EX02, "-tls1_3")
    assert status == 0 and "Protocol version: TLSv1.3" in said
    assert curl(served, AUTODISCOVER).status == 401


def test_tls_max_1_3_serves_tls_1_3_where_no_fault_caps_it(servers):
    served = servers[NEWER]
    with tls_socket(served, ROOT) as free, tls_socket(served, AUTODISCOVER) as capped:
        assert (free.version(), capped.version()) == ("TLSv1.3", "TLSv1.2")
    status, said = s_client(served, ROOT, "-tls1_3")
    assert status == 0 and "Protocol version: TLSv1.3" in said
    with pytest.raises(ssl.SSLError, match="TLSV1_ALERT_PROTOCOL_VERSION"):
        tls_socket(served, AUTODISCOVER, context=only_tls_1_3())


def test_client_certificate_required_refuses_clients_without_one(servers):
    served = servers["protocol"]
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):   # TLS 1.2: the handshake itself fails
        tls_socket(served, EX01)
    assert curl(served, EX01).exit_code == 35
    assert served.wait_for(lambda e: e["kind"] == "tls" and not e["ok"] and e["sni"] == EX01)


def test_client_certificate_required_under_tls_1_3_refuses_on_the_first_read(servers):
    served = servers[NEWER]
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


def test_a_profile_serves_its_own_bounds_else_the_server_s_ceiling():
    assert TlsProfile().served_versions(EXCHANGE_2013_MAX_VERSION) == (None, "1.2")
    assert TlsProfile().served_versions("1.3") == (None, "1.3")
    assert TlsProfile(max_version="1.3").served_versions("1.2") == (None, "1.3")
    assert TlsProfile(min_version="1.0", max_version="1.0").served_versions("1.3") == ("1.0", "1.0")
    assert TlsProfile(min_version="1.1").served_versions("1.2") == ("1.1", "1.2")
    assert TlsProfile(min_version="1.3").served_versions("1.2") == ("1.3", "1.3")   # TLS 1.3 only stays so


def test_tls_max_takes_every_tls_version_and_nothing_else(capsys):
    from harness import cli
    parser = cli.build_parser()
    assert [parser.parse_args(["serve", "--tls-max", version]).tls_max for version in TLS_VERSIONS] == \
        list(TLS_VERSIONS)
    assert parser.parse_args(["serve"]).tls_max is None   # serve then uses EXCHANGE_2013_MAX_VERSION
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--tls-max", "1.4"])
    assert "invalid choice: '1.4'" in capsys.readouterr().err


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
