"""`mockex sandbox -- CMD`: unmodified clients reach the org on 443/80/53 with nothing pointing them at the mock (no
--resolve, no --cacert, no resolver settings), as the user running the tests and as nobody (dropped with setpriv when
that user is root); the command's exit status comes back; the mock outlives neither the command, nor a Ctrl-C, nor
the sandbox's parent; nothing is left outside the sandbox's temporary directory."""
from __future__ import annotations

import argparse
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from harness import cli
from harness.sandbox import kernel, namespace, unavailable_reason
from tests.support import sandbox as sb
from tests.support.autodiscover import pox_request

EMAIL, PASSWORD, NETBIOS = "alice@contoso.test", "P@ssw0rd-alice", "CONTOSO"
POX_URL = "https://autodiscover.contoso.test/autodiscover/autodiscover.xml"
CLIENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support", "sandbox_clients.py")
# A command that says it runs (creates the file named by its argument), then waits to be ended.
READY_THEN_WAIT = "import sys, time; open(sys.argv[1], 'w').close(); time.sleep(600)"
WAIT_BOUND = 120.0     # for something that happens in well under a second; a bound on a hang, not a deadline


def who(name: str) -> sb.User:
    try:
        user = sb.user(name)
    except ValueError as exc:
        pytest.skip(str(exc))
    reason = sb.refusal(user)
    if reason is not None:
        pytest.skip(f"user namespaces are refused to {name} here: {reason}")
    return user


@pytest.fixture
def where() -> Iterator[str]:
    path = sb.open_directory()
    yield path
    sb.end_marked(path)   # only when a test failed: its assertion has already said what was left
    shutil.rmtree(path, ignore_errors=True)


