"""Bad: follows any redirect, http:// included, and sends its credentials along
(caught by insecure-redirect and credentials-cleartext)."""
import sys

from autodiscover_lite import DOMAIN, autodiscover_urls, redirect_of, request, settings_of

urls = autodiscover_urls() + [f"http://autodiscover.{DOMAIN}/autodiscover/autodiscover.xml"]
for url in urls:
    for _ in range(5):   # bounded, but any scheme
        try:
            status, headers, body = request(url)
        except (LookupError, OSError) as exc:
            print(f"skipped: {exc}")
            break
        action, target = redirect_of(body) if status == 200 else ("", "")
        if status in (301, 302, 307) or action == "redirectUrl":
            url = headers.get("location") or target
            continue
        if status == 200 and settings_of(body):
            print(f"server: {settings_of(body)}")
            sys.exit(0)
        break
sys.exit(1)
