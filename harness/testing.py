"""Run a real `mockex serve` from a test suite: start it on loopback, read its endpoints and transcript, stop it.

Used by mockex's own tests and by the pytest plugin (`harness.pytest_plugin`) that users' suites get:

    served = start_server(tmp_dir, "--scenario", "tls-expired")
    served.endpoints["https"]["port"]; served.ca_file; served.user("alice")["password"]
    served.wait_for(lambda e: e["kind"] == "auth" and e["result"] == "failure")
    served.stop()   # SIGTERM, returns the exit status (0 on a clean stop)
"""
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

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
                return self.process.wait(timeout=120)   # a bound on a hung server, not a deadline
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
                 dns_port: int = 0, timeout: float = 180.0, env: Optional[dict] = None) -> Served:
    """Start `mockex serve` and wait for its endpoints.json. ``timeout`` only bounds a server that never comes up:
    a loaded machine must not turn a slow start into a failure."""
    endpoints_path = os.path.join(state_dir, "endpoints.json")
    if os.path.exists(endpoints_path):
        os.unlink(endpoints_path)
    cmd = [sys.executable, "-m", "harness", "serve", "--state-dir", state_dir, "--listen", listen,
           "--https-port", str(https_port), "--http-port", str(http_port), "--dns-port", str(dns_port), *extra]
    log = open(os.path.join(state_dir, "serve.log"), "wb") if os.path.isdir(state_dir) else subprocess.DEVNULL
    process = subprocess.Popen(cmd, cwd=CHECKOUT, stdout=log, stderr=subprocess.STDOUT, env=env)
    _STARTED.append(process)
    deadline = time.monotonic() + timeout
    while not os.path.exists(endpoints_path):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            output = open(os.path.join(state_dir, "serve.log")).read() if log is not subprocess.DEVNULL else ""
            raise RuntimeError(f"mockex serve did not start: {output[-3000:]}")
        time.sleep(0.05)
    with open(endpoints_path, encoding="utf-8") as handle:
        return Served(process, state_dir, json.load(handle))
