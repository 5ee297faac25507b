"""Bad: a refused logon is retried again and again (bounded here at 20; caught by logon-retries)."""
import sys

from autodiscover_lite import autodiscover_urls, request, settings_of

url = autodiscover_urls()[1]
for _ in range(20):
    status, _, body = request(url)
    if status == 200 and settings_of(body):
        print(f"server: {settings_of(body)}")
        sys.exit(0)
print(f"still {status}")
sys.exit(1)
