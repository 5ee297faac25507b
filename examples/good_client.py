"""A well-behaved Autodiscover client: verifies certificates, sends credentials only over verified TLS, follows at
most 10 https redirects and never a loop, waits as long as Retry-After says, stops at the first refused logon, and
never leaves the org's namespace. Exit 0 with the settings; 1 no method worked; 2 refused logon; 3 certificate."""
import ssl
import sys
import time

from autodiscover_lite import DOMAIN, autodiscover_urls, redirect_of, request, settings_of

MAX_REDIRECTS, MAX_WAIT = 10, 10


def discover(url):
    seen = set()
    for _ in range(MAX_REDIRECTS + 1):
        if not url.lower().startswith("https://") or url.lower() in seen:
            print(f"refusing redirect to {url}")
            return None
        seen.add(url.lower())
        status, headers, body = request(url)
        if status in (429, 503) and headers.get("retry-after", "").isdigit() \
                and int(headers["retry-after"]) <= MAX_WAIT:
            time.sleep(int(headers["retry-after"]))
            status, headers, body = request(url)
        if status == 401:
            print(f"logon refused at {url}")
            sys.exit(2)
        if status in (301, 302, 307, 308) and headers.get("location"):
            url = headers["location"]
            continue
        if status != 200:
            return None
        action, target = redirect_of(body)
        if action == "redirectUrl":
            url = target
            continue
        if action == "redirectAddr":
            print(f"redirected to the address {target}")
            return None
        return settings_of(body) or None
    print("too many redirects")
    return None


def http_redirect_method():
    """GET http://autodiscover.<domain>/autodiscover/autodiscover.xml without credentials; follow only https."""
    status, headers, _ = request(f"http://autodiscover.{DOMAIN}/autodiscover/autodiscover.xml", "GET",
                                 credentials=False)
    location = headers.get("location", "")
    if status in (301, 302, 307) and location.lower().startswith("https://"):
        return discover(location)
    if location:
        print(f"refusing the http redirect to {location}")
    return None


def main():
    for attempt in [*(lambda u=u: discover(u) for u in autodiscover_urls()), http_redirect_method]:
        try:
            server = attempt()
        except ssl.SSLCertVerificationError as exc:
            print(f"certificate refused: {exc.verify_message}")
            sys.exit(3)
        except (LookupError, OSError) as exc:
            print(f"skipped: {exc}")
            continue
        if server:
            print(f"server: {server}")
            return 0
    print("no Autodiscover method worked")
    return 1


if __name__ == "__main__":
    sys.exit(main())
