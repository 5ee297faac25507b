"""`mockex run`: clients judged against scenarios (the built-in probe and small Python clients), its reports (JUnit
validated against a junit-10 XSD, JSON), shards, exit statuses, placeholders and environment, per-scenario timeouts,
interruption; and `mockex probe --endpoints`.

Every run here is a real `mockex run` process with real mocks on loopback. Timeouts given to clients are either the
expected outcome (a client that never ends) or far above what the client needs."""
from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
from lxml import etree

from harness.runner import report as run_report
from harness.runner.plan import Selection, parse_shard, select, shard
from harness.scenario import builtin_scenarios
from harness.testing import start_server
from tests.support import REPO
from tests.support.clients import run_mockex

XSD = os.path.join(REPO, "tests", "support", "junit-10.xsd")
PYTHON = sys.executable
ALICE_PASSWORD = "P@ssw0rd-alice"
RUN_TIMEOUT = 300    # bound on a whole `mockex run` in a test: a hang fails, it is not a deadline


def mockex_run(*args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    return run_mockex("run", *args, timeout=timeout)


def python_client(code: str, *args: str) -> str:
    """A --client command running ``code`` with Python, placeholders in ``args``."""
    return " ".join([PYTHON, "-c", shlex.quote(code), *args])


def results(path: Path) -> dict:
    document = json.loads(path.read_text())
    return {s["name"]: s for s in document["scenarios"]}


def validate_junit(path: Path) -> etree._ElementTree:
    schema = etree.XMLSchema(etree.parse(XSD))
    document = etree.parse(str(path))
    schema.assertValid(document)
    return document


# ---- selection and shards ------------------------------------------------------------------------------------
def test_shards_together_cover_every_scenario_exactly_once():
    scenarios = select(Selection(all=True))
    everything = [s.name for s in scenarios]
    assert len(everything) == len(builtin_scenarios()) > 50
    for count in (1, 2, 3, 7):
        parts = [[s.name for s in shard(scenarios, k, count)] for k in range(1, count + 1)]
        assert sorted(sum(parts, [])) == sorted(everything)            # each once: no duplicates, nothing missing
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    listed = mockex_run("--all", "--list", "--shard", "2/3")
    assert listed.stdout.split() == [s.name for s in shard(scenarios, 2, 3)]


def test_shard_is_deterministic_and_ordered_by_name():
    scenarios = builtin_scenarios()
    assert [s.name for s in shard(list(reversed(scenarios)), 2, 5)] == [s.name for s in shard(scenarios, 2, 5)]
    assert parse_shard(" 3 / 4 ") == (3, 4)
    for bad in ("0/3", "4/3", "1/0", "a/b", "2"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_layer_selection_and_usage_errors():
    tls = mockex_run("--layer", "tls", "--list").stdout.split()
    assert tls and all(name.startswith(("tls-", "autodiscover-", "root-domain-")) for name in tls)
    assert mockex_run("--all", "--shard", "4/3", "--client", "probe").returncode == 2
    assert mockex_run("--client", "probe").returncode == 2                      # no scenarios named
    assert mockex_run("--all").returncode == 2                                  # no client
    unknown = mockex_run("tls-expired", "--client", "true {emial}")
    assert unknown.returncode == 2 and "unknown placeholder {emial}: did you mean {email}?" in unknown.stderr
    absent = mockex_run("tls-expired", "--client", "./no-such-client {email}")
    assert absent.returncode == 2 and "./no-such-client: no such file" in absent.stderr
    missing = mockex_run("no-such-scenario", "--client", "probe")
    assert missing.returncode == 2 and "no such built-in scenario" in missing.stderr


def shard_document(shard_of: str, outcomes: dict, interrupted: bool = False) -> dict:
    results = [{"index": i, "name": name, "outcome": outcome, "seconds": 0.5, "layers": ["tls"], "problems":
                ["it exited with status 0"] if outcome == "failed" else [], "got": "it exited", "expected": "x"}
               for i, (name, outcome) in enumerate(outcomes.items())]
    return run_report.to_json(results, {"client": "probe", "shard": shard_of, "seconds": 1.0,
                                        "interrupted": interrupted})


def test_report_merges_the_shards_of_a_matrix(tmp_path):
    shards = {"1/3": {"a": "passed", "d": "passed"}, "2/3": {"b": "failed"}, "3/3": {"c": "skipped"}}
    paths = []
    for shard_of, outcomes in shards.items():
        paths.append(tmp_path / f"shard-{shard_of[0]}.json")
        paths[-1].write_text(json.dumps(shard_document(shard_of, outcomes)))
    junit, merged = tmp_path / "all.xml", tmp_path / "all.json"
    done = run_mockex("report", *map(str, paths), "--junit", str(junit), "--json", str(merged))
    assert done.returncode == 1 and "4 scenarios: 2 passed, 1 failed, 0 errors, 1 skipped" in done.stdout
    assert [c.get("name") for c in validate_junit(junit).getroot().findall(".//testcase")] == ["a", "b", "c", "d"]
    assert json.loads(merged.read_text())["summary"]["failed"] == 1
    paths[1].write_text(json.dumps(shard_document("2/3", {"b": "passed"})))
    assert run_mockex("report", *map(str, paths)).returncode == 0
    missing = run_mockex("report", str(paths[0]), str(paths[1]))
    assert missing.returncode == 1 and "shard(s) 3/3 missing" in missing.stderr
    twice = run_mockex("report", str(paths[0]), str(paths[0]))
    assert twice.returncode == 2 and "shard 1/3 is both" in twice.stderr


# ---- the probe as the client -------------------------------------------------------------------------------------
PROBE_SCENARIOS = ["tls-expired", "dns-no-srv", "auth-basic-only", "root-domain-web-certificate"]


def test_the_probe_as_client_passes_and_the_reports_validate(tmp_path):
    junit, report = tmp_path / "report.xml", tmp_path / "results.json"
    done = mockex_run(*PROBE_SCENARIOS, "--client", "probe", "-j", "2", "--junit", str(junit), "--json", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 scenarios: 4 passed, 0 failed, 0 errors, 0 skipped" in done.stdout
    found = results(report)
    assert set(found) == set(PROBE_SCENARIOS) and all(r["outcome"] == "passed" for r in found.values())
    assert found["tls-expired"]["probe"]["fails_at"] == "certificate"
    assert found["tls-expired"]["probe"]["reason"] == "certificate-expired"
    document = validate_junit(junit)
    cases = document.getroot().findall(".//testcase")
    assert [c.get("name") for c in cases] == sorted(PROBE_SCENARIOS)       # plan order, whatever finished first
    assert not document.getroot().findall(".//failure")
    assert ALICE_PASSWORD not in junit.read_text() + report.read_text()


def test_a_probe_verdict_other_than_expected_fails_the_scenario(tmp_path):
    scenario = tmp_path / "wrong.yaml"
    scenario.write_text("name: wrongly-expected\nfaults:\n  - tls.expired\n"
                        "expect:\n  analyzer: {fails_at: dns, reason: nxdomain}\n")
    junit = tmp_path / "report.xml"
    done = mockex_run(str(scenario), "--client", "probe", "--junit", str(junit))
    assert done.returncode == 1
    failure = validate_junit(junit).getroot().find(".//failure")
    assert "should conclude 'fails at dns (nxdomain)'" in failure.get("message")
    assert "fails at certificate (certificate-expired" in failure.text


# ---- any client: exit status, conduct, output, placeholders -------------------------------------------------------
def test_a_client_is_judged_by_what_the_analyzer_expects(tmp_path):
    """A client that always succeeds passes where the probe passes and fails where the probe fails at a step."""
    junit, report = tmp_path / "report.xml", tmp_path / "results.json"
    done = mockex_run("tls-expired", "dns-no-srv", "--client", python_client("print('synced')"),
                      "--junit", str(junit), "--json", str(report))
    assert done.returncode == 1
    found = results(report)
    assert found["dns-no-srv"]["outcome"] == "passed"
    assert found["tls-expired"]["outcome"] == "failed"
    assert "should fail (a non-zero exit); it exited with status 0" in found["tls-expired"]["problems"][0]
    failure = validate_junit(junit).getroot().find(".//testcase[@name='tls-expired']/failure")
    assert "the client should: fail cleanly" in failure.text and "what it did: it exited with status 0" in failure.text
    out = validate_junit(junit).getroot().find(".//testcase[@name='tls-expired']/system-out").text
    assert "--- mock transcript (excerpt) ---" in out and "synced" in out


POX_REQUEST = """<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
<Request><EMailAddress>alice@contoso.test</EMailAddress><AcceptableResponseSchema>
http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request>
</Autodiscover>"""


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_unmodified_is_judged_by_the_scenarios(tmp_path):
    """curl as the client: it logs on (NTLM) where the certificate is good and refuses the expired one before
    sending anything, which is what a correct client does in both."""
    request = tmp_path / "request.xml"
    request.write_text(POX_REQUEST)
    curl = ("curl -sS -f --max-time 20 --cacert {ca_file} "
            "--resolve autodiscover.contoso.test:{https_port}:{addresses[autodiscover.contoso.test]} "
            f"--ntlm -u {{login}}:{{password}} -H 'Content-Type: text/xml' --data-binary @{request} "
            "{autodiscover_url}")
    report = tmp_path / "results.json"
    done = mockex_run("tls-expired", "dns-no-srv", "--client", curl, "--json", str(report))
    found = results(report)
    assert done.returncode == 0, {name: (r["problems"], r["client"]["stderr"]) for name, r in found.items()}
    assert found["tls-expired"]["client"]["exit_code"] == 60          # CURLE_PEER_FAILED_VERIFICATION
    assert "<AuthPackage>" in found["dns-no-srv"]["client"]["stdout"]


def test_progress_and_summary_text():
    passed = {"name": "tls-expired", "outcome": "passed", "seconds": 0.4, "got": "it exited with status 1"}
    failed = {"name": "dns-no-srv", "outcome": "failed", "seconds": 1.2, "got": "it exited with status 1",
              "expected": "succeed (exit 0)", "problems": ["it should succeed (exit 0); it exited with status 1"]}
    terminal, log = io.StringIO(), io.StringIO()
    for stream, tty in ((terminal, True), (log, False)):
        progress = run_report.Progress(2, stream=stream, tty=tty, width=10)
        progress.update(passed)
        progress.update(failed)
        progress.close()
    assert "\r" in terminal.getvalue() and "[##########] 2/2" in terminal.getvalue()
    assert "FAIL dns-no-srv: it should succeed" in terminal.getvalue()
    assert log.getvalue().splitlines() == [
        "[1/2] PASS  tls-expired (0.4 s)",
        "[2/2] FAIL  dns-no-srv (1.2 s): it should succeed (exit 0); it exited with status 1"]
    table = run_report.summary_table([passed, failed], 1.6)
    assert "  dns-no-srv: should succeed (exit 0)" in table
    assert table.endswith("2 scenarios: 1 passed, 1 failed, 0 errors, 0 skipped in 1.6 s")
    assert run_report.exit_status([passed]) == 0 and run_report.exit_status([passed, failed]) == 1


SEND_BASIC = """
import base64, socket, ssl, sys
host, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
context = ssl.create_default_context(); context.check_hostname = False; context.verify_mode = ssl.CERT_NONE
tls = context.wrap_socket(socket.create_connection((address, port), timeout=10), server_hostname=host)
token = base64.b64encode(f"{sys.argv[4]}:{sys.argv[5]}".encode()).decode()
tls.sendall(f"POST /autodiscover/autodiscover.xml HTTP/1.1\\r\\nHost: {host}\\r\\nAuthorization: Basic {token}\\r\\n"
            "Content-Length: 0\\r\\n\\r\\n".encode())
print(tls.recv(200).decode(errors="replace").splitlines()[0])
sys.exit(1)
"""


def test_credentials_sent_over_an_untrusted_certificate_fail_even_a_clean_failure(tmp_path):
    report = tmp_path / "results.json"
    client = python_client(SEND_BASIC, "autodiscover.contoso.test", "{addresses[autodiscover.contoso.test]}",
                           "{https_port}", "{upn}", "{password}")
    done = mockex_run("tls-expired", "--client", client, "--json", str(report))
    assert done.returncode == 1, done.stdout + done.stderr
    result = results(report)["tls-expired"]
    assert result["client"]["exit_code"] == 1 and result["violations"] >= 1
    assert any("sent Basic credentials over a TLS connection it should not have trusted" in p
               for p in result["problems"])
    assert ALICE_PASSWORD not in report.read_text()


SHOW = """
import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items()
                  if k.startswith("MOCKEX_") or k in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
                                                      "CURL_CA_BUNDLE")}}))
"""


def test_placeholders_and_environment(tmp_path):
    state, report = tmp_path / "state", tmp_path / "results.json"
    client = python_client(SHOW, "{email}", "{login}", "{domain}", "{https_port}", "{dns}", "{autodiscover_url}",
                           "{ews_url}", "{ca_file}", "{scenario}", "--password={password}", "{{email}}", "${HOME}")
    done = mockex_run("dns-no-srv", "--client", client, "--ca-env", "--state-dir", str(state), "--json", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    shown = json.loads(results(report)["dns-no-srv"]["client"]["stdout"])
    endpoints = json.loads(next(state.glob("scenarios/*/endpoints.json")).read_text())
    port = endpoints["https"]["port"]
    assert shown["argv"] == [
        "alice@contoso.test", "CONTOSO\\alice", "contoso.test", str(port),
        f"{endpoints['dns']['host']}:{endpoints['dns']['port']}",
        f"https://autodiscover.contoso.test:{port}/autodiscover/autodiscover.xml", endpoints["ews_url"],
        endpoints["ca_file"], "dns-no-srv", "--password=********",   # the report masks the password
        "{email}", "${HOME}"]                                          # other braces are left alone
    env = shown["env"]
    assert env["MOCKEX_EMAIL"] == "alice@contoso.test" and env["MOCKEX_HTTPS_PORT"] == str(port)
    assert env["MOCKEX_PASSWORD"] == "********" and env["MOCKEX_ENDPOINTS"].endswith("endpoints.json")
    assert {env[v] for v in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE")} == {
        endpoints["ca_file"]}
    assert os.path.exists(endpoints["ca_file"])       # --state-dir keeps what the run made


CLIENT_EXPECT = """\
name: {name}
description: The analyzer passes here, but this client is expected to exit 3 and say why.
faults: []
expect:
  analyzer: {{passes: true}}
  client:
    exit: 3
    stdout: ["^sync refused: \\\\w+"]
    stderr_not: Traceback
    credentials: never
"""
# what the client does in each scenario of that text (it learns the scenario from {scenario}), and whether it passes
BEHAVIOURS = {
    "refuses-as-expected": ("print('sync refused: policy'); raise SystemExit(3)", True),
    "wrong-exit": ("print('sync refused: policy'); raise SystemExit(0)", False),
    "traceback": ("print('sync refused: policy'); raise RuntimeError('boom')", False),   # exit 1 and a traceback
}
BEHAVE = "import sys\ncode = {codes!r}[sys.argv[1]]\nexec(code)\n"


def test_expect_client_overrides_the_analyzer(tmp_path):
    paths = []
    for name in BEHAVIOURS:
        path = tmp_path / f"{name}.yaml"
        path.write_text(CLIENT_EXPECT.format(name=name))
        paths.append(str(path))
    report = tmp_path / "results.json"
    code = BEHAVE.format(codes={name: behaviour for name, (behaviour, _) in BEHAVIOURS.items()})
    done = mockex_run(*paths, "--client", python_client(code, "{scenario}"), "--json", str(report))
    assert done.returncode == 1
    found = results(report)
    assert {name: r["outcome"] == "passed" for name, r in found.items()} == {
        name: passes for name, (_, passes) in BEHAVIOURS.items()}, {n: r["problems"] for n, r in found.items()}
    assert "should exit with status 3" in found["wrong-exit"]["problems"][0]
    assert any("should not match /Traceback/" in p for p in found["traceback"]["problems"])
    assert all(r["expectation"]["derived_from"] == "analyzer+client" for r in found.values())


def test_expect_client_is_validated(tmp_path):
    scenario = tmp_path / "bad.yaml"
    scenario.write_text(CLIENT_EXPECT.format(name="bad").replace("exit: 3", "exit: sucess"))
    done = run_mockex("scenarios", "validate", str(scenario))
    assert done.returncode == 2 and "expect.client.exit" in done.stderr and "did you mean 'success'" in done.stderr
    scenario.write_text(CLIENT_EXPECT.format(name="bad").replace("Traceback", "'('"))
    done = run_mockex("scenarios", "validate", str(scenario))
    assert done.returncode == 2 and "not a regular expression" in done.stderr


# ---- timeouts and interruption --------------------------------------------------------------------------------
HANG = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1], "w") as handle:
    handle.write(f"{os.getpid()} {child.pid}")
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[-1][0] != "Z"     # a zombie has ended
    except FileNotFoundError:
        return False


def wait_until(predicate, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_hanging_client_hits_the_timeout_and_is_killed_with_its_children(tmp_path):
    pids, report = tmp_path / "pids", tmp_path / "results.json"
    done = mockex_run("dns-no-srv", "--client", python_client(HANG, str(pids)), "--timeout", "3",
                      "--json", str(report))
    assert done.returncode == 1
    result = results(report)["dns-no-srv"]
    assert result["client"]["timed_out"] and "did not finish within its timeout" in result["problems"][0]
    assert not [pid for pid in map(int, pids.read_text().split()) if alive(pid)]


def runner_processes(runner_pid: int) -> List[int]:
    """Processes started by the runner ``runner_pid``: its workers (their command line names its pid)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    words = handle.read().split(b"\0")
            except OSError:
                continue
            if b"harness.runner.worker" in words and str(runner_pid).encode() in words and alive(int(entry)):
                found.append(int(entry))
    return found


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_run_leaves_no_worker_mock_or_client(tmp_path, signum, status):
    state = tmp_path / "state"
    client = python_client(HANG, str(tmp_path / "pids-{scenario}"))
    runner = subprocess.Popen([PYTHON, "-m", "harness", "run", "dns-no-srv", "tls-expired", "-j", "2", "--timeout",
                               "300", "--state-dir", str(state), "--client", client],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def clients() -> List[int]:
        return [int(pid) for path in tmp_path.glob("pids-*") for pid in path.read_text().split()]

    try:
        assert wait_until(lambda: len(clients()) == 4)
        workers = runner_processes(runner.pid)
        assert workers
        endpoints = [json.loads(p.read_text()) for p in state.glob("scenarios/*/endpoints.json")]
        runner.send_signal(signum)
        assert runner.wait(timeout=60) == status
    finally:
        if runner.poll() is None:
            runner.kill()
        runner.communicate()
    assert not [pid for pid in clients() if alive(pid)]
    assert not [pid for pid in workers if alive(pid)]
    for described in endpoints:           # nothing listens any more where the mocks were
        with pytest.raises(OSError):
            socket.create_connection((described["https"]["host"], described["https"]["port"]), timeout=2).close()


# ---- mockex probe --endpoints -------------------------------------------------------------------------------
def test_probe_takes_ports_dns_ca_and_password_from_endpoints_json(tmp_path):
    served = start_server(str(tmp_path))
    try:
        done = run_mockex("probe", "alice@contoso.test", "--endpoints", os.path.join(str(tmp_path), "endpoints.json"),
                          "--json", timeout=120)
    finally:
        served.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["options"]["https_port"] == served.https_port
    assert report["options"]["ca_file"] == served.ca_file
    broken = run_mockex("probe", "alice@contoso.test", "--endpoints", str(tmp_path / "nothing.json"))
    assert broken.returncode == 2 and "--endpoints" in broken.stderr


@pytest.mark.slow
def test_every_builtin_scenario_passes_with_the_probe_as_client(tmp_path):
    junit = tmp_path / "all.xml"
    done = mockex_run("--all", "--client", "probe", "-j", "4", "--junit", str(junit), timeout=1800)
    assert done.returncode == 0, done.stdout[-5000:]
    assert len(validate_junit(junit).getroot().findall(".//testcase")) == len(builtin_scenarios())
