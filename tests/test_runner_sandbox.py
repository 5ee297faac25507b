"""`mockex run --sandbox`: each runner worker in user, network and mount namespaces of its own, so unmodified
clients (curl, exchangelib's Account(..., autodiscover=True), impacket's exchanger.py) reach the org on 443/80/53
through the system resolver, side by side with -j 2; each judged by the scenario over the clean org (a scenario
file without faults) and tls-expired, with JUnit that says so. And the refusal where user namespaces are not
allowed, as a usage error.

Skipped, with harness.sandbox.unavailable_reason()'s words, where this user may not make a user namespace."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest
from lxml import etree

from harness.sandbox import unavailable_reason
from tests.support import REPO
from tests.support.clients import run_mockex

XSD = os.path.join(REPO, "tests", "support", "junit-10.xsd")
EXCHANGELIB_ACCOUNT = os.path.join(REPO, "tests", "support", "exchangelib_account.py")
EXCHANGER = shutil.which("exchanger.py")
CURL = shutil.which("curl")
PASSWORD = "P@ssw0rd-alice"
RUN_TIMEOUT = 300    # bound on a whole run: a hang fails, it is not a deadline
CLEAN = "name: clean\ndescription: the org as it is, no fault\nexpect:\n  analyzer: {passes: true}\n"
POX_REQUEST = """<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
<Request><EMailAddress>alice@contoso.test</EMailAddress><AcceptableResponseSchema>
http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request>
</Autodiscover>"""

_REFUSED = unavailable_reason()
needs_namespaces = pytest.mark.skipif(_REFUSED is not None, reason=f"no user namespace here: {_REFUSED}")


def sandboxed_run(tmp_path: Path, client: str, *scenarios: str) -> subprocess.CompletedProcess:
    """`mockex run --sandbox -j 2` over the clean org and ``scenarios``, JUnit and JSON in tmp_path, state kept."""
    clean = tmp_path / "clean.yaml"
    clean.write_text(CLEAN)
    return run_mockex("run", "--sandbox", "-j", "2", str(clean), *scenarios, "--client", client,
                      "--state-dir", str(tmp_path / "state"), "--junit", str(tmp_path / "report.xml"),
                      "--json", str(tmp_path / "results.json"), timeout=RUN_TIMEOUT)


def results(tmp_path: Path) -> Dict[str, dict]:
    return {s["name"]: s for s in json.loads((tmp_path / "results.json").read_text())["scenarios"]}


def junit_cases(tmp_path: Path) -> Dict[str, etree._Element]:
    document = etree.parse(str(tmp_path / "report.xml"))
    etree.XMLSchema(etree.parse(XSD)).assertValid(document)
    assert PASSWORD not in (tmp_path / "report.xml").read_text()
    return {case.get("name"): case for case in document.getroot().iter("testcase")}


def served_ports(tmp_path: Path) -> List[tuple]:
    """(https, http, dns) port of every scenario's mock, from the endpoints.json each left in the state dir."""
    found = []
    for path in sorted((tmp_path / "state" / "scenarios").glob("*/endpoints.json")):
        endpoints = json.loads(path.read_text())
        found.append((endpoints["https"]["port"], endpoints["http"]["port"], endpoints["dns"]["port"]))
    return found


