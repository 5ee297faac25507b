"""A real browser on the shared namespace: headless Chromium (Debian's) follows /owa to Exchange 2013's forms-based
logon page over the org's certificate and renders it. Loopback only: every other name fails to resolve."""
from __future__ import annotations

import base64
import hashlib
import shutil
import ssl
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from harness.testing import start_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")
PNG = b"\x89PNG\r\n\x1a\n"


def spki_pin(host: str, port: int) -> str:
    """The base64 SHA-256 of the served certificate's public key: what Chromium is told to accept (it has its own
    trust store, which does not hold the org's CA)."""
    pem = ssl.get_server_certificate((host, port))
    key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def chromium(served, profile, *args: str) -> subprocess.CompletedProcess:
    host, port = served.endpoints["https"]["host"], served.endpoints["https"]["port"]
    return subprocess.run([
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--host-resolver-rules=MAP mail.contoso.test {host}, MAP * ~NOTFOUND",
        f"--ignore-certificate-errors-spki-list={spki_pin(host, port)}", "--window-size=1280,900", *args,
        f"https://mail.contoso.test:{port}/owa/"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    served = start_server(str(tmp_path_factory.mktemp("owa")))
    yield served
    served.stop()


def test_chromium_follows_owa_to_the_logon_page_and_renders_it(served, tmp_path):
    dom = chromium(served, tmp_path / "profile", "--dump-dom")
    page = dom.stdout.decode(errors="replace")
    assert "<title>Outlook Web App</title>" in page, dom.stderr.decode(errors="replace")[-2000:]
    assert 'type="password"' in page
    shot = tmp_path / "owa.png"
    done = chromium(served, tmp_path / "profile2", f"--screenshot={shot}")
    assert shot.exists() and shot.read_bytes().startswith(PNG), done.stderr.decode(errors="replace")[-2000:]
    assert shot.stat().st_size > 5_000    # something was drawn, not an empty page
