"""The private PKI as clients see it: real TLS on 127.0.0.1, verified by Python's ssl and the openssl CLI."""
from __future__ import annotations

import datetime as dt
import random
import socket
import ssl
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL

from harness.pki import PKI, SHAPES, server_context
from tests.support.clients import AUTODISCOVER, EXPECTED_VERIFY_ERRORS, HOSTNAME_MISMATCH, MAIL
from tests.support.servers import LoopbackListener, tls_accept

HOSTS = [MAIL, AUTODISCOVER]
GREETING = b"hello from mockex\n"


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="module")
def pki(state_dir):
    return PKI(state_dir, rng=random.Random(7))


class TLSServer(LoopbackListener):
    """A completed handshake with a pyOpenSSL context gets GREETING."""

    def __init__(self, context: SSL.Context):
        self.context = context
        super().__init__()

    def _serve(self, raw: socket.socket) -> None:
        try:
            connection = tls_accept(self.context, raw)
            connection.sendall(GREETING)
            connection.shutdown()
        except (SSL.Error, OSError):
            pass  # the client refused us: that is what most tests want
        finally:
            raw.close()


def connect(port: int, client: ssl.SSLContext, server_hostname: str | None) -> tuple[bytes, x509.Certificate]:
    """The greeting and the leaf the server presented, or the client's verification error."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client.wrap_socket(raw, server_hostname=server_hostname) as tls:
            leaf = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
            return tls.recv(1024), leaf


def trusting(pki: PKI) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=pki.ca_file)


def not_verifying() -> ssl.SSLContext:
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return client


def serve(credential, **options) -> TLSServer:
    return TLSServer(server_context({}, credential, **options))


# ---- what clients see ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("server_hostname", [MAIL, AUTODISCOVER, "127.0.0.1"])
def test_valid_certificate_verifies_for_every_name_and_ip(pki, server_hostname):
    with serve(pki.issue(HOSTS)) as server:
        greeting, leaf = connect(server.port, trusting(pki), server_hostname)
    assert greeting == GREETING
    assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == MAIL


@pytest.mark.parametrize("shape", sorted(EXPECTED_VERIFY_ERRORS))
def test_broken_shape_gives_its_specific_verify_error(pki, shape):
    with serve(pki.issue(HOSTS, shape=shape)) as server:
        with pytest.raises(ssl.SSLCertVerificationError) as failure:
            connect(server.port, trusting(pki), MAIL)
    assert (failure.value.verify_code, failure.value.verify_message) == EXPECTED_VERIFY_ERRORS[shape]


def test_every_broken_shape_has_an_expected_error():
    assert set(EXPECTED_VERIFY_ERRORS) == set(SHAPES) - {"valid", "no-san"}


def test_no_san_fails_only_clients_without_common_name_fallback(pki):
    """Python's own default still falls back to the CN; urllib3 2 (so requests and exchangelib) and browsers do not."""
    without_fallback = trusting(pki)
    without_fallback.hostname_checks_common_name = False
    with serve(pki.issue(HOSTS, shape="no-san")) as server:
        greeting, _ = connect(server.port, trusting(pki), MAIL)
        with pytest.raises(ssl.SSLCertVerificationError) as failure:
            connect(server.port, without_fallback, MAIL)
    assert greeting == GREETING
    assert (failure.value.verify_code, failure.value.verify_message) == HOSTNAME_MISMATCH


def test_valid_chain_passes_strict_verification(pki):
    """Python 3.13 and urllib3 verify with VERIFY_X509_STRICT by default (AKI/SKI present, critical CA constraints)."""
    strict = trusting(pki)
    strict.verify_flags |= ssl.VERIFY_X509_STRICT
    with serve(pki.issue(HOSTS)) as server:
        assert connect(server.port, strict, AUTODISCOVER)[0] == GREETING


