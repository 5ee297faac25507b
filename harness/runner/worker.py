"""A runner worker: one process that runs scenarios one after another, each against a fresh mock.

The process (its imports, its reactor thread, the org, the CA keys) is reused; the mock is not: every scenario gets
a new MockExchange (new fault set, steps, site, RPC proxy, transcript, listeners on new ephemeral ports), stopped
before the next one starts, so no state crosses from one scenario to the next while the ~1 s of a process start is
paid once per worker. The client runs in its own session and is killed with everything it started on timeout or
interruption. Under `mockex run --sandbox` the worker lives in user, network and mount namespaces of its own, so
its mocks serve the real ports 443/80/53 and the org's names resolve through them (as in `mockex sandbox`).

Jobs arrive as JSON lines on stdin, results leave as JSON lines on the stdout the process started with (anything
else printing to stdout goes to stderr instead). `python -m harness.runner.worker PARENT_PID [--sandbox]`.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import zlib
from typing import Any, Callable, Dict, List, Optional

from harness import conduct
from harness.runner.client import PROBE, ClientProcess, ClientRun, environment, fill, values
from harness.runner.expect import ClientExpectation, client_expectation, judge
from harness.scenario import Scenario, load_scenario
from harness.transcript import Transcript, credential_violations, read_events

STOP_WAIT = 10.0            # seconds a mock gets to close its listeners
EXCERPT_HEAD, EXCERPT_TAIL = 15, 45   # transcript events quoted in a report: the first and the last ones
SKIPPED_FIELDS = {"seq", "time", "kind", "request_headers", "response_headers"}


class Worker:
    def __init__(self) -> None:
        from twisted.internet import reactor
        self.reactor = reactor
        self.thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True,
                                       name="reactor")
        self.thread.start()
        self.client = ClientProcess()
        self.server: Any = None
        self._orgs: Dict[str, Any] = {}

    def on_reactor(self, function: Callable, *args: Any, timeout: Optional[float] = None) -> Any:
        """Call ``function`` on the reactor thread and wait for its result (a Deferred's, if it returns one)."""
        from twisted.internet import defer
        done = threading.Event()
        box: Dict[str, Any] = {}

        def call() -> None:
            def keep(outcome: Any) -> None:
                box["outcome"] = outcome
                done.set()
            defer.maybeDeferred(function, *args).addBoth(keep)

        self.reactor.callFromThread(call)
        if not done.wait(timeout):
            raise TimeoutError(f"{getattr(function, '__name__', function)} did not finish in {timeout} s")
        outcome = box["outcome"]
        from twisted.python.failure import Failure
        if isinstance(outcome, Failure):
            outcome.raiseException()
        return outcome

    def org(self, path: str) -> Any:
        if path not in self._orgs:
            from harness.org import load_org
            self._orgs[path] = load_org(path)
        return self._orgs[path]

    def run(self, job: Dict[str, Any]) -> Dict[str, Any]:
        started = time.monotonic()
        scenario = load_scenario(job["source"])
        expectation = client_expectation(scenario)
        result: Dict[str, Any] = {"index": job["index"], "name": scenario.name, "source": scenario.source,
                                  "layers": scenario.layers, "summary": scenario.summary}
        if expectation is None:
            return {**result, "outcome": "skipped", "seconds": 0.0, "problems": [],
                    "expected": "nothing (the scenario has no expect.analyzer or expect.client)", "got": "not run"}
        result["expected"] = expectation.describe()
        result["expectation"] = expectation.to_json()
        try:
            result.update(self._run(job, scenario, expectation))
        except Exception as exc:   # noqa: BLE001 -- one broken scenario must not end the run
            result.update(outcome="error", problems=[f"{type(exc).__name__}: {exc}"], got="the run broke",
                          traceback=traceback.format_exc()[-4000:])
        finally:
            self.stop_server()
        result["seconds"] = round(time.monotonic() - started, 3)
        return result

    def _run(self, job: Dict[str, Any], scenario: Scenario, expectation: ClientExpectation) -> Dict[str, Any]:
        from harness.services.server import MockExchange, ServeOptions
        state_dir = job["state_dir"]
        os.makedirs(state_dir, exist_ok=True)
        if job.get("pki_dir") and not os.path.exists(os.path.join(state_dir, "pki")):
            os.symlink(job["pki_dir"], os.path.join(state_dir, "pki"))  # the CA keys are made once per run
        seed = job.get("seed")
        if seed is None:
            seed = scenario.seed if scenario.seed is not None else zlib.crc32(scenario.name.encode()) & 0x7FFFFFFF
        transcript = Transcript(os.path.join(state_dir, "transcript.jsonl"))
        self.server = MockExchange(self.org(job["org"]), ServeOptions(
            state_dir=state_dir, listen=job["listen"], **ports(job.get("sandbox", False)), seed=seed),
            transcript=transcript, scenarios=[scenario])
        endpoints = self.on_reactor(self.server.start, self.reactor, timeout=120.0)
        endpoints_path = os.path.join(state_dir, "endpoints.json")
        who = expectation.analyzer.get("user")
        user = next((u for u in endpoints["users"] if who is None or u["email"].lower() == who.lower()),
                    endpoints["users"][0])
        found = values(endpoints, user, scenario.name, state_dir, endpoints_path)
        timeout = expectation.timeout or job["timeout"]
        if job["client"] == PROBE:
            outcome = self._probe(endpoints, expectation, timeout)
        else:
            argv = fill(job["client"], found)
            ca_env = job["export_ca"] or job.get("sandbox", False)   # in the sandbox as in `mockex sandbox`
            run = self.client.run(argv, environment(found, ca_env), timeout, cwd=job.get("cwd"))
            outcome = {"run": run}
        self.stop_server()
        events = read_events(transcript.path) if transcript.path else []
        transcript.close()
        violations = credential_violations(events, endpoints["hostnames"], expectation.credentials)
        org = conduct.namespace(endpoints["domain"], endpoints["hostnames"])
        conduct_found = conduct.judge(events, org, expectation.conduct)
        run = outcome["run"]
        if run.start_error:   # nothing ran: not a clean failure of the client, a broken run
            raise RuntimeError(f"the client could not be started: {run.start_error}")
        if "analyzer_problems" in outcome:   # the probe is judged by its verdict, not only by its exit status
            problems = outcome["analyzer_problems"] + judge(
                ClientExpectation(exit="any", stdout=expectation.stdout, stderr=expectation.stderr,
                                  stdout_not=expectation.stdout_not, stderr_not=expectation.stderr_not,
                                  credentials=expectation.credentials, conduct=expectation.conduct), run, violations,
                conduct_found)
        else:
            problems = judge(expectation, run, violations, conduct_found)
        secrets = [u["password"] for u in endpoints["users"]]
        shown_command = job["client_text"] if job["client"] != PROBE else "probe (built in)"
        return {
            "outcome": "failed" if problems else "passed",
            "problems": [mask(p, secrets) for p in problems],
            "got": mask(outcome.get("got") or f"it {run.describe()}", secrets),
            "seed": seed,
            "client": {"command": shown_command, "user": user["email"], "exit_code": run.exit_code,
                       "signal": run.signal, "timed_out": run.timed_out, "seconds": round(run.seconds, 3),
                       "stdout": mask(run.stdout, secrets), "stderr": mask(run.stderr, secrets)},
            **({"probe": outcome["probe"]} if "probe" in outcome else {}),
            "violations": len(violations),
            "conduct": [v.to_json() for v in conduct_found],
            "transcript": transcript_path(state_dir) if job.get("keep") else None,   # a temporary one is gone
            "transcript_excerpt": [mask(line, secrets) for line in excerpt(events)],
        }

    def _probe(self, endpoints: Dict[str, Any], expectation: ClientExpectation, timeout: float) -> Dict[str, Any]:
        """The built-in analyzer as the client, in this process: judged by ``expect.analyzer`` when the scenario
        has one (the exact step, reason and host), else by its exit status like any client."""
        from harness.probe.expectation import describe_verdict, mismatches, options_for_expectation
        from harness.probe.report import render_text
        from harness.probe.runner import probe
        started = time.monotonic()
        report = probe(options_for_expectation(endpoints, expectation.analyzer, total_timeout=timeout))
        text = render_text(report, verbose=True)
        run = ClientRun(["probe"], report.exit_code, None, False, text, "", time.monotonic() - started)
        outcome: Dict[str, Any] = {"run": run, "probe": report.verdict.to_json(),
                                   "got": f"the probe {describe_verdict(report.verdict)}"
                                          + (f": {report.verdict.message}" if report.verdict.message else "")}
        if expectation.analyzer:
            outcome["analyzer_problems"] = mismatches(expectation.analyzer, report.verdict)
        return outcome

    def stop_server(self) -> None:
        server, self.server = self.server, None
        if server is not None and getattr(server, "listeners", None) is not None:
            try:
                self.on_reactor(server.stop, timeout=STOP_WAIT)
            except Exception:   # noqa: BLE001 -- a start that failed half-way has less to stop
                pass

    def close(self) -> None:
        self.client.kill(signal.SIGKILL)
        self.stop_server()
        self.reactor.callFromThread(self.reactor.stop)
        self.thread.join(STOP_WAIT)


def ports(sandbox: bool) -> Dict[str, int]:
    """The mock's ports: the real ones in a worker's own network namespace (`mockex run --sandbox`, where the
    namespace's resolv.conf names 127.0.0.1:53), else ephemeral ones the client is told."""
    if sandbox:
        return {"https_port": 443, "http_port": 80, "dns_port": 53}
    return {"https_port": 0, "http_port": 0, "dns_port": 0}


def transcript_path(state_dir: str) -> str:
    return os.path.join(state_dir, "transcript.jsonl")


def mask(text: str, secrets: List[str]) -> str:
    """``text`` with every password of the org replaced (a client may print what it was given)."""
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "********")
    return text


