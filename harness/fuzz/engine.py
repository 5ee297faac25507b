"""The fuzz loop: Hypothesis draws server misbehaviours, the mock serves each (one server, no restart), the client
runs, the oracles judge, Hypothesis shrinks a failure to the smallest misbehaviour, and each distinct finding is
saved as a scenario file that `mockex serve --scenario` and `mockex run` replay.

Distinct findings: a Hypothesis run stops at its first (shrunk) failure, so the engine runs again with the budget
left, counting an example whose verdict has a signature already found as passing. Each round has its own seed
(seed + round), so a run replays exactly.
"""
from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import yaml
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from harness.fuzz.oracles import (
    CRASH_PATTERNS,
    Verdict,
    backoff_verdict,
    conduct_verdict,
    crash_verdict,
    first_verdict,
    hang_verdict,
)
from harness.fuzz.server import FuzzServer, scenario_document
from harness.fuzz.strategies import Example, examples
from harness.runner.client import ClientProcess, ClientRun, environment, fill, parse_command, values
from harness.runner.worker import mask


@dataclass
class Served:
    """What an in-process client is told about the mock serving this example (the runner's placeholders)."""
    values: Dict[str, Any]
    endpoints: Dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def user(self, name: str) -> Dict[str, Any]:
        """A user of the org by logon name or address (email, password, username, domain, upn)."""
        return next(u for u in self.endpoints["users"] if name.lower() in (u["username"].lower(), u["email"].lower()))


ClientCallable = Callable[[Served], Any]
Predicate = Callable[[ClientRun, List[dict]], Optional[str]]   # a complaint, or None


@dataclass
class FuzzOptions:
    layers: Sequence[str] = ("autodiscover",)
    max_examples: int = 100
    seed: Optional[int] = None           # None: Hypothesis' derandomized run (the same every time)
    timeout: float = 10.0                # seconds per client run: past it, a hang
    save_failures: Optional[str] = None  # directory for the scenario files of findings
    database: Optional[str] = None       # Hypothesis example database directory (shared between runs)
    max_faults: int = 3                  # faults one example combines at most
    max_findings: int = 5
    crash_patterns: Sequence[str] = CRASH_PATTERNS
    expected_errors: Tuple[type, ...] = ()   # in-process clients: exceptions that are clean failures
    predicate: Optional[Predicate] = None
    org: Optional[str] = None
    listen: str = "127.0.0.1"
    https_port: int = 0                  # 0: an ephemeral port (443 for clients that know no other, exchanger.py)
    export_ca: bool = False
    user: Optional[str] = None           # the user whose placeholders the client gets (default: the first)


@dataclass
class Finding:
    verdict: Verdict
    faults: Example
    seed: Optional[int]
    round: int
    stderr: str = ""
    path: Optional[str] = None
    flaky: bool = False
    layers: Tuple[str, ...] = ()         # of the run that found it (its file name and its JUnit class)

    def describe(self) -> str:
        shown = ", ".join(f"{f['fault']}{f['params'] or ''}" for f in self.faults)
        return f"[{self.verdict.oracle}] {self.verdict.detail}; served: {shown}"


