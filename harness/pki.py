"""A private PKI for the mock: root CA -> intermediate CA -> leaves, plus every broken shape a scenario asks for.

Keys and CA certificates live under ``<state_dir>/pki/`` and are reused on restart, so users trust ``ca_file`` once.
RSA key generation is the slow part, so all normal leaves share one cached key, and the untrusted root and the weak
key are made only when a certificate shape first needs them. Leaf certificates are cheap and are issued afresh per
PKI instance (cached in memory by shape, hostnames and IPs); with a seeded ``rng`` and a fixed ``now`` they come out
byte-identical, so a run replays (the seeded rng serves leaves only: a CA made once per state dir gets a random
serial, so whether this instance made one changes no leaf).

``server_context`` builds the pyOpenSSL context a TLS listener serves, choosing the credential by SNI.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import ipaddress
import os
import random
import secrets
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:  # pyOpenSSL is needed only to serve; issuing certificates works without it
    from OpenSSL import SSL

SHAPES = ("valid", "expired", "not-yet-valid", "wrong-host", "self-signed", "untrusted-root",
          "missing-intermediate", "weak-key", "sha1-signature", "no-san")

NORMAL_KEY_BITS = 2048
WEAK_KEY_BITS = 1024
ROOT_LIFETIME = dt.timedelta(days=3650)
INTERMEDIATE_LIFETIME = dt.timedelta(days=1825)
LEAF_LIFETIME = dt.timedelta(days=365)
BACKDATE = dt.timedelta(days=1)          # leaves start a day early so small clock skew never matters
SHAPE_OFFSET = dt.timedelta(days=30)     # how far "expired" / "not-yet-valid" leaves sit outside now
# A cached CA is replaced when it would expire before a leaf issued now.
CA_MIN_REMAINING = LEAF_LIFETIME + SHAPE_OFFSET + dt.timedelta(days=1)
# SChannel's default cipher-suite order on Windows Server 2012 R2 with update 2919355 (Microsoft, "TLS Cipher Suites
# in Windows 8.1", learn.microsoft.com/windows/win32/secauthn/tls-cipher-suites-in-windows-8-1), kept to the suites
# an RSA certificate serves that this OpenSSL has: ECDHE (CBC only: SChannel of 2012 R2 has no ECDHE-RSA-GCM), then
# static RSA. Left out: DHE-RSA (OpenSSL serves DHE only with DH parameters, which the mock does not load), 3DES and
# RC4 (not in this OpenSSL 3). TLS 1.3 suites, where a profile allows TLS 1.3, are OpenSSL's (2012 R2 has none).
SCHANNEL_2012R2_CIPHERS = (b"ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA:ECDHE-RSA-AES128-SHA:"
                           b"AES256-GCM-SHA384:AES128-GCM-SHA256:AES256-SHA256:AES128-SHA256:AES256-SHA:AES128-SHA")
# At OpenSSL's default security level a server refuses to even load a 1024-bit key ("ee key too small"), and at
# level 2 a SHA-1 chain too; the mock serves them anyway so the *client* reports the problem. Level 0 also keeps
# TLS 1.0 and 1.1 (SChannel's defaults on 2012 R2) open to the clients that still offer them.
SERVER_CIPHERS = SCHANNEL_2012R2_CIPHERS + b":@SECLEVEL=0"
SESSION_ID_CONTEXT = b"mockex"
# DER of the signature AlgorithmIdentifier OIDs sha256WithRSAEncryption and sha1WithRSAEncryption.
SHA256_WITH_RSA = bytes.fromhex("06092a864886f70d01010b")
SHA1_WITH_RSA = bytes.fromhex("06092a864886f70d010105")


@dataclass(frozen=True)
class Credential:
    shape: str
    hostnames: tuple
    chain_pem: bytes         # leaf first, then what the server sends after it
    key_pem: bytes
    cert_file: str           # chain_pem on disk (openssl s_server needs it as both -cert and -cert_chain)
    key_file: str            # key_pem on disk
    not_before: dt.datetime
    not_after: dt.datetime
    subject_cn: str
    san: tuple               # DNS names and IP addresses as strings; empty for no-san
    key_bits: int
    signature_hash: str      # "sha256" or "sha1"

    @property
    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.chain_pem)


@dataclass(frozen=True)
class _Authority:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def name(self) -> x509.Name:
        return self.cert.subject

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


class PKI:
    def __init__(self, state_dir: str, *, rng: Optional[random.Random] = None, now: Optional[dt.datetime] = None,
                 org_name: str = "contoso.test"):
        self.directory = os.path.join(state_dir, "pki")
        self._rng = rng if rng is not None else random.Random()
        self._now = now if now is None or now.tzinfo else now.replace(tzinfo=dt.timezone.utc)
        self._org_name = org_name
        self._issued: Dict[Tuple[str, tuple, tuple], Credential] = {}
        os.makedirs(os.path.join(self.directory, "issued"), exist_ok=True)
        with self._locked():
            self._root, self._intermediate = self._load_or_create_hierarchy()
            self._leaf_key = self._load_or_create_key("leaf", NORMAL_KEY_BITS)
        self._untrusted_root: Optional[_Authority] = None     # see _untrusted_authority
        self._weak_leaf_key: Optional[rsa.RSAPrivateKey] = None   # see _weak_key
        self.ca_file = self._path("root-ca.pem")

    @property
    def now(self) -> dt.datetime:
        return self._now if self._now is not None else dt.datetime.now(dt.timezone.utc).replace(microsecond=0)

    @property
    def root_certificate(self) -> x509.Certificate:
        return self._root.cert

    # ---- leaves -------------------------------------------------------------------------------------------
    def issue(self, hostnames: List[str], *, shape: str = "valid", ips: Iterable[str] = ("127.0.0.1",)) -> Credential:
        """A credential for ``hostnames`` (CN = the first) in the given shape; the same request returns the same one."""
        if shape not in SHAPES:
            raise ValueError(f"unknown certificate shape {shape!r}; expected one of {', '.join(SHAPES)}")
        names = tuple(name.lower() for name in hostnames)
        if not names:
            raise ValueError("a certificate needs at least one hostname")
        addresses = tuple(str(ipaddress.ip_address(ip)) for ip in ips)
        cache_key = (shape, names, addresses)
        if cache_key not in self._issued:
            self._issued[cache_key] = self._issue(shape, names, addresses)
        return self._issued[cache_key]

    def _issue(self, shape: str, names: tuple, addresses: tuple) -> Credential:
        not_before, not_after = _validity(shape, self.now)
        common_name = names[0]
        san: tuple = names + addresses
        if shape == "wrong-host":
            common_name = _unrelated_host(names)
            san = (common_name,)
        elif shape == "no-san":
            san = ()

        key = self._weak_key() if shape == "weak-key" else self._leaf_key
        subject = _name(common_name, self._org_name)
        if shape == "self-signed":
            issuer_name, issuer_key, sent_after_leaf = subject, key, []
        else:
            issuer = self._untrusted_authority() if shape == "untrusted-root" else self._intermediate
            issuer_name, issuer_key = issuer.name, issuer.key
            # A server on a private CA typically sends that root along, hence "untrusted-root" sends its issuer too.
            sent_after_leaf = [] if shape == "missing-intermediate" else [issuer]

        extensions = [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)]
        if san:
            extensions.append((x509.SubjectAlternativeName([_general_name(entry) for entry in san]), False))
        leaf = _certificate(subject, key, issuer_name, issuer_key,
                            serial=self._serial(shape, names, addresses, not_before),
                            not_before=not_before, not_after=not_after, path_length=None, ca=False,
                            extensions=extensions, sha1_signature=shape == "sha1-signature")

        chain_pem = leaf.public_bytes(serialization.Encoding.PEM) + b"".join(a.pem for a in sent_after_leaf)
        # Named by content: another PKI instance on this dir (other clock or seed) never overwrites a served file.
        fingerprint = leaf.fingerprint(hashes.SHA256()).hex()[:16]
        filename = f"{shape}-{names[0].replace('*', '_')}-{fingerprint}.chain.pem"
        cert_file = os.path.join(self.directory, "issued", filename)
        _write_atomic(cert_file, chain_pem)
        key_file = self._path("weak-leaf.key.pem" if shape == "weak-key" else "leaf.key.pem")
        return Credential(shape=shape, hostnames=names, chain_pem=chain_pem, key_pem=_key_pem(key),
                          cert_file=cert_file, key_file=key_file, not_before=not_before, not_after=not_after,
                          subject_cn=common_name, san=san, key_bits=key.key_size,
                          signature_hash=leaf.signature_hash_algorithm.name)

    def _serial(self, *identity) -> int:
        """Distinct per certificate content (so no issuer ever reuses a serial for a different leaf) yet replayable."""
        digest = hashlib.sha256(repr((identity, self._rng.getrandbits(64))).encode()).digest()
        return int.from_bytes(digest[:19], "big") >> 1 or 1

    # ---- authorities and keys on disk ---------------------------------------------------------------------
    def _untrusted_authority(self) -> _Authority:
        """The root no client trusts, loaded or made when the untrusted-root shape is first issued (a cold state dir
        then pays its key here, not at every start)."""
        if self._untrusted_root is None:
            with self._locked():
                self._untrusted_root = self._load_or_create_authority(
                    "untrusted-root-ca", f"{_ca_label(self._org_name)}-EX01-CA", issuer=None, lifetime=ROOT_LIFETIME)
        return self._untrusted_root

    def _weak_key(self) -> rsa.RSAPrivateKey:
        """The 1024-bit leaf key, loaded or made when the weak-key shape is first issued."""
        if self._weak_leaf_key is None:
            with self._locked():
                self._weak_leaf_key = self._load_or_create_key("weak-leaf", WEAK_KEY_BITS)
        return self._weak_leaf_key

    def _load_or_create_hierarchy(self) -> Tuple[_Authority, _Authority]:
        root = self._load_or_create_authority("root-ca", f"{_ca_label(self._org_name)}-DC01-CA", issuer=None,
                                              lifetime=ROOT_LIFETIME)
        intermediate_cn = f"{_ca_label(self._org_name)}-CA01-CA"
        intermediate = self._load_authority("intermediate-ca", intermediate_cn)
        if intermediate is None or not _issued_by(intermediate.cert, root.cert):
            intermediate = self._create_authority("intermediate-ca", intermediate_cn, issuer=root,
                                                  lifetime=INTERMEDIATE_LIFETIME)
        return root, intermediate

    def _load_or_create_authority(self, stem: str, common_name: str, *, issuer: Optional[_Authority],
                                  lifetime: dt.timedelta) -> _Authority:
        loaded = self._load_authority(stem, common_name)
        return loaded or self._create_authority(stem, common_name, issuer=issuer, lifetime=lifetime)

    def _load_authority(self, stem: str, common_name: str) -> Optional[_Authority]:
        """The cached CA, unless it is absent, for another org, or too close to (or past) expiry."""
        try:
            with open(self._path(f"{stem}.pem"), "rb") as cert_in, open(self._path(f"{stem}.key.pem"), "rb") as key_in:
                cert = x509.load_pem_x509_certificate(cert_in.read())
                key = _load_key(key_in.read())
        except (OSError, ValueError):
            return None
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        usable = (names and names[0].value == common_name
                  and cert.not_valid_before_utc <= self.now
                  and cert.not_valid_after_utc >= self.now + CA_MIN_REMAINING
                  and cert.public_key().public_numbers() == key.public_key().public_numbers())
        return _Authority(key, cert) if usable else None

    def _create_authority(self, stem: str, common_name: str, *, issuer: Optional[_Authority],
                          lifetime: dt.timedelta) -> _Authority:
        key = self._generate_key(f"{stem}.key.pem", NORMAL_KEY_BITS)
        subject = _name(common_name, self._org_name)
        issuer_name, issuer_key = (issuer.name, issuer.key) if issuer else (subject, key)
        not_before = self.now - BACKDATE
        cert = _certificate(subject, key, issuer_name, issuer_key, serial=secrets.randbits(151) or 1,
                            not_before=not_before, not_after=not_before + lifetime,
                            ca=True, path_length=None if issuer is None else 0)
        _write_atomic(self._path(f"{stem}.pem"), cert.public_bytes(serialization.Encoding.PEM))
        return _Authority(key, cert)

    def _load_or_create_key(self, stem: str, bits: int) -> rsa.RSAPrivateKey:
        filename = f"{stem}.key.pem"
        try:
            with open(self._path(filename), "rb") as key_in:
                key = _load_key(key_in.read())
            if isinstance(key, rsa.RSAPrivateKey) and key.key_size == bits:
                return key
        except (OSError, ValueError):
            pass
        return self._generate_key(filename, bits)

    def _generate_key(self, filename: str, bits: int) -> rsa.RSAPrivateKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        _write_atomic(self._path(filename), _key_pem(key), mode=0o600)
        return key

    def _path(self, filename: str) -> str:
        return os.path.join(self.directory, filename)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Two processes starting on one state dir must end up with the same CA, not one each."""
        with open(self._path(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


# ---- serving ------------------------------------------------------------------------------------------------
def server_context(credentials_by_name: Dict[str, Credential], default: Credential, *,
                   min_version: Optional[int] = None, max_version: Optional[int] = None,
                   require_client_cert: bool = False,
                   on_servername: Optional[Callable[[Optional[str]], None]] = None) -> "SSL.Context":
    """A server context that serves ``default`` and switches to ``credentials_by_name[SNI]`` (case-insensitive).

    Versions are pyOpenSSL ``TLS1_x_VERSION`` values (``ssl.TLSVersion`` members have the same values). With
    ``require_client_cert`` any client certificate is accepted, but a client without one fails the handshake, as
    with IIS "Require client certificates".
    """
    from OpenSSL import SSL

    def build(credential: Credential) -> SSL.Context:
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        configure_server_tls(context, min_version=min_version, max_version=max_version)
        context.set_session_id(SESSION_ID_CONTEXT)
        # An idle connection gives its ~34 KiB of record buffers back (as Twisted's CertificateOptions does): a
        # thousand idle Outlook Anywhere connections are two thousand TLS connections.
        context.set_mode(SSL.MODE_RELEASE_BUFFERS)
        if require_client_cert:
            context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_: True)
        context.use_certificate_chain_file(credential.cert_file)
        context.use_privatekey_file(credential.key_file)
        context.check_privatekey()
        return context

    default_context = build(default)
    by_name = {name.lower(): build(credential) for name, credential in credentials_by_name.items()}

    def select(connection: SSL.Connection) -> None:
        raw = connection.get_servername()
        servername = raw.decode("ascii", "replace") if raw is not None else None
        if on_servername is not None:
            on_servername(servername)
        chosen = by_name.get(servername.lower()) if servername is not None else None
        if chosen is not None:
            connection.set_context(chosen)

    if by_name or on_servername is not None:   # else nothing to choose: no Python call in every handshake
        default_context.set_tlsext_servername_callback(select)
    return default_context


def configure_server_tls(context: "SSL.Context", *, min_version: Optional[int] = None,
                         max_version: Optional[int] = None) -> None:
    """Versions, cipher suites and ECDHE curve of a server context as SChannel on Windows Server 2012 R2 chooses
    them (call before loading the certificate: the security level also gates it). Versions are pyOpenSSL
    ``TLS1_x_VERSION`` values; None leaves OpenSSL's bound (its ceiling is TLS 1.3).

    SChannel picks the suite by its own order, not the client's, and prefers the curve P-256 (then P-384; never
    X25519, which came with Windows 10). Where TLS 1.3 is off the ECDHE curve is P-256, what every client offering
    it gets from SChannel, and P-384 for a client offering only that. Where
    TLS 1.3 is on (a newer server) the curves stay OpenSSL's: a TLS 1.3 client's X25519 key share is taken, not
    answered with a HelloRetryRequest.
    """
    from cryptography.hazmat.primitives.asymmetric import ec
    from OpenSSL import SSL

    context.set_cipher_list(SERVER_CIPHERS)
    context.set_options(SSL.OP_CIPHER_SERVER_PREFERENCE)
    if min_version is not None:
        context.set_min_proto_version(int(min_version))
    if max_version is not None:
        context.set_max_proto_version(int(max_version))
    if max_version is not None and int(max_version) <= SSL.TLS1_2_VERSION and not _set_curves(context, b"P-256:P-384"):
        context.set_tmp_ecdh(ec.SECP256R1())


def _set_curves(context: "SSL.Context", curves: bytes) -> bool:
    """The server's ECDHE curves in order. pyOpenSSL's public call sets one curve only, so this is OpenSSL's own
    SSL_CTX_set1_curves_list through pyOpenSSL's binding; False when that binding is not there."""
    try:
        from OpenSSL._util import lib
        return bool(lib.SSL_CTX_set1_curves_list(context._context, curves) == 1)
    except (ImportError, AttributeError):
        return False


# ---- helpers ------------------------------------------------------------------------------------------------
def _ca_label(org_name: str) -> str:
    """CA names as Active Directory Certificate Services writes them (``contoso-DC01-CA``): what a client shows as
    the issuer is what a real org's would be, never the mock's name."""
    return org_name.split(".")[0]


def _validity(shape: str, now: dt.datetime) -> Tuple[dt.datetime, dt.datetime]:
    if shape == "expired":
        return now - SHAPE_OFFSET - LEAF_LIFETIME, now - SHAPE_OFFSET
    if shape == "not-yet-valid":
        return now + SHAPE_OFFSET, now + SHAPE_OFFSET + LEAF_LIFETIME
    return now - BACKDATE, now + LEAF_LIFETIME


def _unrelated_host(names: tuple) -> str:
    """A name the client did not ask for: the organisation's web site, as when IIS got the wrong certificate."""
    labels = names[0].split(".")
    parent = ".".join(labels[1:]) if len(labels) > 2 else names[0]
    for candidate in (f"www.{parent}", f"unrelated.{parent}"):
        if candidate not in names:
            return candidate
    return f"unrelated-{len(names)}.{parent}"


def _name(common_name: str, org_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org_name)])


