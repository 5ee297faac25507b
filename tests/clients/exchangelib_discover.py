"""Run exchangelib's own SOAP Autodiscover against mockex, configured only through its public knobs.

Usage: exchangelib_discover.py EMAIL PASSWORD DNS_HOST DNS_PORT
Prints one JSON line: {"ews_url": ..., "version": ..., "auth_type": ...} or {"error": ...}.
Certificate trust comes from REQUESTS_CA_BUNDLE (requests' documented variable).
"""
import json
import sys

from exchangelib import Credentials
from exchangelib.autodiscover import Autodiscovery, clear_cache


def main() -> None:
    email, password, dns_host, dns_port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    Autodiscovery.DNS_RESOLVER_KWARGS = {"configure": False}
    Autodiscovery.DNS_RESOLVER_ATTRS = {"nameservers": [dns_host], "port": dns_port, "timeout": 3}
    clear_cache()
    try:
        ad_response, protocol = Autodiscovery(email=email, credentials=Credentials(email, password)).discover()
        print(json.dumps({"ews_url": protocol.service_endpoint, "version": str(protocol.version.api_version),
                          "build": str(protocol.version.build), "auth_type": protocol.auth_type}))
    except Exception as exc:  # report the client's own verdict, whatever it is
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))


if __name__ == "__main__":
    main()