def transcript(state_dir: str) -> List[dict]:
    with open(os.path.join(state_dir, "transcript.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def of_kind(events: List[dict], kind: str) -> List[dict]:
    return [event for event in events if event["kind"] == kind]


def wait_until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT_BOUND
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def curl_pox(*extra: str) -> List[str]:
    if sb.CURL is None:
        pytest.skip("curl is not installed")
    return [sb.CURL, "-sS", "--max-time", "60", *extra, "--ntlm", "-u", f"{NETBIOS}\\alice:{PASSWORD}",
            "-H", "Content-Type: text/xml", "--data-binary", "@request.xml", POX_URL]


# ---- curl, as it is -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["self", "nobody"])
def test_curl_gets_alice_s_settings_through_the_system_resolver_and_the_ca_variables(name, where):
    user = who(name)
    with open(os.path.join(where, "request.xml"), "wb") as handle:
        handle.write(pox_request(EMAIL))
    state = os.path.join(where, "state")
    result = sb.run(user, where, "--state-dir", state, "--", *curl_pox())
    assert result.returncode == 0, result.stderr
    assert "<Server>mail.contoso.test</Server>" in result.stdout
    assert "mockex sandbox: contoso.test served on 127.0.0.1 (HTTPS 443, HTTP 80, DNS 53)" in result.stderr
    events = transcript(state)
    asked = {(e["name"], e["type"]) for e in of_kind(events, "dns")}
    assert ("autodiscover.contoso.test", "A") in asked            # curl asked the system resolver, which asked us
    assert [e["result"] for e in of_kind(events, "auth")][-1] == "success"
    assert sb.leftovers(where) == []


@pytest.mark.parametrize("name", ["self", "nobody"])
def test_curl_refuses_the_expired_certificate_and_its_exit_status_60_comes_back(name, where):
    user = who(name)
    with open(os.path.join(where, "request.xml"), "wb") as handle:
        handle.write(pox_request(EMAIL))
    state = os.path.join(where, "state")
    result = sb.run(user, where, "--quiet", "--state-dir", state, "--scenario", "tls-expired", "--", *curl_pox())
    assert result.returncode == 60, result.stderr
    assert "certificate has expired" in result.stderr
    events = transcript(state)
    assert [e["ok"] for e in of_kind(events, "tls")] == [False]
    assert not of_kind(events, "auth")                             # no credentials went out
    assert sb.leftovers(where) == []


# ---- exchangelib and exchanger.py, as they are ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def client_runs() -> Iterator[Callable[[str, Optional[str]], Tuple[dict, List[dict]]]]:
    """(what sandbox_clients.py printed, the transcript) for a user and a scenario; each pair is run once."""
    done: Dict[Tuple[str, Optional[str]], Tuple[dict, List[dict]]] = {}
    made: List[str] = []

    def outcome(name: str, scenario: Optional[str]) -> Tuple[dict, List[dict]]:
        user = who(name)
        if sb.EXCHANGER is None:
            pytest.skip("impacket's exchanger.py is not installed")
        if (name, scenario) not in done:
            where = sb.open_directory()
            made.append(where)
            state = os.path.join(where, "state")
            options = ["--scenario", scenario] if scenario else []
            result = sb.run(user, where, "--quiet", "--state-dir", state, *options, "--", user.python, CLIENTS, EMAIL,
                            PASSWORD, NETBIOS, sb.EXCHANGER)
            assert result.returncode == 0, result.stderr
            assert sb.leftovers(where) == []
            done[(name, scenario)] = json.loads(result.stdout.strip().splitlines()[-1]), transcript(state)
        return done[(name, scenario)]

    yield outcome
    for where in made:
        sb.end_marked(where)
        shutil.rmtree(where, ignore_errors=True)


@pytest.mark.parametrize("name", ["self", "nobody"])
def test_exchangelib_account_autodiscovers_with_its_default_resolver(name, client_runs):
    printed, events = client_runs(name, None)
    assert printed["exchangelib"] == {"ews_url": "https://mail.contoso.test/EWS/Exchange.asmx",
                                      "version": "Exchange2013_SP1"}
    ca = set(printed["ca"].values())
    assert len(ca) == 1 and next(iter(ca)).endswith("/pki/root-ca.pem")   # one CA file, in all four variables
    assert any(e["name"] == "contoso.test" for e in of_kind(events, "dns"))
    assert "success" in [e["result"] for e in of_kind(events, "auth")]


@pytest.mark.parametrize("name", ["self", "nobody"])
def test_exchangelib_account_gives_up_on_the_expired_certificate(name, client_runs):
    printed, events = client_runs(name, "tls-expired")
    assert printed["exchangelib"]["error"].startswith("AutoDiscoverFailed: All steps in the autodiscover protocol")
    # exchanger.py ran in the same sandbox, against mail.contoso.test's RPC proxy only
    handshakes = [e for e in of_kind(events, "tls") if e["sni"] in ("contoso.test", "autodiscover.contoso.test")]
    assert handshakes and all(not e["ok"] and "certificate expired" in e["reason"] for e in handshakes)
    assert not [e for e in of_kind(events, "auth") if e["path"].lower().startswith("/autodiscover")]


@pytest.mark.parametrize("name", ["self", "nobody"])
def test_exchanger_lists_the_address_book_tables_on_443(name, client_runs):
    printed, events = client_runs(name, None)
    assert printed["exchanger"]["exit"] == 0, printed["exchanger"]["output"]
    assert "Default Global Address List" in printed["exchanger"]["output"]
    assert {(c["target"], c["port"]) for c in of_kind(events, "rpc_channel")} == {("EX01", 6004)}


@pytest.mark.parametrize("name", ["self", "nobody"])
def test_rpcdump_finds_the_endpoint_mapper_on_135_with_no_exchange_interface(name, client_runs):
    printed, events = client_runs(name, None)
    output = printed["rpcdump"]["output"]
    assert printed["rpcdump"]["exit"] == 0 and "Received 6 endpoints." in output, output
    exchange = ("F5CC5A18-4264-101A-8C59-08002B2F8426", "1544F5E0-613C-11D1-93DF-00C04FD7BD09",
                "A4F1DB00-CA47-1067-B31F-00DD010662DA")   # NSPI, RFR, EMSMDB
    assert not [uuid for uuid in exchange if uuid in output.upper()]
    assert of_kind(events, "epm_lookup")


@pytest.mark.parametrize("name", ["self", "nobody"])
def test_exchanger_does_not_check_the_certificate_so_the_expired_one_does_not_stop_it(name, client_runs):
    """impacket's RPC-over-HTTP transport wraps its sockets in an ssl.SSLContext that verifies nothing: what is
    expected of exchanger.py under tls-expired is that it carries on over the expired certificate."""
    printed, events = client_runs(name, "tls-expired")
    assert printed["exchanger"]["exit"] == 0, printed["exchanger"]["output"]
    assert "Default Global Address List" in printed["exchanger"]["output"]
    served = [e for e in of_kind(events, "tls") if e["ok"]]
    assert served and all(e["profile"] == "expired certificate" for e in served)


# ---- what the command sees, and what it leaves ---------------------------------------------------------------------
def test_the_namespace_has_its_own_resolver_files_and_the_host_keeps_its(where):
    user = who("self")
    before = {path: open(path, "rb").read() for path in ("/etc/resolv.conf", "/etc/hosts")}
    result = sb.run(user, where, "--quiet", "--", "sh", "-c", 'cat /etc/resolv.conf; cat /etc/hosts; '
                    'echo "ca=$SSL_CERT_FILE endpoints=$MOCKEX_ENDPOINTS"')
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == "nameserver 127.0.0.1"
    assert not any("contoso" in line for line in lines[1:-1])   # the org's names come from the mock's DNS (faults act)
    assert lines[-1].startswith(f"ca={where}/mockex-sandbox-") and lines[-1].endswith("/state/endpoints.json")
    assert {path: open(path, "rb").read() for path in before} == before
    assert sb.leftovers(where) == []


@pytest.mark.parametrize("script, status", [("exit 7", 7), ("exit 0", 0), ("kill -TERM $$", 128 + signal.SIGTERM)])
def test_the_command_s_exit_status_comes_back(where, script, status):
    result = sb.run(who("self"), where, "--quiet", "--", "sh", "-c", script)
    assert (result.returncode, result.stderr) == (status, "")
    assert sb.leftovers(where) == []


def test_a_missing_command_is_127_and_an_unrunnable_one_126(where):
    user = who("self")
    missing = sb.run(user, where, "--quiet", "--", "no-such-command-here")
    assert missing.returncode == 127
    assert missing.stderr == "mockex sandbox: no-such-command-here: command not found\n"
    unrunnable = sb.run(user, where, "--quiet", "--", where)   # a directory
    assert unrunnable.returncode == 126 and "Permission denied" in unrunnable.stderr
    assert sb.leftovers(where) == []


def test_a_mock_that_cannot_start_is_125_with_its_reason(where):
    broken = os.path.join(where, "org.yaml")
    with open(broken, "w") as handle:
        handle.write("org:\n  name: X\n")
    result = sb.run(who("self"), where, "--quiet", "--org", broken, "--", "true")
    assert result.returncode == 125
    assert result.stderr.startswith("mockex sandbox: the mock did not start (exit status 2):")
    assert broken in result.stderr
    assert sb.leftovers(where) == []


def test_usage_errors_come_before_any_namespace(where):
    user = who("self")
    nothing = sb.run(user, where, "--quiet")
    assert nothing.returncode == 2 and "name the command to run" in nothing.stderr
    unknown = sb.run(user, where, "--scenario", "no-such-scenario", "--", "true")
    assert unknown.returncode == 2 and "no-such-scenario" in unknown.stderr
    assert sb.leftovers(where) == []


# Counts the SIGINTs it gets; a SIGTERM ends it with status 10 + that count. Standard signals pending together are
# taken lowest number first, and the sandbox takes its own the same way, so a SIGINT it forwarded would be counted
# before the SIGTERM that follows it.
COUNT_INTERRUPTS = """import signal, sys
ready, seen = sys.argv[1:3]
interrupts = 0
def on_interrupt(*_):
    global interrupts
    interrupts += 1
    open(seen, "w").close()
signal.signal(signal.SIGINT, on_interrupt)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(10 + interrupts))
open(ready, "w").close()
while True:
    signal.pause()
"""


def in_terminal(argv: List[str], env: Dict[str, str], cwd: str) -> Tuple[int, int]:
    """Start argv as a session of its own on a new pseudo-terminal: (pid, the terminal's master side)."""
    pid, terminal = pty.fork()
    if pid == 0:
        try:
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    return pid, terminal


def finish(pid: int, terminal: int) -> Tuple[int, bytes]:
    """Read the terminal until every process holding it is gone; then the exit status and the output."""
    output = b""
    try:
        while True:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:   # EIO: the last holder closed it
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(terminal)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output


def test_ctrl_c_at_the_terminal_ends_the_command_then_the_mock(where):
    user = who("self")
    ready = os.path.join(where, "ready")
    argv = sb.sandbox_argv(user, "--quiet", "--state-dir", os.path.join(where, "state"), "--",
                           sys.executable, "-c", READY_THEN_WAIT, ready)
    pid, terminal = in_terminal(argv, sb.environment(user, where), where)
    try:
        assert wait_until(lambda: os.path.exists(ready)), "the command never started"
        os.write(terminal, b"\x03")
    finally:
        status, output = finish(pid, terminal)
    assert status == 128 + signal.SIGINT, output
    assert b"KeyboardInterrupt" in output
    assert transcript(os.path.join(where, "state"))[-1]["kind"] == "stop"   # stopped by the sandbox, cleanly
    assert sb.leftovers(where) == []


def test_a_terminal_s_ctrl_c_reaches_the_command_once(where):
    """The kernel sends a terminal's Ctrl-C to the command itself: the sandbox must not send it a second one."""
    user = who("self")
    ready, seen = os.path.join(where, "ready"), os.path.join(where, "seen")
    argv = sb.sandbox_argv(user, "--quiet", "--", sys.executable, "-c", COUNT_INTERRUPTS, ready, seen)
    pid, terminal = in_terminal(argv, sb.environment(user, where), where)
    try:
        assert wait_until(lambda: os.path.exists(ready)), "the command never started"
        os.write(terminal, b"\x03")
        assert wait_until(lambda: os.path.exists(seen)), "the Ctrl-C never reached the command"
        os.kill(pid, signal.SIGTERM)            # forwarded: the sandbox's own signals do reach the command
    finally:
        status, output = finish(pid, terminal)
    assert status == 10 + 1, output
    assert sb.leftovers(where) == []


def test_sigterm_to_the_sandbox_reaches_the_command(where):
    user = who("self")
    ready = os.path.join(where, "ready")
    sandbox = subprocess.Popen(sb.sandbox_argv(user, "--quiet", "--", sys.executable, "-c", READY_THEN_WAIT, ready),
                               cwd=where, env=sb.environment(user, where), stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: os.path.exists(ready)), "the command never started"
        sandbox.send_signal(signal.SIGTERM)
        assert sandbox.wait(timeout=WAIT_BOUND) == 128 + signal.SIGTERM
    finally:
        sandbox.kill()
        sandbox.communicate()
    assert sb.leftovers(where) == []


def test_everything_ends_when_the_sandbox_s_parent_dies(where):
    user = who("self")
    ready = os.path.join(where, "ready")
    sandbox = sb.sandbox_argv(user, "--quiet", "--", sys.executable, "-c", READY_THEN_WAIT, ready)
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); "
                               "time.sleep(600)", *sandbox], cwd=where, env=sb.environment(user, where))
    try:
        assert wait_until(lambda: os.path.exists(ready)), "the command never started"
        assert len(sb.processes_marked(where)) >= 2          # at least the mock and the command
        parent.kill()
        parent.wait()
        assert wait_until(lambda: not sb.leftovers(where)), sb.leftovers(where)
    finally:
        parent.kill()
        parent.wait()