@dataclass
class FuzzReport:
    findings: List[Finding] = field(default_factory=list)
    examples: int = 0
    seconds: float = 0.0
    runs: List[Dict[str, Any]] = field(default_factory=list)   # with -j/--shard: one entry per (layers, seed) run

    @property
    def rate(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0


class _Found(Exception):
    def __init__(self, verdict: Verdict, faults: Example, stderr: str):
        super().__init__(verdict.detail)
        self.verdict, self.faults, self.stderr = verdict, faults, stderr


class Judge:
    """Runs the client once against what the server serves now and judges it."""

    def __init__(self, server: FuzzServer, client: Union[str, ClientCallable], options: FuzzOptions):
        self.server, self.client, self.options = server, client, options
        endpoints = server.endpoints
        user = next((u for u in endpoints["users"] if options.user in (None, u["email"], u["username"])),
                    endpoints["users"][0])
        self.values = values(endpoints, user, "fuzz", server.state_dir, server.endpoints_path)
        self.words = parse_command(client) if isinstance(client, str) else None
        self.process = ClientProcess()
        self.thread = ClientThread()
        self.secrets = [u["password"] for u in endpoints["users"]]

    def close(self) -> None:
        self.thread.close()

    def run_once(self) -> Tuple[Optional[Verdict], ClientRun]:
        self.server.skip_events()   # what came before this run is not this run's
        run = self._run_command() if self.words is not None else self._run_callable()
        if run.start_error:
            raise RuntimeError(f"the client could not be started: {run.start_error}")
        events = self.server.new_events()
        complaint = self.options.predicate(run, events) if self.options.predicate else None
        verdict = first_verdict([
            crash_verdict(run, self.options.crash_patterns), hang_verdict(run),
            conduct_verdict(events, self.server.endpoints["hostnames"]),
            backoff_verdict(events, self.server.endpoints["domain"], self.server.endpoints["hostnames"]),
            Verdict("predicate", f"predicate:{complaint}", complaint) if complaint else None])
        return verdict, run

    def _run_command(self) -> ClientRun:
        argv = fill(self.words or [], self.values)
        return self.process.run(argv, environment(self.values, self.options.export_ca), self.options.timeout)

    def _run_callable(self) -> ClientRun:
        """The callable in the client thread: an exception outside ``expected_errors`` is a crash (its traceback
        the stderr), a call still running at the timeout a hang (it is left behind, with its thread)."""
        box: Dict[str, Any] = {}
        served = Served(self.values, self.server.endpoints)

        def call() -> None:
            try:
                box["result"] = self.client(served)   # type: ignore[operator]
            except self.options.expected_errors as exc:
                box["expected"] = exc
            except BaseException:   # noqa: BLE001 -- any other exception is the finding
                box["crash"] = traceback.format_exc()

        started = time.monotonic()
        finished = self.thread.run(call, self.options.timeout)
        seconds = time.monotonic() - started
        if not finished:
            return ClientRun(["<callable>"], None, None, True, "", "", seconds)
        if "crash" in box:
            return ClientRun(["<callable>"], 1, None, False, "", box["crash"], seconds)
        return ClientRun(["<callable>"], 1 if "expected" in box else 0, None, False, "", "", seconds)


class ClientThread:
    """Runs an in-process client example after example in one daemon thread: a new thread per example would cost
    more than a short client's request (Python's and OpenSSL's per-thread state, made anew). A call still running at
    its timeout (a hang) is left behind with its thread, and the next call gets a new one."""

    def __init__(self) -> None:
        self._jobs: Optional["queue.SimpleQueue[Optional[Tuple[Callable[[], None], threading.Event]]]"] = None

    def run(self, call: Callable[[], None], timeout: float) -> bool:
        """Whether ``call`` (which must not raise) returned within ``timeout`` seconds."""
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(target=_serve_calls, args=(self._jobs,), daemon=True, name="fuzzed-client").start()
        done = threading.Event()
        self._jobs.put((call, done))
        if done.wait(timeout):
            return True
        self.close()   # the hung thread ends when (if ever) its call returns
        return False

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None


def _serve_calls(jobs: "queue.SimpleQueue[Optional[Tuple[Callable[[], None], threading.Event]]]") -> None:
    while True:
        job = jobs.get()
        if job is None:
            return
        call, done = job
        try:
            call()
        finally:
            done.set()


def fuzz(client: Union[str, ClientCallable], options: FuzzOptions,
         progress: Optional[Callable[[FuzzReport], None]] = None) -> FuzzReport:
    """Fuzz ``client`` (a command with placeholders, or a callable taking a ``Served``); the findings, shrunk."""
    report = FuzzReport()
    with FuzzServer(options.org, options.listen, options.seed or 0, https_port=options.https_port) as server:
        started = time.monotonic()   # the rate is of examples: the mock's start is not counted
        judge = Judge(server, client, options)
        known: set = set()
        try:
            for round_index in range(options.max_findings):
                budget = options.max_examples - report.examples
                if budget <= 0:
                    break
                finding = _one_round(server, judge, options, report, known, budget, round_index, progress)
                if finding is None:
                    break
                known.add(finding.verdict.signature)
                if options.save_failures:
                    finding.path = save_finding(finding, options.save_failures, finding.layers)
                report.findings.append(finding)
        finally:
            judge.close()
        server.clear()
        report.seconds = time.monotonic() - started
    return report


def _one_round(server: FuzzServer, judge: Judge, options: FuzzOptions, report: FuzzReport, known: set, budget: int,
               round_index: int, progress: Optional[Callable[[FuzzReport], None]]) -> Optional[Finding]:
    last: Dict[str, _Found] = {}

    # No deadline: a client run takes what it takes (a hang has its own timeout). Of the health checks only too_slow
    # is off: drawing is slow on a loaded machine (the fuzzer shares it with the mock and the client); the others
    # catch a strategy that draws badly, which a run should report rather than fuzz with.
    @settings(max_examples=budget, derandomize=options.seed is None, deadline=None, print_blob=False,
              database=DirectoryBasedExampleDatabase(options.database) if options.database else None,
              suppress_health_check=[HealthCheck.too_slow], verbosity=Verbosity.quiet, report_multiple_bugs=False,
              phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])
    @given(examples(list(options.layers), options.max_faults, server.endpoints["hostnames"]))
    def check(faults: Example) -> None:
        server.apply(faults)
        verdict, run = judge.run_once()
        report.examples += 1
        report.seconds = time.monotonic() - started
        if progress is not None:
            progress(report)
        if verdict is not None and verdict.signature not in known:
            last["found"] = _Found(verdict, faults, run.stderr)
            raise last["found"]

    # The database key names the layers: runs of other layers sharing the directory must not replay (and, finding
    # them invalid, delete) each other's examples.
    check.hypothesis.inner_test._hypothesis_internal_add_digest = (   # type: ignore[attr-defined]
        "mockex-fuzz:" + ",".join(options.layers)).encode()
    started = time.monotonic() - report.seconds
    if options.seed is not None:
        # What @hypothesis.seed sets, without what it also does: turn the example database off (a seeded run with
        # --database replays the failures saved there first, and saves its own).
        check._hypothesis_internal_use_seed = options.seed + round_index   # type: ignore[attr-defined]
    try:
        check()
    except _Found as found:
        return _finding(found, judge, options, round_index, flaky=False)
    except Exception:   # noqa: BLE001 -- Hypothesis' Flaky: the failure did not come back on replay
        if "found" in last:
            return _finding(last["found"], judge, options, round_index, flaky=True)
        raise
    return None


