"""Bad: turns certificate checking off and sends its password to whatever answers on 443
(caught by credentials-untrusted-tls)."""
import sys

from autodiscover_lite import autodiscover_urls, request, settings_of

for url in autodiscover_urls():
    try:
        status, _, body = request(url, verify=False)
    except (LookupError, OSError) as exc:
        print(f"skipped: {exc}")
        continue
    if status == 200 and settings_of(body):
        print(f"server: {settings_of(body)}")
        sys.exit(0)
sys.exit(1)
