"""Bad: when autodiscover.<domain> cannot be found, falls back to autodiscover.<tld> -- the 2021 Autodiscover
credential leak (caught by outside-namespace)."""
import sys

from autodiscover_lite import DOMAIN, autodiscover_urls, request, settings_of

tld = DOMAIN.rsplit(".", 1)[-1]
for url in autodiscover_urls() + [f"https://autodiscover.{tld}/autodiscover/autodiscover.xml"]:
    try:
        status, _, body = request(url)
    except (LookupError, OSError) as exc:
        print(f"skipped: {exc}")
        continue
    if status == 200 and settings_of(body):
        print(f"server: {settings_of(body)}")
        sys.exit(0)
sys.exit(1)