def _finding(found: _Found, judge: Judge, options: FuzzOptions, round_index: int, flaky: bool) -> Finding:
    """The finding, with the org's passwords masked in what the client printed (a client may echo its argv)."""
    verdict = found.verdict
    verdict = Verdict(verdict.oracle, mask(verdict.signature, judge.secrets), mask(verdict.detail, judge.secrets))
    return Finding(verdict, found.faults, options.seed, round_index, mask(found.stderr[-4000:], judge.secrets),
                   flaky=flaky, layers=tuple(options.layers))


def finding_name(finding: Finding, layers: Sequence[str]) -> str:
    digest = hashlib.sha1(repr((finding.verdict.signature, finding.faults)).encode()).hexdigest()[:8]
    return f"fuzz-{'-'.join(layers)}-{digest}"


def finding_document(finding: Finding, name: str) -> Dict[str, Any]:
    expect_client: Dict[str, Any] = {"exit": "any", "credentials": "trusted-tls"}
    if finding.verdict.oracle == "crash":
        expect_client["stderr_not"] = list(CRASH_PATTERNS)
    description = f"mockex fuzz finding ({finding.verdict.oracle}): {finding.verdict.detail}"
    return scenario_document(name, finding.faults, description=description,
                             expect={"client": expect_client})


def save_finding(finding: Finding, directory: str, layers: Sequence[str]) -> str:
    """Write the finding as a scenario file; its path. The comment says how it was found and how to replay it."""
    os.makedirs(directory, exist_ok=True)
    name = finding_name(finding, layers)
    path = os.path.join(directory, f"{name}.yaml")
    seed = "derandomized (no --seed)" if finding.seed is None else f"--seed {finding.seed}"
    header = [f"# found by mockex fuzz --layer {' --layer '.join(layers)}, {seed}, round {finding.round}",
              f"# oracle: {finding.verdict.oracle} -- {finding.verdict.detail}"
              + (" (flaky: did not always come back)" if finding.flaky else ""),
              f"# replay: mockex fuzz --replay {os.path.basename(path)} --client CMD   or   "
              f"mockex run {os.path.basename(path)} --client CMD"]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(header) + "\n")
        yaml.safe_dump(finding_document(finding, name), handle, sort_keys=False, allow_unicode=True, width=1000)
    return path


def replay(path: str, client: Union[str, ClientCallable], options: FuzzOptions) -> Tuple[Optional[Verdict], ClientRun]:
    """Serve the scenario file ``path`` and run the client once: the verdict (None: no finding) and the run."""
    with FuzzServer(options.org, options.listen, options.seed or 0, https_port=options.https_port) as server:
        server.apply_file(path)
        judge = Judge(server, client, options)
        try:
            return judge.run_once()
        finally:
            judge.close()
