"""Run inside `mockex sandbox`: exchangelib's own Account(..., autodiscover=True) with its default resolver (it
reads /etc/resolv.conf) and trust (REQUESTS_CA_BUNDLE), then impacket's exchanger.py against mail.<domain>:443 and
rpcdump.py against its :135, all unmodified. Prints one JSON object: each client's verdict and the CA variables
the sandbox set.

Usage: sandbox_clients.py EMAIL PASSWORD NETBIOS_DOMAIN EXCHANGER_PY
"""
import json
import os
import subprocess
import sys

CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE")


def exchangelib_account(email: str, password: str) -> dict:
    from exchangelib import Account, Credentials
    try:
        account = Account(email, credentials=Credentials(email, password), autodiscover=True)
        return {"ews_url": account.protocol.service_endpoint, "version": str(account.version.api_version)}
    except Exception as exc:  # the client's own verdict, whatever it is
        return {"error": f"{type(exc).__name__}: {exc}"}


def exchanger(email: str, password: str, domain: str, script: str) -> dict:
    user, _, org = email.partition("@")
    done = subprocess.run([sys.executable, script, f"{domain}/{user}:{password}@mail.{org}", "nspi", "list-tables"],
                          capture_output=True, text=True, timeout=120)
    return {"exit": done.returncode, "output": done.stdout + done.stderr}


def rpcdump(email: str, script: str) -> dict:
    """impacket's rpcdump.py (next to exchanger.py) against the endpoint mapper on mail.<domain>:135."""
    done = subprocess.run([sys.executable, os.path.join(os.path.dirname(script), "rpcdump.py"),
                           f"mail.{email.partition('@')[2]}"], capture_output=True, text=True, timeout=120)
    return {"exit": done.returncode, "output": done.stdout + done.stderr}


def main() -> None:
    email, password, domain, script = sys.argv[1:5]
    print(json.dumps({"exchangelib": exchangelib_account(email, password),
                      "exchanger": exchanger(email, password, domain, script),
                      "rpcdump": rpcdump(email, script),
                      "ca": {name: os.environ.get(name) for name in CA_VARIABLES}}))


if __name__ == "__main__":
    main()
