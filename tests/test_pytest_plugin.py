"""The pytest plugin users get with the package, run as a user would: a separate pytest on a test file of theirs."""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys

from tests.support import REPO

USER_TESTS = '''
import socket, ssl

def test_expired_certificate_is_refused(mockex):
    served = mockex("tls-expired")
    context = ssl.create_default_context(cafile=served.ca_file)
    with socket.create_connection((served.host, served.https_port), timeout=5) as raw:
        try:
            context.wrap_socket(raw, server_hostname="mail.contoso.test")
        except ssl.SSLCertVerificationError as exc:
            assert exc.verify_message == "certificate has expired"
        else:
            raise AssertionError("the handshake should fail")
    assert not served.transcript("auth")

def test_clean_server_for_the_session(mockex_server):
    assert mockex_server.user("alice")["email"] == "alice@contoso.test"
    assert mockex_server.endpoints["scenarios"] == []

def test_a_fresh_view_sees_this_tests_connection(mockex_fresh):
    with socket.create_connection((mockex_fresh.host, mockex_fresh.https_port), timeout=5):
        pass
    assert mockex_fresh.wait_for(lambda e: e["kind"] == "disconnect")
    kinds = [e["kind"] for e in mockex_fresh.transcript()]
    assert kinds[0] == "connect" and kinds[-1] == "disconnect"

def test_the_next_fresh_view_starts_empty_on_the_same_server(mockex_fresh, mockex_server):
    assert mockex_fresh.process is mockex_server.process
    assert mockex_fresh.transcript() == []
    assert len(mockex_server.transcript("connect")) == 1

def test_every_server_of_the_session_shares_one_ca(mockex, mockex_server):
    served = mockex()
    assert open(served.ca_file, "rb").read() == open(mockex_server.ca_file, "rb").read()
'''


def installed_as_plugin() -> bool:
    """Installed (as tox does), pytest loads the plugin by its entry point; from a bare checkout it must be named."""
    return any(e.value == "harness.pytest_plugin" for e in importlib.metadata.entry_points(group="pytest11"))


def test_plugin_fixtures_work_in_a_users_suite(tmp_path):
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    load = [] if installed_as_plugin() else ["-p", "harness.pytest_plugin"]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", *load, "-p", "no:xdist",
                             "-p", "no:cacheprovider", str(tmp_path / "test_user.py")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": REPO, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "5 passed" in result.stdout
