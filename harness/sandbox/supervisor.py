"""The inside of the sandbox: one single-threaded process, already in its own user, network and mount namespaces,
that shapes them, starts the mock, runs the command and outlives neither.

Signals are taken synchronously (blocked, then sigwaitinfo), so a child's exit and a Ctrl-C are handled in one loop
with no handler races. A signal is forwarded to the command unless the kernel sent it (a terminal's Ctrl-C, Ctrl-\\
or hangup): the command is in our process group and got that one too. The mock runs in a process group of its own,
so a Ctrl-C reaches it only through us, after the command has ended. Both children get SIGTERM from the kernel if
this process dies, as this process does if its own parent dies.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, List, Optional

from harness.sandbox import NOT_EXECUTABLE, NOT_FOUND, PACKAGE_PARENT, SETUP_FAILED
from harness.sandbox.kernel import die_with_parent
from harness.sandbox.namespace import CA_VARIABLES, shape_namespace

FORWARDED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}
WATCHED = FORWARDED | {signal.SIGCHLD}
SI_KERNEL = 0x80   # si_code of a signal the kernel sends of its own (a terminal's); kill(2) and parent death: SI_USER
PORTS = {"https": 443, "http": 80, "dns": 53, "epm": 135}
MOCK_START_SECONDS = 300.0    # bounds a mock that never comes up (a loaded machine may take long; not a deadline)
MOCK_STOP_SECONDS = 60.0      # then SIGKILL
POLL_SECONDS = 0.05
SERVE_BOOT = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from harness.cli import main; "
              "sys.exit(main(sys.argv[1:]))")


def main(config_json: str) -> int:
    config = json.loads(config_json)
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    die_with_parent(signal.SIGTERM)
    if os.getppid() != config["parent"]:   # it died before the line above could take effect: nobody waits for us
        return SETUP_FAILED
    work = tempfile.mkdtemp(prefix="mockex-sandbox-")
    try:
        return Sandbox(config, work).run()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def say(text: str) -> None:
    print(f"mockex sandbox: {text}", file=sys.stderr, flush=True)


def exit_status(returncode: int) -> int:
    """A shell's convention: a command ended by signal N exits 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def child_setup(own_group: bool) -> Callable[[], None]:
    """Run in each child between fork and exec (we are single threaded, so preexec_fn is safe): the signals we
    block are the child's to take, and it dies with us."""
    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        die_with_parent(signal.SIGTERM)
        if own_group:
            os.setpgid(0, 0)
    return setup


class Sandbox:
    def __init__(self, config: dict, work: str):
        self.command: List[str] = config["command"]
        self.serve_args: List[str] = config["serve_args"]
        self.quiet: bool = config["quiet"]
        self.state_dir = os.path.abspath(config["state_dir"] or os.path.join(work, "state"))
        self.kept = bool(config["state_dir"])
        self.work = work
        self.log_path = os.path.join(self.state_dir, "serve.log")
        self.mock: Optional[subprocess.Popen] = None

    def run(self) -> int:
        try:
            shape_namespace(self.work)
        except OSError as exc:
            say(f"cannot set up the namespace: {exc}")
            return SETUP_FAILED
        try:
            endpoints = self.start_mock()
            if isinstance(endpoints, int):
                return endpoints
            if not self.quiet:
                say(self.banner(endpoints))
            return self.run_command(endpoints)
        finally:
            self.stop_mock()

    def start_mock(self):
        """The endpoints once the mock serves, or the exit status to give up with."""
        os.makedirs(self.state_dir, exist_ok=True)
        endpoints_path = os.path.join(self.state_dir, "endpoints.json")
        if os.path.exists(endpoints_path):   # a previous run's must not pass for this one's
            os.remove(endpoints_path)
        argv = [sys.executable, "-c", SERVE_BOOT, PACKAGE_PARENT, "serve", "--state-dir", self.state_dir,
                "--listen", "127.0.0.1", "--https-port", str(PORTS["https"]), "--http-port", str(PORTS["http"]),
                "--dns-port", str(PORTS["dns"]), "--epm-port", str(PORTS["epm"]), "--quiet", *self.serve_args]
        with open(self.log_path, "wb") as log:
            self.mock = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=child_setup(own_group=True))
        deadline = time.monotonic() + MOCK_START_SECONDS
        while not os.path.exists(endpoints_path):
            info = signal.sigtimedwait(WATCHED, POLL_SECONDS)
            if info is not None and info.si_signo != signal.SIGCHLD:
                return 128 + info.si_signo          # stopped before the command ever ran
            if self.mock.poll() is not None:
                say(f"the mock did not start (exit status {self.mock.returncode}):\n{self.log_tail()}")
                return SETUP_FAILED
            if time.monotonic() > deadline:
                say(f"the mock did not start within {MOCK_START_SECONDS:.0f} s:\n{self.log_tail()}")
                return SETUP_FAILED
        with open(endpoints_path, encoding="utf-8") as handle:
            return json.load(handle)

    def run_command(self, endpoints: dict) -> int:
        env = dict(os.environ, MOCKEX_ENDPOINTS=os.path.join(self.state_dir, "endpoints.json"))
        env.update({name: endpoints["ca_file"] for name in CA_VARIABLES})
        try:
            command = subprocess.Popen(self.command, env=env, preexec_fn=child_setup(own_group=False))
        except FileNotFoundError:
            say(f"{self.command[0]}: command not found")
            return NOT_FOUND
        except OSError as exc:
            say(f"{self.command[0]}: {exc.strerror or exc}")
            return NOT_EXECUTABLE
        mock_gone_said = False
        while True:
            info = signal.sigwaitinfo(WATCHED)
            if info.si_signo == signal.SIGCHLD:
                if command.poll() is not None:
                    return exit_status(command.returncode)
                if self.mock is not None and self.mock.poll() is not None and not mock_gone_said:
                    say(f"the mock exited while the command runs (exit status {self.mock.returncode}):\n"
                        f"{self.log_tail()}")
                    mock_gone_said = True
            elif info.si_code != SI_KERNEL:
                command.send_signal(info.si_signo)

    def stop_mock(self) -> None:
        mock, self.mock = self.mock, None
        if mock is None or mock.poll() is not None:
            return
        mock.send_signal(signal.SIGTERM)
        try:
            mock.wait(timeout=MOCK_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            mock.kill()
            mock.wait()

    def banner(self, endpoints: dict) -> str:
        scenarios = "".join(f", scenario {name}" for name in endpoints["scenarios"])
        kept = "" if self.kept else " (removed at exit)"
        return (f"{endpoints['domain']} served on 127.0.0.1 (HTTPS 443, HTTP 80, DNS 53){scenarios}; "
                f"CA {endpoints['ca_file']} in {', '.join(CA_VARIABLES)}; state {self.state_dir}{kept}")

    def log_tail(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()[-3000:]
        except OSError:
            return ""
