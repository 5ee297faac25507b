"""TLS faults: the certificate a host presents, the protocol versions it speaks, and whether it demands a client
certificate. Scope `host` is matched against the SNI name the client sends (or the host of a dedicated address)."""
from __future__ import annotations

from harness.faults.base import FaultParamError, Param, register
from harness.faults.network import ConnectionLevel
from harness.protocols.tls import TLS_VERSIONS, TlsProfile

PYTHON_VERIFY = "ssl.SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
CURL_VERIFY = "exit 60: SSL certificate problem: "


class _CertificateFault(ConnectionLevel):
    """The host presents its certificate in ``shape`` (see harness.pki.SHAPES)."""
    shape = ""

    def on_tls_profile(self, scope, host):
        return TlsProfile(shape=self.shape)


def _verify_symptoms(message: str) -> dict:
    return {"python-ssl": PYTHON_VERIFY + message, "curl": CURL_VERIFY + message,
            "requests": f"requests.exceptions.SSLError: ... {message}"}


@register
class Expired(_CertificateFault):
    name = "tls.expired"
    summary = "The certificate expired 30 days ago."
    description = "Nobody renewed the Exchange certificate (or the server clock runs far ahead)."
    symptoms = _verify_symptoms("certificate has expired")
    analyzer = {"fails_at": "certificate", "reason": "certificate-expired"}
    shape = "expired"


@register
class NotYetValid(_CertificateFault):
    name = "tls.not-yet-valid"
    summary = "The certificate only becomes valid in 30 days."
    description = "A certificate installed before its start date, or a client (or server) clock set in the past."
    symptoms = _verify_symptoms("certificate is not yet valid")
    analyzer = {"fails_at": "certificate", "reason": "certificate-not-yet-valid"}
    shape = "not-yet-valid"


@register
class WrongHost(_CertificateFault):
    name = "tls.wrong-host"
    summary = "The certificate names another host (www.<domain>), not the one the client asked for."
    description = ("The web site's certificate bound to the Exchange site, or autodiscover.<domain> missing from the "
                   "SAN list: the textbook Outlook security warning.")
    symptoms = {"python-ssl": PYTHON_VERIFY + "Hostname mismatch, certificate is not valid for '<host>'.",
                "curl": "exit 60: SSL: no alternative certificate subject name matches target host name '<host>'",
                "requests": "requests.exceptions.SSLError: ... Hostname mismatch, certificate is not valid for "
                            "'<host>'"}
    analyzer = {"fails_at": "certificate", "reason": "name-mismatch"}
    shape = "wrong-host"


@register
class SelfSigned(_CertificateFault):
    name = "tls.self-signed"
    summary = "The server presents a self-signed certificate."
    description = "Exchange's own default certificate, never replaced by one from a CA the clients trust."
    symptoms = _verify_symptoms("self-signed certificate")
    analyzer = {"fails_at": "certificate", "reason": "self-signed"}
    shape = "self-signed"


@register
class UntrustedRoot(_CertificateFault):
    name = "tls.untrusted-root"
    summary = "The chain ends in a root CA the client does not trust."
    description = "A private enterprise CA whose root was never deployed to this client (sent along by the server)."
    symptoms = _verify_symptoms("self-signed certificate in certificate chain")
    analyzer = {"fails_at": "certificate", "reason": "untrusted-root"}
    shape = "untrusted-root"


@register
class MissingIntermediate(_CertificateFault):
    name = "tls.missing-intermediate"
    summary = "The server sends its certificate without the intermediate CA that issued it."
    description = ("The intermediate was never imported on the server. Browsers often paper over it by fetching the "
                   "intermediate themselves; Outlook and most libraries do not.")
    symptoms = _verify_symptoms("unable to get local issuer certificate")
    analyzer = {"fails_at": "certificate", "reason": "missing-intermediate"}
    shape = "missing-intermediate"


@register
class WeakKey(_CertificateFault):
    name = "tls.weak-key"
    summary = "The certificate has a 1024-bit RSA key."
    description = "An old certificate from before 2048-bit keys became the minimum; OpenSSL 3 clients refuse it."
    symptoms = _verify_symptoms("EE certificate key too weak")
    analyzer = {"fails_at": "certificate", "reason": "weak-key"}
    shape = "weak-key"


@register
class Sha1Signature(_CertificateFault):
    name = "tls.sha1-signature"
    summary = "The certificate is signed with SHA-1."
    description = "An old internal CA still issuing SHA-1 signatures, refused by every current TLS stack."
    symptoms = _verify_symptoms("CA signature digest algorithm too weak")
    analyzer = {"fails_at": "certificate", "reason": "weak-signature"}
    shape = "sha1-signature"