def transcript(tmp_path: Path, name: str) -> List[dict]:
    [path] = (tmp_path / "state" / "scenarios").glob(f"*-{name}/transcript.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def explain(found: Dict[str, dict]) -> dict:
    return {name: (r["outcome"], r["problems"], r.get("client", {}).get("stderr", "")[-600:])
            for name, r in found.items()}


# ---- the three real clients, unmodified, on the real ports ---------------------------------------------------------
@needs_namespaces
@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_logs_on_through_the_system_resolver_and_refuses_the_expired_certificate(tmp_path):
    request = tmp_path / "request.xml"
    request.write_text(POX_REQUEST)
    curl = (f"{CURL} -sS -f --max-time 60 --ntlm -u 'CONTOSO\\alice:{{password}}' -H 'Content-Type: text/xml' "
            f"--data-binary @{request} https://autodiscover.contoso.test/autodiscover/autodiscover.xml")
    done = sandboxed_run(tmp_path, curl, "tls-expired")
    found = results(tmp_path)
    assert done.returncode == 0, explain(found)
    assert served_ports(tmp_path) == [(443, 80, 53), (443, 80, 53)]        # each in its own network namespace
    assert "<Server>mail.contoso.test</Server>" in found["clean"]["client"]["stdout"]
    assert found["tls-expired"]["client"]["exit_code"] == 60              # CURLE_PEER_FAILED_VERIFICATION
    assert "certificate has expired" in found["tls-expired"]["client"]["stderr"]
    assert [e["name"] for e in transcript(tmp_path, "clean") if e["kind"] == "dns"][:1] == \
        ["autodiscover.contoso.test"]                                    # the system resolver asked the mock
    cases = junit_cases(tmp_path)
    assert set(cases) == {"clean", "tls-expired"}
    assert all(case.find("failure") is None and case.find("error") is None for case in cases.values())


@needs_namespaces
def test_exchangelib_autodiscovers_with_its_default_resolver_and_gives_up_on_the_expired_certificate(tmp_path):
    client = f"{shlex.quote(sys.executable)} {EXCHANGELIB_ACCOUNT} {{email}} {{password}}"
    done = sandboxed_run(tmp_path, client, "tls-expired")
    found = results(tmp_path)
    assert done.returncode == 0, explain(found)
    assert found["clean"]["client"]["stdout"].split() == ["https://mail.contoso.test/EWS/Exchange.asmx",
                                                           "Exchange2013_SP1"]
    assert found["tls-expired"]["client"]["exit_code"] == 1
    assert "AutoDiscoverFailed: All steps in the autodiscover" in found["tls-expired"]["client"]["stderr"]
    assert found["tls-expired"]["violations"] == 0                      # no credentials over the expired certificate
    cases = junit_cases(tmp_path)
    assert all(case.find("failure") is None and case.find("error") is None for case in cases.values())


@needs_namespaces
@pytest.mark.skipif(EXCHANGER is None, reason="impacket's exchanger.py is not installed")
def test_exchanger_lists_the_tables_on_443_and_is_flagged_for_trusting_the_expired_certificate(tmp_path):
    """impacket verifies no certificate: under tls-expired exchanger.py carries on and logs on over the expired
    one. The runner fails it there twice over: it should have failed, and it sent credentials over TLS it could not
    have trusted (the conduct every scenario asks)."""
    client = (f"{shlex.quote(sys.executable)} {EXCHANGER} 'CONTOSO/alice:{{password}}@mail.contoso.test' "
              "nspi list-tables")
    done = sandboxed_run(tmp_path, client, "tls-expired")
    found = results(tmp_path)
    assert done.returncode == 1, explain(found)
    assert found["clean"]["outcome"] == "passed", explain(found)
    assert "Default Global Address List" in found["clean"]["client"]["stdout"]
    expired = found["tls-expired"]
    assert expired["outcome"] == "failed" and expired["client"]["exit_code"] == 0
    assert expired["violations"] > 0
    assert expired["problems"][0].startswith("it should fail (a non-zero exit); it exited with status 0")
    assert any("credentials over a TLS connection it should not have trusted" in p for p in expired["problems"])
    cases = junit_cases(tmp_path)
    assert cases["clean"].find("failure") is None
    failure = cases["tls-expired"].find("failure")
    assert failure is not None and "should not have trusted" in failure.text
    assert PASSWORD not in (tmp_path / "results.json").read_text()


# ---- the probe, on the real ports and the namespace's resolver ------------------------------------------------------
@needs_namespaces
def test_the_probe_in_the_sandbox_reaches_the_same_verdicts(tmp_path):
    done = sandboxed_run(tmp_path, "probe", "tls-expired", "dns-nxdomain-autodiscover")
    found = results(tmp_path)
    assert done.returncode == 0, explain(found)
    assert "3 scenarios: 3 passed, 0 failed, 0 errors, 0 skipped" in done.stdout
    assert served_ports(tmp_path) == [(443, 80, 53)] * 3
    assert found["dns-nxdomain-autodiscover"]["probe"]["reason"] == "nxdomain"
    assert found["tls-expired"]["probe"]["reason"] == "certificate-expired"
    assert '"sandbox": true' in (tmp_path / "results.json").read_text()


# ---- interruption ---------------------------------------------------------------------------------------------------
HANG = """import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1], "w") as handle:
    handle.write(f"{os.getpid()} {child.pid}")
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(") ", 1)[-1][0] != "Z"     # a zombie has ended
    except FileNotFoundError:
        return False


def children(parent: int) -> List[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                if int(handle.read().rsplit(") ", 1)[-1].split()[1]) == parent:
                    found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found


@needs_namespaces
def test_sigterm_ends_the_sandboxed_workers_and_their_clients(tmp_path):
    """The workers are the runner's own children (unshare execs them in place), so a SIGTERM reaches and ends them,
    and their hanging clients with them, as without --sandbox."""
    client = f"{shlex.quote(sys.executable)} -c {shlex.quote(HANG)} {tmp_path}/pids-{{scenario}}"
    runner = subprocess.Popen([sys.executable, "-m", "harness", "run", "--sandbox", "-j", "2", "dns-no-srv",
                               "tls-expired", "--timeout", "300", "--client", client],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def clients() -> List[int]:
        return [int(pid) for path in tmp_path.glob("pids-*") for pid in path.read_text().split()]

    try:
        deadline = time.monotonic() + RUN_TIMEOUT      # a bound on a hang: the clients start within seconds
        while len(clients()) < 4 and time.monotonic() < deadline and runner.poll() is None:
            time.sleep(0.05)
        assert len(clients()) == 4, runner.poll()
        workers = children(runner.pid)
        assert len(workers) == 2
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=RUN_TIMEOUT) == 143
    finally:
        if runner.poll() is None:
            runner.kill()
        runner.communicate()
    assert not [pid for pid in clients() + workers if alive(pid)]


# ---- refusals ------------------------------------------------------------------------------------------------------
def test_a_refused_user_namespace_is_a_usage_error_naming_why(tmp_path):
    unshare = tmp_path / "unshare"
    unshare.write_text("#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n")
    unshare.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    done = run_mockex("run", "--sandbox", "tls-expired", "--client", "probe", env=env, timeout=RUN_TIMEOUT)
    assert done.returncode == 2
    assert done.stderr.startswith("mockex run: --sandbox: cannot make a user namespace as ")
    assert "unshare failed: Operation not permitted" in done.stderr
    assert done.stdout == ""                                             # nothing ran


def test_sandbox_serves_on_127_0_0_1_only():
    done = run_mockex("run", "--sandbox", "--listen", "127.0.0.2", "tls-expired", "--client", "probe")
    assert done.returncode == 2
    assert "--sandbox serves on 127.0.0.1; --listen 127.0.0.2 cannot go with it" in done.stderr