# ---- the refusal and the pieces ------------------------------------------------------------------------------------
def fake_unshare(directory: str) -> None:
    path = os.path.join(directory, "unshare")
    with open(path, "w") as handle:
        handle.write("#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n")
    os.chmod(path, 0o755)


def test_a_refused_user_namespace_names_the_sysctl_that_refuses_it(tmp_path, monkeypatch):
    fake_unshare(str(tmp_path))
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(kernel, "_sysctl", lambda name: {"kernel.unprivileged_userns_clone": "0",
                                                         "kernel.apparmor_restrict_unprivileged_userns": "1"}.get(name))
    reason = unavailable_reason()
    assert reason is not None and "(unshare: unshare failed: Operation not permitted)" in reason
    assert "sysctl kernel.unprivileged_userns_clone is 0" in reason
    assert "sysctl kernel.apparmor_restrict_unprivileged_userns is 1" in reason
    monkeypatch.setattr(kernel, "_sysctl", lambda name: "0" if name == "user.max_user_namespaces" else None)
    assert "sysctl user.max_user_namespaces is 0 (as root: sysctl -w user.max_user_namespaces=15000)" in \
        unavailable_reason()
    monkeypatch.setattr(kernel, "_sysctl", lambda name: None)
    assert "seccomp" in unavailable_reason()


