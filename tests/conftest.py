"""Shared fixtures: a real `mockex serve` process on loopback, and helpers to read its transcript."""
from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import List, Optional

import pytest
from hypothesis import settings

# CI replays the same examples every run (no example database on a clean clone): a red run is reproducible, and
# `HYPOTHESIS_PROFILE=explore pytest ...` searches afresh.
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Served:
    process: subprocess.Popen
    state_dir: str
    endpoints: dict

    @property
    def https_port(self) -> int:
        return self.endpoints["https"]["port"]

    @property
    def host(self) -> str:
        return self.endpoints["https"]["host"]

    @property
    def ca_file(self) -> str:
        return self.endpoints["ca_file"]

    def user(self, name: str) -> dict:
        return next(u for u in self.endpoints["users"] if u["username"] == name)

    def transcript(self, *kinds: str) -> List[dict]:
        with open(self.endpoints["transcript"], encoding="utf-8") as handle:
            events = [json.loads(line) for line in handle if line.strip()]
        return [e for e in events if not kinds or e["kind"] in kinds]

    def wait_for(self, predicate, timeout: float = 5.0) -> List[dict]:
        """Transcript events matching predicate, waiting briefly: events are flushed as they happen."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.transcript() if predicate(e)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait()
        return self.process.returncode


_STARTED: List[subprocess.Popen] = []


@atexit.register
def _stop_leftover_servers() -> None:
    """A failing test may not reach its `stop()`: never leave a server holding a port after the run."""
    for process in _STARTED:
        if process.poll() is None:
            process.kill()


def start_server(state_dir: str, *extra: str, listen: str = "127.0.0.1", https_port: int = 0, http_port: int = 0,
                 dns_port: int = 0, timeout: float = 30.0, env: Optional[dict] = None) -> Served:
    endpoints_path = os.path.join(state_dir, "endpoints.json")
    if os.path.exists(endpoints_path):
        os.unlink(endpoints_path)
    cmd = [sys.executable, "-m", "harness", "serve", "--state-dir", state_dir, "--listen", listen,
           "--https-port", str(https_port), "--http-port", str(http_port), "--dns-port", str(dns_port), *extra]
    log = open(os.path.join(state_dir, "serve.log"), "wb") if os.path.isdir(state_dir) else subprocess.DEVNULL
    process = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    _STARTED.append(process)
    deadline = time.monotonic() + timeout
    while not os.path.exists(endpoints_path):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            output = open(os.path.join(state_dir, "serve.log")).read() if log is not subprocess.DEVNULL else ""
            raise RuntimeError(f"mockex serve did not start: {output[-3000:]}")
        time.sleep(0.05)
    time.sleep(0.05)  # endpoints.json is written in one go, but give the writer a moment to close it
    with open(endpoints_path, encoding="utf-8") as handle:
        return Served(process, state_dir, json.load(handle))


def worker_address(base: int = 2) -> str:
    """A loopback address of this pytest-xdist worker's own (127.0.0.2 for gw0 or no xdist, 127.0.0.3 for gw1, ...),
    so parallel workers can each hold :443."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return f"127.0.0.{base + int(worker[2:] or 0)}"


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Served:
    """One mockex for the session, ephemeral ports on 127.0.0.1."""
    state = str(tmp_path_factory.mktemp("mockex-state"))
    served = start_server(state)
    yield served
    served.stop()


@pytest.fixture(scope="session")
def server443(tmp_path_factory) -> Served:
    """mockex on 127.0.0.2:443 for clients hard-wired to :443 (impacket's RPC proxy transport). Needs root."""
    if os.geteuid() != 0:
        pytest.skip("binding :443 needs root (or run the suite inside `unshare -rn`)")
    state = str(tmp_path_factory.mktemp("mockex-443"))
    served = start_server(state, listen=worker_address(), https_port=443)
    yield served
    served.stop()
