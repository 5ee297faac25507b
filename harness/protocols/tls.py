"""What a TLS connection is served: the ``TlsProfile`` value and the ``tls_profile`` hook point that chooses it.

Sans-IO: versions are named ("1.0" .. "1.3"); the Twisted edge (harness/services/tls.py) maps them to OpenSSL's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from harness.hooks import hookspec
from harness.pki import SHAPES

TLS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")


@dataclass(frozen=True)
class TlsProfile:
    """The ``tls_profile`` hook's answer: what a TLS connection is served."""
    shape: str = "valid"                   # the certificate's shape (harness.pki.SHAPES)
    min_version: Optional[str] = None      # "1.0" .. "1.3"; None = OpenSSL's default
    max_version: Optional[str] = None
    require_client_cert: bool = False      # IIS "Require client certificates": no certificate, no handshake

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown certificate shape {self.shape!r}")
        for version in (self.min_version, self.max_version):
            if version is not None and version not in TLS_VERSIONS:
                raise ValueError(f"unknown TLS version {version!r}; expected one of {', '.join(TLS_VERSIONS)}")

    def describe(self) -> str:
        parts = [f"{self.shape} certificate"]
        if self.min_version or self.max_version:
            parts.append(f"TLS {self.min_version or 'any'} to {self.max_version or 'any'}")
        if self.require_client_cert:
            parts.append("client certificate required")
        return ", ".join(parts)


@hookspec(fires_in="services/tls.py", means="the certificate and TLS versions served for this SNI host")
def tls_profile_hook(host: str) -> TlsProfile: ...
