"""What a TLS connection is served: the ``TlsProfile`` value and the ``tls_profile`` hook point that chooses it.

Sans-IO: versions are named ("1.0" .. "1.3"); the Twisted edge (harness/services/tls.py) maps them to OpenSSL's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from harness.hooks import hookspec
from harness.pki import SHAPES

TLS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")
# Exchange 2013's front end is IIS 8.5 on Windows Server 2012 R2 (or IIS 8 on 2012): SChannel there speaks SSL 3.0
# and TLS 1.0 to 1.2 out of the box, never TLS 1.3 (Windows has it from Server 2022). The served ceiling unless
# `mockex serve --tls-max` says otherwise.
EXCHANGE_2013_MAX_VERSION = "1.2"


@dataclass(frozen=True)
class TlsProfile:
    """The ``tls_profile`` hook's answer: what a TLS connection is served."""
    shape: str = "valid"                   # the certificate's shape (harness.pki.SHAPES)
    min_version: Optional[str] = None      # "1.0" .. "1.3"; None = the server's (OpenSSL's lowest)
    max_version: Optional[str] = None      # None = the server's ceiling (EXCHANGE_2013_MAX_VERSION by default)
    require_client_cert: bool = False      # IIS "Require client certificates": no certificate, no handshake

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown certificate shape {self.shape!r}")
        for version in (self.min_version, self.max_version):
            if version is not None and version not in TLS_VERSIONS:
                raise ValueError(f"unknown TLS version {version!r}; expected one of {', '.join(TLS_VERSIONS)}")

    def served_versions(self, ceiling: str) -> Tuple[Optional[str], str]:
        """(min, max) served on a server whose own ceiling is ``ceiling``: the profile's bounds where it has them,
        the ceiling otherwise, lifted to ``min_version`` when that is above it (a TLS 1.3-only fault stays so)."""
        high = self.max_version or ceiling
        if self.min_version is not None and float(self.min_version) > float(high):
            high = self.min_version
        return self.min_version, high

    def describe(self) -> str:
        parts = [f"{self.shape} certificate"]
        if self.min_version or self.max_version:
            parts.append(f"TLS {self.min_version or 'any'} to {self.max_version or 'any'}")
        if self.require_client_cert:
            parts.append("client certificate required")
        return ", ".join(parts)


@hookspec(fires_in="services/tls.py", means="the certificate and TLS versions served for this SNI host")
def tls_profile_hook(host: str) -> TlsProfile: ...