def excerpt(events: List[dict]) -> List[str]:
    """One line per event, the first and last ones of a long transcript."""
    lines = [render_event(event) for event in events]
    if len(lines) > EXCERPT_HEAD + EXCERPT_TAIL:
        cut = len(lines) - EXCERPT_HEAD - EXCERPT_TAIL
        lines = lines[:EXCERPT_HEAD] + [f"... {cut} events left out ..."] + lines[-EXCERPT_TAIL:]
    return lines


def render_event(event: dict) -> str:
    fields = " ".join(f"{key}={_short(value)}" for key, value in event.items()
                      if key not in SKIPPED_FIELDS and value not in (None, "", [], {}))
    return f"#{event.get('seq')} {event.get('kind')} {fields}"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 160 else text[:157] + "..."


def _die_with_parent(parent: int) -> None:
    """SIGTERM when the runner goes away, however it goes (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if parent and os.getppid() != parent:
        sys.exit(1)


def main(argv: List[str]) -> int:
    """``PARENT_PID [--sandbox]``; with --sandbox the process is already in fresh namespaces (execute.Run started
    it under unshare) and shapes them before anything else: loopback up, the resolver files naming 127.0.0.1."""
    _die_with_parent(int(argv[0]) if argv else 0)
    if "--sandbox" in argv[1:]:
        from harness.sandbox import SETUP_FAILED, shape_namespace
        resolver_files = tempfile.mkdtemp(prefix="mockex-run-sandbox-")   # read by every client: lives as long
        atexit.register(shutil.rmtree, resolver_files, True)
        try:
            shape_namespace(resolver_files)
        except OSError as exc:
            print(f"mockex run: cannot set up the sandbox's namespace: {exc}", file=sys.stderr, flush=True)
            return SETUP_FAILED
    results = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)   # stray prints go to the log, never into the results

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signum)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    worker = Worker()
    try:
        for line in sys.stdin:
            if line.strip():
                results.write(json.dumps(worker.run(json.loads(line))) + "\n")
                results.flush()
    except KeyboardInterrupt:
        return 130
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