def test_sni_picks_the_credential_by_name_case_insensitively(pki):
    mail = pki.issue([MAIL])
    autodiscover = pki.issue([AUTODISCOVER])
    fallback = pki.issue(["fallback.contoso.test"])
    seen = []
    context = server_context({MAIL: mail, AUTODISCOVER.upper(): autodiscover}, fallback, on_servername=seen.append)
    with TLSServer(context) as server:
        for asked, served in [(MAIL, mail), (AUTODISCOVER, autodiscover), (MAIL.upper(), mail)]:
            greeting, leaf = connect(server.port, trusting(pki), asked)
            assert greeting == GREETING
            assert leaf.fingerprint(hashes.SHA256()) == served.leaf.fingerprint(hashes.SHA256())
        _, unknown_leaf = connect(server.port, not_verifying(), "other.contoso.test")
        _, no_sni_leaf = connect(server.port, not_verifying(), None)
    assert unknown_leaf == fallback.leaf
    assert no_sni_leaf == fallback.leaf
    assert seen == [MAIL, AUTODISCOVER, MAIL.upper(), "other.contoso.test", None]


def test_require_client_cert_refuses_a_client_without_one(pki):
    with serve(pki.issue(HOSTS), require_client_cert=True) as server:
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED|certificate required"):
            connect(server.port, trusting(pki), MAIL)


def test_max_version_caps_the_negotiated_protocol(pki):
    with serve(pki.issue(HOSTS), max_version=ssl.TLSVersion.TLSv1_2) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            with trusting(pki).wrap_socket(raw, server_hostname=MAIL) as tls:
                assert tls.version() == "TLSv1.2"


# ---- the certificates themselves -------------------------------------------------------------------------------
def test_chain_holds_what_the_server_sends(pki):
    def chain(shape):
        return x509.load_pem_x509_certificates(pki.issue(HOSTS, shape=shape).chain_pem)

    leaf, intermediate = chain("valid")
    root = pki.root_certificate
    assert leaf.issuer == intermediate.subject and intermediate.issuer == root.subject
    assert root.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "contoso-DC01-CA"
    assert len(chain("missing-intermediate")) == 1
    assert len(chain("self-signed")) == 1
    untrusted_leaf, untrusted_root = chain("untrusted-root")
    assert untrusted_leaf.issuer == untrusted_root.subject != root.subject


def test_credential_describes_its_certificate(pki):
    now = pki.now
    valid = pki.issue(HOSTS)
    assert valid.not_before <= now < now + dt.timedelta(days=364) < valid.not_after
    assert (valid.subject_cn, valid.san, valid.key_bits, valid.signature_hash) == (MAIL, (*HOSTS, "127.0.0.1"),
                                                                                    2048, "sha256")
    assert valid.leaf.not_valid_after_utc == valid.not_after
    assert pki.issue(HOSTS, shape="expired").not_after < now
    assert pki.issue(HOSTS, shape="not-yet-valid").not_before > now
    wrong = pki.issue(HOSTS, shape="wrong-host")
    assert wrong.san == ("www.contoso.test",) == (wrong.subject_cn,)
    assert pki.issue(HOSTS, shape="weak-key").key_bits == 1024
    assert pki.issue(HOSTS, shape="sha1-signature").leaf.signature_hash_algorithm.name == "sha1"
    no_san = pki.issue(HOSTS, shape="no-san")
    assert no_san.san == () and no_san.subject_cn == MAIL
    with pytest.raises(x509.ExtensionNotFound):
        no_san.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    with open(valid.cert_file, "rb") as chain_in, open(valid.key_file, "rb") as key_in:
        assert (chain_in.read(), key_in.read()) == (valid.chain_pem, valid.key_pem)


def test_issue_caches_by_shape_and_names(pki):
    assert pki.issue(HOSTS) is pki.issue([name.upper() for name in HOSTS])
    assert pki.issue(HOSTS) is not pki.issue(HOSTS, shape="expired")
    assert pki.issue(HOSTS).key_pem == pki.issue([AUTODISCOVER]).key_pem  # one cached leaf key
    with pytest.raises(ValueError, match="unknown certificate shape"):
        pki.issue(HOSTS, shape="bogus")


