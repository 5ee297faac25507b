#!/usr/bin/env python3
"""A fragile Outlook Anywhere discoverer: it handles errors, redirects it refuses and a missing EXPR block, but
assumes the EXPR block always has a Server element (`.find(...).text` on None: AttributeError, a traceback).

    mockex fuzz --client "python3 examples/buggy-clients/crash_on_missing_server.py --url {autodiscover_url}
      --host {host} --https-port {https_port} --http-port {http_port} --ca {ca_file} --email {email}
      --password {password}" --layer autodiscover
"""
import http.client
import sys

from _discover import NS, DiscoveryError, answer, arguments, post


def main() -> int:
    args = arguments()
    try:
        root = answer(post(args, args.url))
        account = root.find(f"{NS}Response/{NS}Account")
        if account is None:
            raise DiscoveryError("no Account in the answer")
        for protocol in account.findall(f"{NS}Protocol"):
            if (protocol.findtext(f"{NS}Type") or "") == "EXPR":
                server = protocol.find(f"{NS}Server").text   # BUG: the Server element may be missing
                print(f"Outlook Anywhere: {server}")
                return 0
        raise DiscoveryError("no EXPR protocol")
    except (DiscoveryError, OSError, http.client.HTTPException) as exc:
        print(f"discovery failed: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