@register
class NoSan(_CertificateFault):
    name = "tls.no-san"
    summary = "The certificate names its host only in the subject CN, with no Subject Alternative Name."
    description = ("Old CAs and hand-made certificates. Clients that still fall back to the CN (Python's ssl module "
                   "by default, curl) accept it; urllib3 2 (so requests and exchangelib) and browsers do not.")
    symptoms = {"requests": "requests.exceptions.SSLError: ... Hostname mismatch, certificate is not valid for "
                            "'<host>'",
                "python-ssl": "accepted by default; with hostname_checks_common_name = False: " + PYTHON_VERIFY +
                              "Hostname mismatch, certificate is not valid for '<host>'.",
                "curl": "accepted (curl still falls back to the CN)"}
    analyzer = {"fails_at": "certificate", "reason": "name-mismatch"}
    shape = "no-san"


def _version(name: str, value):
    """YAML reads `max: 1.0` as a number; both 1.0 and "1.0" mean TLS 1.0."""
    text = f"{value:.1f}" if isinstance(value, float) else value
    if text not in TLS_VERSIONS:
        raise FaultParamError(name, f"{value!r} is not a TLS version", "allowed: " + ", ".join(TLS_VERSIONS))
    return text


@register
class ProtocolVersion(ConnectionLevel):
    name = "tls.protocol-version"
    summary = "The server speaks only the TLS versions from `min` to `max` (e.g. TLS 1.0 only, or TLS 1.3 too)."
    description = ("A server with TLS 1.2 disabled (or never enabled) in SCHANNEL speaks only TLS 1.0: current clients "
                   "refuse that. Without this fault the mock speaks up to TLS 1.2, as Exchange 2013 on Windows "
                   "Server 2012 R2 does (`serve --tls-max` moves that ceiling); `max: 1.3` gives a host TLS 1.3, as "
                   "a newer server in front of it would.")
    symptoms = {"python-ssl": "ssl.SSLError: [SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version "
                              "(when no version is acceptable to both)",
                "curl": "exit 35: a TLS handshake failure (e.g. 'unsupported protocol' or 'legacy sigalg disallowed')",
                "requests": "requests.exceptions.SSLError: ... TLSV1_ALERT_PROTOCOL_VERSION"}
    analyzer = {"fails_at": "certificate", "reason": "tls-version"}
    params = {"min": Param((str, float), None, "lowest version served: 1.0, 1.1, 1.2 or 1.3 (default: the server's, "
                                               "TLS 1.0)"),
              "max": Param((str, float), None, "highest version served: 1.0, 1.1, 1.2 or 1.3 (default: the server's "
                                               "ceiling, 1.2 unless `serve --tls-max`, raised to `min`)")}

    @classmethod
    def validate(cls, values):
        checked = super().validate(values)
        low, high = (_version(key, checked[key]) if checked[key] is not None else None for key in ("min", "max"))
        if low is None and high is None:
            raise FaultParamError("max", "give `min`, `max` or both", "e.g. {min: '1.0', max: '1.0'}")
        if low is not None and high is not None and float(low) > float(high):
            raise FaultParamError("max", f"{high} is below min {low}")
        return {**checked, "min": low, "max": high}

    def on_tls_profile(self, scope, host):
        return TlsProfile(min_version=self.values["min"], max_version=self.values["max"])


@register
class ClientCertificateRequired(ConnectionLevel):
    name = "tls.client-certificate-required"
    summary = "The server demands a client certificate; a client without one fails the handshake."
    description = ("IIS 'SSL settings: Client certificates = Require' on the Exchange virtual directories, usually "
                   "set for a smart-card pilot and forgotten. Any certificate would do; clients never send one.")
    symptoms = {"python-ssl": "ssl.SSLError: [SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure "
                              "(TLS 1.2, the handshake fails); under TLS 1.3 (`serve --tls-max 1.3`) "
                              "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] on the first read after the handshake",
                "curl": "exit 35: ... sslv3 alert handshake failure (TLS 1.2), or exit 56: OpenSSL SSL_read: ... "
                        "tlsv13 alert certificate required (TLS 1.3)",
                "requests": "requests.exceptions.SSLError: ... SSLV3_ALERT_HANDSHAKE_FAILURE (TLS 1.2), or "
                            "certificate required (TLS 1.3)"}
    analyzer = {"fails_at": "certificate", "reason": "client-certificate-required"}

    def on_tls_profile(self, scope, host):
        return TlsProfile(require_client_cert=True)
