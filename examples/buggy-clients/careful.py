#!/usr/bin/env python3
"""A well-behaved discoverer: follows only https redirects (at most 10), treats every missing or odd element as a
clean failure (exit 2), never crashes. `mockex fuzz` should find nothing."""
import http.client
import sys
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

from _discover import NS, DiscoveryError, answer, arguments, post

MAX_REDIRECTS = 10


def main() -> int:
    args = arguments()
    url, seen = args.url, set()
    try:
        for _ in range(MAX_REDIRECTS):
            seen.add(url)
            account = answer(post(args, url)).find(f"{NS}Response/{NS}Account")
            if account is None:
                raise DiscoveryError("no Account in the answer")
            if account.findtext(f"{NS}Action") == "redirectUrl":
                url = (account.findtext(f"{NS}RedirectUrl") or "").strip()
                if urlsplit(url).scheme != "https" or url in seen:
                    raise DiscoveryError(f"refusing redirect to {url[:80]!r}")
                continue
            for protocol in account.findall(f"{NS}Protocol"):
                if (protocol.findtext(f"{NS}Type") or "") == "EXPR":
                    server = (protocol.findtext(f"{NS}Server") or "").strip()
                    if not server:
                        raise DiscoveryError("EXPR has no Server")
                    print(f"Outlook Anywhere: {server}")
                    return 0
            raise DiscoveryError("no EXPR protocol")
        raise DiscoveryError("too many redirects")
    except (DiscoveryError, OSError, ValueError, ET.ParseError, UnicodeError, http.client.HTTPException) as exc:
        print(f"discovery failed: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
