#!/usr/bin/env python3
"""A fragile discoverer that follows a POX redirectUrl wherever it points, http:// included, and sends its Basic
credentials there in clear text (a correct client refuses a non-https redirect). Otherwise careful.

    mockex fuzz --client "python3 examples/buggy-clients/follows_http_redirect.py --url {autodiscover_url}
      --host {host} --https-port {https_port} --http-port {http_port} --ca {ca_file} --email {email}
      --password {password}" --layer autodiscover
"""
import http.client
import sys

from _discover import NS, DiscoveryError, answer, arguments, post

MAX_REDIRECTS = 10


def main() -> int:
    args = arguments()
    url = args.url
    try:
        for _ in range(MAX_REDIRECTS):
            account = answer(post(args, url)).find(f"{NS}Response/{NS}Account")
            if account is None:
                raise DiscoveryError("no Account in the answer")
            if account.findtext(f"{NS}Action") == "redirectUrl":
                url = (account.findtext(f"{NS}RedirectUrl") or "").strip()   # BUG: http:// is followed too
                continue
            servers = [p.findtext(f"{NS}Server") for p in account.findall(f"{NS}Protocol")
                       if p.findtext(f"{NS}Type") == "EXPR"]
            if not servers or not servers[0]:
                raise DiscoveryError("no Outlook Anywhere server")
            print(f"Outlook Anywhere: {servers[0]}")
            return 0
        raise DiscoveryError("too many redirects")
    except (DiscoveryError, OSError, ValueError, http.client.HTTPException) as exc:
        print(f"discovery failed: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
