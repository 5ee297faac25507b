"""Real clients in a private network + mount namespace (root only), where mockex holds :443/:80/:53 of 127.0.0.1.

Inside, loopback is up and /etc/resolv.conf points at 127.0.0.1, so the system resolver (getaddrinfo, curl,
requests) asks mockex's DNS on :53: clients resolve the org's names with no change to them or to the host. A batch
runner starts scenarios one after another there and runs exchangelib, curl or dnspython against each.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from tests.support import REPO

NAMESPACE_PRELUDE = """\
set -e
ip link set lo up
mount --bind "$MOCKEX_RESOLV" /etc/resolv.conf
"""
EXCHANGELIB_CLIENT = os.path.join(REPO, "tests", "support", "exchangelib_batch.py")
MARK = "@@check "
# Waits until mockex has written endpoints.json (complete: it parses) and prints the CA file's path.
WAIT_FOR_CA = """import json, sys, time
for _ in range(400):
    try:
        print(json.load(open(sys.argv[1]))["ca_file"])
        break
    except (OSError, ValueError):
        time.sleep(0.05)
"""


def available() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and shutil.which("ip") is not None


needs_netns = pytest.mark.skipif(not available(), reason="needs root, unshare and ip for a private network namespace")


def run_in_namespace(script: str, workdir: str, timeout: float = 120,
                     env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    resolv = os.path.join(workdir, "resolv.conf")
    with open(resolv, "w") as handle:
        handle.write("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
    full_env = dict(os.environ, MOCKEX_RESOLV=resolv, **(env or {}))
    return subprocess.run(["unshare", "--net", "--mount", "bash", "-c", NAMESPACE_PRELUDE + script],
                          cwd=workdir, env=full_env, capture_output=True, text=True, timeout=timeout)


@dataclass
class Check:
    label: str
    command: str       # shell; $CA is the served CA file, $PY this Python


def exchangelib(label: str, *users: Tuple[str, str]) -> Check:
    """exchangelib's own discover() for each (email, password), in one process (exchangelib_batch.py beside this
    module). Read the outcome with ``by_user``."""
    pairs = " ".join(shlex.quote(part) for user in users for part in user)
    return Check(label, f'"$PY" {shlex.quote(EXCHANGELIB_CLIENT)} 127.0.0.1 53 {pairs}')


def by_user(output: str) -> Dict[str, dict]:
    """exchangelib_batch's verdicts by e-mail address: {"ews_url": ..., "version": ...} or {"error": ...}."""
    results = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert results, output
    return {result.pop("email"): result for result in results}


@dataclass
class Outcome:
    output: str          # the check's stdout and stderr
    events: List[dict]   # the transcript of the server it ran against

    def kind(self, kind: str) -> List[dict]:
        return [event for event in self.events if event["kind"] == kind]


def run_in_netns(workdir: str, plan: Sequence[Tuple[Sequence[str], Sequence[Check]]],
                 timeout: float = 240) -> Dict[str, Outcome]:
    """For each (serve arguments, checks): start mockex on 127.0.0.1:443/80/53, run the checks, stop it.
    Returns each check's output and its server's transcript by label; a server that does not stop with exit 0
    fails the run. The servers share one state directory, so the keys and certificates are made once."""
    lines = [f'PY={shlex.quote(sys.executable)}']
    state = "$PWD/state"
    for index, (serve_args, checks) in enumerate(plan):
        args = " ".join(shlex.quote(a) for a in serve_args)
        lines += [
            f'rm -f "{state}/endpoints.json"',
            f'"$PY" -m harness serve --state-dir "{state}" --listen 127.0.0.1 --https-port 443 --http-port 80 '
            f'--dns-port 53 --quiet {args} > serve{index}.out 2>&1 &',
            "SERVER=$!",
            f'export CA=$("$PY" -c {shlex.quote(WAIT_FOR_CA)} "{state}/endpoints.json")',
        ]
        for check in checks:
            lines += [f"echo {shlex.quote(MARK + check.label)}",
                      f"REQUESTS_CA_BUNDLE=\"$CA\" {check.command} 2>&1 || echo \"exit=$?\""]
        lines += ['kill -TERM $SERVER; wait $SERVER; echo "@@serve-exit $?"',
                  f'mv "{state}/transcript.jsonl" "$PWD/transcript{index}.jsonl"']
    result = run_in_namespace("\n".join(lines) + "\n", workdir, timeout=timeout, env={"PYTHONPATH": REPO})
    outputs: Dict[str, str] = {}
    label = None
    for line in result.stdout.splitlines():
        if line.startswith(MARK):
            label = line[len(MARK):]
            outputs[label] = ""
        elif line.startswith("@@serve-exit"):
            assert line.split()[1] == "0", f"mockex did not stop cleanly: {result.stdout}\n{result.stderr}"
            label = None
        elif label is not None:
            outputs[label] += line + "\n"
    missing = [c.label for _, checks in plan for c in checks if c.label not in outputs]
    assert not missing, f"checks {missing} did not run: {result.stdout}\n{result.stderr}"
    outcomes = {}
    for index, (_, checks) in enumerate(plan):
        with open(os.path.join(workdir, f"transcript{index}.jsonl"), encoding="utf-8") as handle:
            events = [json.loads(line) for line in handle if line.strip()]
        outcomes.update({check.label: Outcome(outputs[check.label], events) for check in checks})
    return outcomes
