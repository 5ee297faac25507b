"""Run exchangelib's own SOAP Autodiscover for several users in one process (one import, a cleared cache each).

Usage: exchangelib_batch.py DNS_HOST DNS_PORT EMAIL PASSWORD [EMAIL PASSWORD ...]
Prints one JSON line per user: {"email": ..., "ews_url": ..., "version": ...} or {"email": ..., "error": ...}.
Certificate trust comes from REQUESTS_CA_BUNDLE (requests' documented variable).
"""
import json
import sys

from exchangelib import Credentials
from exchangelib.autodiscover import Autodiscovery, clear_cache


def discover(email: str, password: str) -> dict:
    clear_cache()
    try:
        _, protocol = Autodiscovery(email=email, credentials=Credentials(email, password)).discover()
        return {"ews_url": protocol.service_endpoint, "version": str(protocol.version.api_version)}
    except Exception as exc:  # report the client's own verdict, whatever it is
        return {"error": f"{type(exc).__name__}: {exc}"}


def main() -> None:
    dns_host, dns_port, pairs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    Autodiscovery.DNS_RESOLVER_KWARGS = {"configure": False}
    Autodiscovery.DNS_RESOLVER_ATTRS = {"nameservers": [dns_host], "port": dns_port, "timeout": 3}
    for email, password in zip(pairs[::2], pairs[1::2]):
        print(json.dumps({"email": email, **discover(email, password)}), flush=True)


if __name__ == "__main__":
    main()