def _certificate(subject: x509.Name, key: rsa.RSAPrivateKey, issuer_name: x509.Name, issuer_key: rsa.RSAPrivateKey,
                 *, serial: int, not_before: dt.datetime, not_after: dt.datetime, ca: bool, path_length: Optional[int],
                 extensions: Iterable[Tuple[x509.ExtensionType, bool]] = (),
                 sha1_signature: bool = False) -> x509.Certificate:
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer_name)
               .public_key(key.public_key())
               .serial_number(serial)
               .not_valid_before(not_before)
               .not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
               .add_extension(_key_usage(ca=ca), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    cert = builder.sign(issuer_key, hashes.SHA256())
    return _resigned_with_sha1(cert, issuer_key) if sha1_signature else cert


def _resigned_with_sha1(cert: x509.Certificate, issuer_key: rsa.RSAPrivateKey) -> x509.Certificate:
    """cryptography refuses to sign with SHA-1, so swap the algorithm identifiers (same length) and the signature."""
    tbs = cert.tbs_certificate_bytes.replace(SHA256_WITH_RSA, SHA1_WITH_RSA)
    signature = issuer_key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    der = cert.public_bytes(serialization.Encoding.DER).replace(SHA256_WITH_RSA, SHA1_WITH_RSA)
    return x509.load_der_x509_certificate(der[:-len(signature)] + signature)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=not ca,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def _general_name(entry: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(entry))
    except ValueError:
        return x509.DNSName(entry)


def _load_key(pem: bytes) -> rsa.RSAPrivateKey:
    # Our own files: skipping the (slow) RSA consistency check keeps a restart quick.
    return serialization.load_pem_private_key(pem, password=None, unsafe_skip_rsa_key_validation=True)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Readers (another process, openssl s_server) never see a half-written file."""
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
