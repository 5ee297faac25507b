"""Real clients for the fault tests: curl against a served host, requests with the org's names pinned to the
server, and a batch runner that starts scenarios one after another inside one private network namespace (the
server on :443/:80/:53, the system resolver pointed at its DNS) and runs exchangelib, curl or dnspython there."""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from tests import netns
from tests.conftest import Served, start_server

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXCHANGELIB_CLIENT = os.path.join(REPO, "tests", "clients", "exchangelib_batch.py")
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


@contextlib.contextmanager
def servers_started(*serve_args: Sequence[str]) -> Iterator[List[Served]]:
    """Start several mockex servers in parallel (``start_server(*args)`` each); all must stop with exit 0.

    The starting threads live until the servers stopped: a server dies with the thread that started it
    (conftest's PR_SET_PDEATHSIG is per thread)."""
    pool = ThreadPoolExecutor(len(serve_args))
    try:
        started = list(pool.map(lambda args: start_server(*args), serve_args))
        try:
            yield started
        finally:
            assert [served.stop() for served in started] == [0] * len(started)
    finally:
        pool.shutdown()


@dataclass
class CurlResult:
    status: int
    body: str
    headers: List[Tuple[str, str]]
    exit_code: int
    stderr: str

    def header(self, name: str) -> List[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def curl(served, host: str, path: str, *args: str, data: Optional[str] = None, scheme: str = "https",
         max_time: float = 20) -> CurlResult:
    """One curl request to ``scheme://host:port/path`` with ``host`` pinned to the server (--resolve)."""
    listener = served.endpoints["https" if scheme == "https" else "http"]
    netloc = f"{host}:{listener['port']}"
    cmd = ["curl", "-sS", "--max-time", str(max_time), "--cacert", served.ca_file, "--resolve",
           f"{netloc}:{listener['host']}", "-D", "/dev/stderr", "-o", "-", "-w", "\n%{http_code}", *args]
    if data is not None:
        cmd += ["-H", "Content-Type: text/xml", "--data-binary", data]
    cmd.append(f"{scheme}://{netloc}{path}")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=max_time + 10)
    body, _, status = result.stdout.rpartition("\n")
    return CurlResult(int(status or 0), body, last_headers(result.stderr), result.returncode, result.stderr)


def last_headers(dump: str) -> List[Tuple[str, str]]:
    """The header lines of the last response in a `curl -D` dump (earlier ones are 401 legs or redirects)."""
    headers: List[Tuple[str, str]] = []
    for line in dump.splitlines():
        if line.startswith("HTTP/"):
            headers = []
        elif ":" in line and not line.startswith("curl:"):
            name, value = line.split(":", 1)
            headers.append((name.strip(), value.strip()))
    return headers


def pin_names(monkeypatch, served) -> None:
    """Make requests/urllib3 connect every name to the server (certificate checks still use the name)."""
    import urllib3.util.connection as connection
    original = connection.create_connection

    def create_connection(address, *args, **kwargs):
        return original((served.host, address[1]), *args, **kwargs)

    monkeypatch.setattr(connection, "create_connection", create_connection)


@dataclass
class Check:
    label: str
    command: str       # shell; $CA is the served CA file, $PY this Python


def exchangelib(label: str, *users: Tuple[str, str]) -> Check:
    """exchangelib's own discover() for each (email, password), in one process (tests/clients/exchangelib_batch.py).
    Read the outcome with ``by_user``."""
    pairs = " ".join(shlex.quote(part) for user in users for part in user)
    return Check(label, f'"$PY" {shlex.quote(EXCHANGELIB_CLIENT)} 127.0.0.1 53 {pairs}')


def by_user(output: str) -> Dict[str, dict]:
    """exchangelib_batch's verdicts by e-mail address: {"ews_url": ...} or {"error": ...}."""
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
    result = netns.run_in_namespace("\n".join(lines) + "\n", workdir, timeout=timeout,
                                    env={"PYTHONPATH": REPO})
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


needs_netns = pytest.mark.skipif(not netns.available(),
                                 reason="needs root, unshare and ip for a private network namespace")