def test_mockex_sandbox_reports_the_refusal_with_125(tmp_path):
    fake_unshare(str(tmp_path))
    user = sb.user("self")
    env = dict(sb.environment(user, str(tmp_path)), PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(sb.sandbox_argv(user, "--", "true"), env=env, capture_output=True, text=True,
                            timeout=sb.RUN_TIMEOUT)
    assert result.returncode == 125
    assert result.stderr.startswith("mockex sandbox: cannot make a user namespace as ")
    assert "unshare failed: Operation not permitted" in result.stderr


SHAPE = """import os, socket, sys
from harness.sandbox import namespace
work, nscd = sys.argv[1:3]
listener = socket.socket(socket.AF_UNIX)
listener.bind(nscd)
listener.listen(1)
namespace.NSCD_SOCKETS = (nscd,)
namespace.shape_namespace(work)
probe = socket.socket(socket.AF_UNIX)
try:
    probe.connect(nscd)
    print("nscd reachable")
except ConnectionRefusedError:
    print("nscd hidden")
up = socket.socket()
up.bind(("127.0.3.4", 0))     # loopback is up, and all of 127/8 with it
print(open("/etc/resolv.conf").read().strip())
"""


def test_shape_namespace_binds_the_resolver_files_and_hides_nscd(tmp_path):
    """shape_namespace on its own, as a supervisor of another kind uses it: here with a stand-in nscd socket."""
    who("self")
    work, nscd = tmp_path / "work", tmp_path / "nscd-socket"
    work.mkdir()
    done = subprocess.run(namespace.unshare_argv([sys.executable, "-c", SHAPE, str(work), str(nscd)]),
                          capture_output=True, text=True, timeout=sb.RUN_TIMEOUT,
                          env=dict(os.environ, PYTHONPATH=sb.user("self").pythonpath))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["nscd hidden", "nameserver 127.0.0.1"]
    assert {"etc-resolv.conf", "etc-hosts"} <= set(os.listdir(work))


@pytest.mark.parametrize("line, wanted", [
    ("hosts:          files dns", None),
    ("hosts: files mdns4_minimal [NOTFOUND=return] dns myhostname", "hosts: files dns"),
    ("hosts: files myhostname resolve [!UNAVAIL=return] dns", "hosts: files dns"),
    ("hosts: dns  # only DNS", None),
])
def test_nsswitch_is_replaced_only_when_hosts_asks_more_than_files_and_dns(line, wanted):
    text = f"passwd: files systemd\n{line}\nnetworks: files\n"
    replaced = namespace.nsswitch_for_dns(text)
    if wanted is None:
        assert replaced is None
    else:
        assert replaced == f"passwd: files systemd\n{wanted}\nnetworks: files\n"


def test_every_mock_option_of_sandbox_reaches_the_mock_s_serve_unchanged():
    """`sandbox` re-spells its mock options for `mockex serve` (cli.MOCK_OPTIONS): none may be dropped or altered."""
    parser = cli.build_parser()
    given = parser.parse_args(["sandbox", "--org", "/o", "--seed", "7", "--scenario", "a", "--scenario", "./b.yaml",
                               "--idle-timeout", "1.5", "--header-wait-timeout", "0", "--tls-handshake-timeout", "3",
                               "--max-connections-per-address", "4", "--tls-max", "1.3", "--", "true"])
    served = parser.parse_args(["serve", *cli.mock_arguments(given)])
    mock_options = argparse.ArgumentParser()
    cli._add_org_options(mock_options)
    shared = set(vars(mock_options.parse_args([])))
    assert shared and {name: getattr(served, name) for name in shared} == {name: getattr(given, name)
                                                                           for name in shared}
