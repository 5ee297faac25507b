"""Run a real `mockex serve` from a test suite: start it on loopback, read its endpoints and transcript, stop it.

Used by mockex's own tests and by the pytest plugin (`harness.pytest_plugin`) that users' suites get:

    served = start_server(tmp_dir, "--scenario", "tls-expired")
    served.endpoints["https"]["port"]; served.ca_file; served.user("alice")["password"]
    served.wait_for(lambda e: e["kind"] == "auth" and e["result"] == "failure")
    view = served.fresh()   # the same process for the next test: scenario state reset, transcript from here on
    served.stop()   # SIGTERM, returns the exit status (0 on a clean stop)
"""
from __future__ import annotations

import atexit
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import List, Optional

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# How often a waiting test looks again: a stat or a read of a small file, so far below any start-up or reset time.
POLL_SECONDS = 0.005
FRESH_POLL_SECONDS = 0.0002
RESET_MARK = b'"kind": "reset"'   # as Transcript writes it (json.dumps with the default separators)


@dataclass
class Served:
    process: subprocess.Popen
    state_dir: str
    endpoints: dict
    transcript_start: int = 0      # byte offset in transcript.jsonl where this view's events begin

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
        with open(self.endpoints["transcript"], "rb") as handle:
            handle.seek(self.transcript_start)
            events = [json.loads(line) for line in handle if line.strip()]
        return [e for e in events if not kinds or e["kind"] in kinds]

    def fresh(self, timeout: float = 30.0) -> "Served":
        """This server as a new test wants it, without a new process: its scenario state back at the start (the
        ``kill -HUP`` reset: the initial faults, every step re-armed) and a view whose ``transcript()`` holds only
        what happens after that reset. A connection a client kept open from before stays open, with its logon.
        ``timeout`` only bounds a server that never answers the signal."""
        path = self.endpoints["transcript"]
        start = os.path.getsize(path)
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        with open(path, "rb") as handle:
            handle.seek(start)
            pending, offset = b"", start   # offset: where `pending` begins in the file
            while True:
                pending += handle.read()
                lines = pending.split(b"\n")
                for line in lines[:-1]:   # whole lines only; the last piece may still be written
                    offset += len(line) + 1
                    if RESET_MARK in line and json.loads(line)["kind"] == "reset":
                        return dataclasses.replace(self, transcript_start=offset)
                pending = lines[-1]
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mockex serve did not reset (exit status {self.process.poll()})")
                time.sleep(FRESH_POLL_SECONDS)

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
                 dns_port: int = 0, timeout: float = 180.0, env: Optional[dict] = None,
                 pki_from: Optional[str] = None) -> Served:
    """Start `mockex serve` and wait for its endpoints.json. ``timeout`` only bounds a server that never comes up:
    a loaded machine must not turn a slow start into a failure. ``pki_from``: another state dir whose CA and keys
    this server starts with (copied, modes kept), so it generates no key and shares that CA."""
    endpoints_path = os.path.join(state_dir, "endpoints.json")
    if os.path.exists(endpoints_path):
        os.unlink(endpoints_path)
    if pki_from is not None:
        copy_pki(pki_from, state_dir)
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
        time.sleep(POLL_SECONDS)
    with open(endpoints_path, encoding="utf-8") as handle:
        return Served(process, state_dir, json.load(handle))


def copy_pki(source_state_dir: str, state_dir: str) -> None:
    """The CA certificates and keys of one state dir into another's pki/ (issued leaves stay behind: a server
    issues its own), each with its mode (keys 0600)."""
    source, target = os.path.join(source_state_dir, "pki"), os.path.join(state_dir, "pki")
    os.makedirs(target, exist_ok=True)
    for name in os.listdir(source):
        path = os.path.join(source, name)
        if not name.endswith(".pem") or not os.path.isfile(path):
            continue
        mode = os.stat(path).st_mode & 0o777
        with open(path, "rb") as source_file:
            data = source_file.read()
        # created with its final mode: a key is never readable by others, not even for a moment
        fd = os.open(os.path.join(target, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as target_file:
            target_file.write(data)
