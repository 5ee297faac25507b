"""exchangelib's own Account(..., autodiscover=True), unmodified: its default resolver (/etc/resolv.conf) and trust
(REQUESTS_CA_BUNDLE). Prints the EWS URL and exits 0 when it autodiscovers, prints the error and exits 1 when not:
a client `mockex run --sandbox` can judge by its exit status.

Usage: exchangelib_account.py EMAIL PASSWORD
"""
import sys


def main() -> int:
    from exchangelib import Account, Credentials
    email, password = sys.argv[1:3]
    try:
        account = Account(email, credentials=Credentials(email, password), autodiscover=True)
    except Exception as exc:  # the client's own verdict, whatever it is
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(account.protocol.service_endpoint, account.version.api_version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
