#!/usr/bin/env python3
"""A fragile discoverer that handles a refused logon, but reads each `WWW-Authenticate` line as exactly one scheme
it knows (Negotiate, NTLM, Basic): a scheme it has no handler for (Exchange's OAuth `Bearer`, IIS Digest) or two
schemes on one line (`Negotiate, NTLM`, which RFC 9110 allows) is a KeyError, a traceback.

    mockex fuzz --client "python3 examples/buggy-clients/crash_on_unknown_scheme.py --url {autodiscover_url}
      --host {host} --https-port {https_port} --http-port {http_port} --ca {ca_file} --email {email}
      --password {password}" --layer http
"""
import http.client
import sys
import xml.etree.ElementTree as ET

from _discover import NS, DiscoveryError, answer, arguments, post

HANDLERS = {"Negotiate": "spnego", "NTLM": "ntlm", "Basic": "basic"}


def offered_handlers(response: http.client.HTTPResponse) -> list:
    handlers = []
    for value in response.headers.get_all("WWW-Authenticate") or []:
        scheme = value.split(" ", 1)[0]
        handlers.append(HANDLERS[scheme])   # BUG: a scheme it does not know, or a list on one line
    return handlers


def main() -> int:
    args = arguments()
    try:
        response = post(args, args.url)
        if response.status == 401:
            handlers = offered_handlers(response)
            raise DiscoveryError("password refused" if "basic" in handlers else f"cannot log on with {handlers}")
        account = answer(response).find(f"{NS}Response/{NS}Account")
        if account is None:
            raise DiscoveryError("no Account in the answer")
        for protocol in account.findall(f"{NS}Protocol"):
            if (protocol.findtext(f"{NS}Type") or "") == "EXPR" and (protocol.findtext(f"{NS}Server") or "").strip():
                print(f"Outlook Anywhere: {protocol.findtext(f'{NS}Server').strip()}")
                return 0
        raise DiscoveryError("no EXPR protocol with a Server")
    except (DiscoveryError, OSError, ValueError, ET.ParseError, UnicodeError, http.client.HTTPException) as exc:
        print(f"discovery failed: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
