"""The example buggy clients of examples/buggy-clients and the check every fuzz-layer test makes of one: its bug is
found, shrunk to exactly one fault, saved as a scenario that `mockex run` reproduces, and a careful client passes
that scenario."""
from __future__ import annotations

import os
import sys

import yaml

from harness.fuzz import fuzz_client
from tests.support import REPO
from tests.support.clients import run_mockex

CLIENTS = os.path.join(REPO, "examples", "buggy-clients")
ARGS = (" --url {autodiscover_url} --host {host} --https-port {https_port} --http-port {http_port} --ca {ca_file}"
        " --email {email} --password {password}")


def client(name: str) -> str:
    return f"{sys.executable} {os.path.join(CLIENTS, name)}.py" + ARGS


def found_and_reproduced(tmp_path, name: str, expected_fault: dict, oracle: str, run_problem: str,
                         layers: tuple = ("autodiscover",), max_examples: int = 150) -> None:
    report = fuzz_client(client(name), layers=layers, max_examples=max_examples, seed=1, timeout=10, max_findings=1,
                         save_failures=str(tmp_path))
    assert len(report.findings) == 1, [f.describe() for f in report.findings]
    finding = report.findings[0]
    assert finding.verdict.oracle == oracle
    assert finding.faults == [expected_fault]                 # shrunk to exactly this misbehaviour
    saved = yaml.safe_load(open(finding.path, encoding="utf-8"))
    params = expected_fault["params"]
    assert saved["faults"] == [{expected_fault["fault"]: params} if params else expected_fault["fault"]]
    assert "# oracle: " + oracle in open(finding.path, encoding="utf-8").read()
    done = run_mockex("run", finding.path, "--client", client(name), "--timeout", "20", timeout=120)
    assert done.returncode == 1 and run_problem in done.stdout, done.stdout + done.stderr
    careful = run_mockex("run", finding.path, "--client", client("careful"), "--timeout", "20", timeout=120)
    assert careful.returncode == 0, careful.stdout + careful.stderr   # the scenario judges, it does not just fail
