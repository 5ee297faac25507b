"""A bounded fuzz of a well-behaved real client: exchangelib's own Autodiscovery, in process, against the
Autodiscover layer. exchangelib's documented errors (exchangelib.errors.EWSError and below: AutoDiscoverFailed,
TransportError, UnauthorizedError, RedirectError...) are clean failures; anything else, a hang, or credentials sent
where they must not go is a finding.

Findings so far are real exchangelib 5.x bugs, both on a SOAP answer cut short (which its parser, run with
recover=True, takes as a whole one): settings without ExternalEwsUrl give AttributeError("'config.service_endpoint'
must be set") from Protocol() instead of AutoDiscoverFailed (also seen with autodiscover.internal-ews-only, see
tests/test_faults_autodiscover.py), and a UserSettingError cut before its SettingName gives KeyError: None from
GetUserSettings (seed 2). Any other finding fails the test."""
from __future__ import annotations

import os
from contextlib import contextmanager

import pytest

from harness.fuzz import fuzz_client

exchangelib = pytest.importorskip("exchangelib")
from exchangelib import Credentials  # noqa: E402
from exchangelib.autodiscover import Autodiscovery, clear_cache  # noqa: E402
from exchangelib.errors import EWSError  # noqa: E402
from urllib3.util import connection as urllib3_connection  # noqa: E402


@contextmanager
def pointed_at(served):
    """exchangelib as it runs against a real org, with the org's names and ports 443/80 sent to the mock: its DNS
    queries (SRV, A) to the mock's DNS port, its connections to the mock's ports, the mock's CA trusted."""
    original = urllib3_connection.create_connection
    ports = {443: int(served.https_port), 80: int(served.http_port)}
    domain = "." + served.domain.lower()

    def create_connection(address, *args, **kwargs):
        host, port = address
        if (host.lower() + ".").endswith(domain + ".") or host.lower() == domain[1:]:
            address = (served.host, ports.get(port, port))
        return original(address, *args, **kwargs)

    saved = (Autodiscovery.DNS_RESOLVER_KWARGS, Autodiscovery.DNS_RESOLVER_ATTRS, os.environ.get("REQUESTS_CA_BUNDLE"))
    urllib3_connection.create_connection = create_connection
    Autodiscovery.DNS_RESOLVER_KWARGS = {"configure": False}
    Autodiscovery.DNS_RESOLVER_ATTRS = {"nameservers": [served.dns_host], "port": int(served.dns_port), "timeout": 3}
    os.environ["REQUESTS_CA_BUNDLE"] = served.ca_file
    try:
        yield
    finally:
        urllib3_connection.create_connection = original
        Autodiscovery.DNS_RESOLVER_KWARGS, Autodiscovery.DNS_RESOLVER_ATTRS, bundle = saved
        if bundle is None:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = bundle


def discover(served) -> None:
    clear_cache()
    with pointed_at(served):
        Autodiscovery(email=served.email, credentials=Credentials(served.email, served.password)).discover()


# exception type and file of the innermost frame (line numbers move between exchangelib releases)
KNOWN_EXCHANGELIB_BUGS = {"AttributeError at protocol.py", "KeyError at properties.py"}


def site(finding) -> str:
    return finding.verdict.signature.split(":", 1)[1].rsplit(":", 1)[0]


def test_exchangelib_discovery_under_a_bounded_autodiscover_fuzz_shows_only_its_known_bugs() -> None:
    report = fuzz_client(discover, layers=["autodiscover"], max_examples=50, seed=1, timeout=60,
                         expected_errors=(EWSError,))
    assert report.examples == 50
    unknown = [f for f in report.findings if f.verdict.oracle != "crash" or site(f) not in KNOWN_EXCHANGELIB_BUGS]
    assert unknown == [], [f.describe() + "\n" + f.stderr[-1500:] for f in unknown]
    found = {site(f): f.faults for f in report.findings}
    assert found.get("AttributeError at protocol.py") == [{"fault": "autodiscover.malformed-xml",
                                                          "params": {"keep": 0.5}}], found