def test_second_pki_on_the_same_dir_loads_the_ca_and_keys(pki, state_dir):
    again = PKI(state_dir)
    assert again.ca_file == pki.ca_file
    assert again.root_certificate.fingerprint(hashes.SHA256()) == pki.root_certificate.fingerprint(hashes.SHA256())
    assert again.issue(HOSTS).key_pem == pki.issue(HOSTS).key_pem


def test_seeded_rng_and_fixed_clock_replay_byte_identical_leaves(pki, state_dir):
    moment = dt.datetime(2030, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    first, second = (PKI(state_dir, rng=random.Random(3), now=moment).issue(HOSTS) for _ in range(2))
    assert first.chain_pem == second.chain_pem
    assert first.not_before == moment - dt.timedelta(days=1)
    served = pki.issue(HOSTS)  # the module's PKI shares the directory and must still find its own file intact
    with open(served.cert_file, "rb") as chain_in:
        assert chain_in.read() == served.chain_pem != first.chain_pem


def test_a_cold_pki_makes_the_untrusted_root_and_the_weak_key_only_when_a_shape_needs_them(tmp_path):
    made = PKI(str(tmp_path))

    def keys() -> list[str]:
        return sorted(path.name for path in (tmp_path / "pki").glob("*.key.pem"))

    assert keys() == ["intermediate-ca.key.pem", "leaf.key.pem", "root-ca.key.pem"]
    assert made.issue(HOSTS, shape="weak-key").key_bits == 1024
    assert made.issue(HOSTS, shape="untrusted-root").hostnames == tuple(HOSTS)
    assert keys() == ["intermediate-ca.key.pem", "leaf.key.pem", "root-ca.key.pem", "untrusted-root-ca.key.pem",
                      "weak-leaf.key.pem"]
    assert all(stat.S_IMODE((tmp_path / "pki" / name).stat().st_mode) == 0o600 for name in keys())
    again = PKI(str(tmp_path))
    assert again.issue(HOSTS, shape="weak-key").key_pem == made.issue(HOSTS, shape="weak-key").key_pem


def test_leaves_replay_whether_or_not_this_instance_made_a_ca(tmp_path):
    """The seeded rng serves leaves only: the instance that makes the untrusted root on first use issues the same
    bytes as the next one, which loads it."""
    moment = dt.datetime(2030, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    PKI(str(tmp_path))
    first, second = ([PKI(str(tmp_path), rng=random.Random(5), now=moment).issue(HOSTS, shape=shape).chain_pem
                      for shape in ("untrusted-root", "valid")] for _ in range(2))
    assert first == second


def openssl_verify(pki, credential, *options):
    return subprocess.run(["openssl", "verify", *options, "-CAfile", pki.ca_file, "-untrusted", credential.cert_file,
                           credential.cert_file], capture_output=True, text=True, timeout=30)


def test_openssl_cli_agrees_on_the_valid_chain(pki):
    result = openssl_verify(pki, pki.issue(HOSTS))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK")


def test_openssl_cli_finds_the_intermediate_missing(pki):
    result = openssl_verify(pki, pki.issue(HOSTS, shape="missing-intermediate"))
    assert result.returncode != 0
    assert "unable to get local issuer certificate" in result.stderr


def test_sha1_leaf_carries_a_genuine_signature(pki):
    """The SHA-1 leaf is rejected for its digest only: with no security level it verifies."""
    credential = pki.issue(HOSTS, shape="sha1-signature")
    assert openssl_verify(pki, credential, "-auth_level", "0").returncode == 0
    strict = openssl_verify(pki, credential, "-auth_level", "2")
    assert "CA signature digest algorithm too weak" in strict.stderr
