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


# ---- plugin 2.0: mockex_org on the session's server, markers, paths, typed events, seeds, xdist ----------------
ORG_CONFTEST = '''
import hashlib, os, pytest

@pytest.fixture(autouse=True)
def note_server(request):
    """Each test notes (worker, CA digest, server pid) for the outer test: one CA per run, one server per worker."""
    yield
    org = request.node.funcargs.get("mockex_org")
    if org is not None and not org.dedicated:
        digest = hashlib.sha256(open(org.ca_file, "rb").read()).hexdigest()
        with open(os.environ["NOTES"], "a") as notes:
            notes.write(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')} {digest} {org.pid}\\n")
'''

ORG_TESTS = '''
import socket, ssl, pytest

def handshake(org):
    context = ssl.create_default_context(cafile=org.ca_file)
    with socket.create_connection((org.host, org.https_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="mail.contoso.test"):
            pass

@pytest.mark.mockex("tls-expired")
def test_refuses_expired(mockex_org):
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
        handshake(mockex_org)
    assert mockex_org.wait_for(kind="tls", ok=False)
    assert not mockex_org.events(kind="auth")
    kinds = {e["kind"] for e in mockex_org.events()}
    assert "connect" in kinds and not kinds & {"reset", "control"}      # this test's events only, after its setup

def test_the_next_test_gets_a_clean_org(mockex_org):
    handshake(mockex_org)
    assert mockex_org.wait_for(kind="tls", ok=True)
    assert mockex_org.events(kind=["tls", "connect"]) and not mockex_org.events(kind="tls", ok=False)
    assert mockex_org.user("alice")["email"] == "alice@contoso.test" and not mockex_org.dedicated

@pytest.mark.mockex("./expired-here.yaml")        # next to this file
def test_a_path_next_to_the_test_file(mockex_org):
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(mockex_org)

@pytest.mark.mockex("scenarios/expired-at-root.yaml")   # not beside the file: at the rootdir
def test_a_path_at_the_rootdir(mockex_org):
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(mockex_org)

@pytest.mark.mockex("mailbox-server-busy")          # steps: not live-applicable, a server of its own
def test_a_scenario_with_steps_gets_its_own_server(mockex_org, mockex_server):
    assert mockex_org.dedicated and mockex_org.pid != mockex_server.process.pid
    assert mockex_org.endpoints["scenarios"] == ["mailbox-server-busy"]

def test_several_orgs_in_one_test(mockex_orgs):
    expired, clean = mockex_orgs("tls-expired"), mockex_orgs()
    assert expired.pid != clean.pid
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(expired)
    handshake(clean)

@pytest.mark.mockex("tls-expired")
def test_that_fails(mockex_org):
    assert mockex_org.seed == 4242
    assert False, "failing on purpose"
'''


def run_user_suite(tmp_path, *args: str) -> subprocess.CompletedProcess:
    load = [] if installed_as_plugin() else ["-p", "harness.pytest_plugin"]
    return subprocess.run([sys.executable, "-m", "pytest", "-q", *load, "-p", "no:cacheprovider", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": REPO, "PATH": "/usr/bin:/bin", "NOTES": str(tmp_path / "notes")})


def test_mockex_org_under_xdist_with_markers_paths_and_a_replayable_seed(tmp_path):
    expired = (REPO + "/scenarios/tls-expired.yaml")
    (tmp_path / "suite").mkdir()
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "suite" / "expired-here.yaml").write_text(open(expired).read().replace("tls-expired", "here"))
    (tmp_path / "scenarios" / "expired-at-root.yaml").write_text(open(expired).read().replace("tls-expired", "root"))
    (tmp_path / "suite" / "test_orgs.py").write_text(ORG_TESTS)
    (tmp_path / "suite" / "conftest.py").write_text(ORG_CONFTEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")      # the rootdir
    result = run_user_suite(tmp_path, "-n", "2", "--mockex-seed", "4242", "suite")
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "1 failed, 6 passed" in result.stdout, output[-4000:]
    assert "mockex seed 4242: replay with --mockex-seed 4242" in result.stdout
    notes = [line.split() for line in (tmp_path / "notes").read_text().splitlines()]
    assert len({digest for _, digest, _ in notes}) == 1                                 # one CA for the run
    for worker in {w for w, _, _ in notes}:                                             # one server per worker
        assert len({pid for w, _, pid in notes if w == worker}) == 1
