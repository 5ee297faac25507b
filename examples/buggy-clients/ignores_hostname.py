#!/usr/bin/env python3
"""A fragile discoverer that verifies the certificate chain but not the host name (``check_hostname = False``, the
classic "make the warning go away" fix), so it sends its Basic credentials to a server presenting a certificate for
another host. Otherwise careful.

    mockex fuzz --client "python3 examples/buggy-clients/ignores_hostname.py --url {autodiscover_url}
      --host {host} --https-port {https_port} --http-port {http_port} --ca {ca_file} --email {email}
      --password {password}" --layer tls
"""
import http.client
import ssl
import sys

from _discover import NS, DiscoveryError, answer, arguments, post


def main() -> int:
    args = arguments()
    context = ssl.create_default_context(cafile=args.ca)
    context.check_hostname = False   # BUG: any certificate the CA signed will do, whatever host it names
    try:
        account = answer(post(args, args.url, context)).find(f"{NS}Response/{NS}Account")
        if account is None:
            raise DiscoveryError("no Account in the answer")
        servers = [p.findtext(f"{NS}Server") for p in account.findall(f"{NS}Protocol")
                   if p.findtext(f"{NS}Type") == "EXPR"]
        if not servers or not servers[0]:
            raise DiscoveryError("no Outlook Anywhere server")
        print(f"Outlook Anywhere: {servers[0]}")
        return 0
    except (DiscoveryError, OSError, ValueError, http.client.HTTPException) as exc:
        print(f"discovery failed: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
