"""Run a plan: N worker processes (harness.runner.worker) take the scenarios in order, results come back as they
finish and are reported in plan order.

An interrupted run (Ctrl-C, SIGTERM) ends every worker, every mock and every client before it returns: each worker
kills its client's process group and stops its mock on SIGTERM, is killed if it does not go within a grace period,
and would get SIGTERM from the kernel if the runner itself died (PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from harness.runner.plan import slow_first
from harness.sandbox.namespace import unshare_argv
from harness.scenario import Scenario

WORKER_GRACE = 15.0     # seconds a worker gets to end its client and mock after SIGTERM
CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Interrupted(Exception):
    """The run was stopped by a signal; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@dataclass
class RunSettings:
    client: Any                       # "probe" or the command's words (with placeholders)
    client_text: str                  # the command as given (placeholders unfilled: no password in it)
    org: str
    timeout: float = 60.0
    jobs: int = 1
    export_ca: bool = False
    listen: str = "127.0.0.1"
    seed: Optional[int] = None
    state_dir: Optional[str] = None   # kept when given; else a temporary directory, removed afterwards
    cwd: str = field(default_factory=os.getcwd)
    sandbox: bool = False             # each worker in its own user+net+mount namespace, the mock on 443/80/53


class Run:
    """One run of a plan; ``results`` fills in plan order as workers answer."""

    def __init__(self, scenarios: List[Scenario], settings: RunSettings):
        self.scenarios, self.settings = scenarios, settings
        self.results: List[Optional[Dict[str, Any]]] = [None] * len(scenarios)
        self.workers: List[subprocess.Popen] = []
        self._jobs: "queue.Queue[Optional[Dict[str, Any]]]" = queue.Queue()
        self._answers: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self.state_dir = ""

    def execute(self, on_result: Callable[[Dict[str, Any]], None] = lambda result: None) -> List[Dict[str, Any]]:
        settings = self.settings
        keep = settings.state_dir is not None
        self.state_dir = (os.path.abspath(settings.state_dir) if settings.state_dir is not None
                          else tempfile.mkdtemp(prefix="mockex-run-"))
        os.makedirs(os.path.join(self.state_dir, "scenarios"), exist_ok=True)
        os.makedirs(os.path.join(self.state_dir, "pki"), exist_ok=True)
        previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
        if threading.current_thread() is threading.main_thread():
            for signum in previous:
                signal.signal(signum, _raise_interrupted)
        finished = False
        try:
            position = {id(scenario): index for index, scenario in enumerate(self.scenarios)}
            for scenario in slow_first(self.scenarios):
                self._jobs.put(self._job(position[id(scenario)], scenario))
            count = max(1, min(settings.jobs, len(self.scenarios)))
            threads = [self._start_worker(number) for number in range(count)]
            for _ in threads:
                self._jobs.put(None)
            for _ in self.scenarios:
                answer = self._next_answer(threads)
                self.results[answer["index"]] = answer
                on_result(answer)
            finished = True
            return [r for r in self.results if r is not None]
        finally:
            self._end_workers(graceful=finished)
            if threading.current_thread() is threading.main_thread():
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
            if not keep:
                shutil.rmtree(self.state_dir, ignore_errors=True)

    def _job(self, index: int, scenario: Scenario) -> Dict[str, Any]:
        settings = self.settings
        return {"index": index, "source": scenario.source, "org": settings.org, "listen": settings.listen,
                "state_dir": os.path.join(self.state_dir, "scenarios", f"{index + 1:03d}-{scenario.name}"),
                "pki_dir": os.path.join(self.state_dir, "pki"), "seed": settings.seed, "client": settings.client,
                "client_text": settings.client_text, "timeout": settings.timeout, "export_ca": settings.export_ca,
                "cwd": settings.cwd, "keep": settings.state_dir is not None, "sandbox": settings.sandbox}

    def _start_worker(self, number: int) -> threading.Thread:
        log = open(os.path.join(self.state_dir, f"worker-{number + 1}.log"), "wb")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [CHECKOUT, env.get("PYTHONPATH")]))
        argv = [sys.executable, "-m", "harness.runner.worker", str(os.getpid())]
        if self.settings.sandbox:
            # unshare execs the worker in place (same pid, same parent), so the worker's parent check, its
            # PR_SET_PDEATHSIG and our SIGTERM work as without it; each worker gets a network namespace of its own,
            # so N of them serve 443/80/53 side by side. We are on the thread that runs execute() (the main one in
            # `mockex run`), which outlives the workers, as the parent-death signal requires.
            argv = unshare_argv(argv + ["--sandbox"])
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                                   cwd=self.settings.cwd)
        log.close()
        self.workers.append(process)
        thread = threading.Thread(target=self._feed, args=(process, log.name), daemon=True,
                                  name=f"runner-worker-{number + 1}")
        thread.start()
        return thread

    def _feed(self, process: subprocess.Popen, log: str) -> None:
        """Hand jobs to one worker, one at a time, until the queue says stop or the worker dies."""
        assert process.stdin is not None and process.stdout is not None
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                process.stdin.write((json.dumps(job) + "\n").encode())
                process.stdin.flush()
                line = process.stdout.readline()
                answer = json.loads(line) if line else None
            except (OSError, ValueError):
                answer = None
            if answer is None:   # the worker died: this job is an error, the others go to the other workers
                self._answers.put(_broken(job, process, log))
                return
            self._answers.put(answer)

    def _next_answer(self, threads: List[threading.Thread]) -> Dict[str, Any]:
        while True:
            try:
                return self._answers.get(timeout=0.2)   # short waits keep signals (Ctrl-C) handled promptly
            except queue.Empty:
                if not any(thread.is_alive() for thread in threads) and self._answers.empty():
                    # every worker is gone: the jobs they never took are errors
                    job = self._jobs.get_nowait() if not self._jobs.empty() else None
                    while job is None and not self._jobs.empty():
                        job = self._jobs.get_nowait()
                    if job is None:
                        raise RuntimeError("every runner worker ended before the plan was done")
                    return _broken(job, None, "")

    def _end_workers(self, graceful: bool) -> None:
        """After a whole run a worker ends when its input does; after an interruption it is told to at once."""
        for process in self.workers:
            try:
                if process.stdin:
                    process.stdin.close()
            except OSError:
                pass
            if graceful:
                try:
                    process.wait(timeout=WORKER_GRACE)
                except subprocess.TimeoutExpired:
                    pass
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(timeout=WORKER_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout:
                process.stdout.close()


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


def _broken(job: Dict[str, Any], process: Optional[subprocess.Popen], log: str) -> Dict[str, Any]:
    tail = ""
    if log and os.path.exists(log):
        with open(log, encoding="utf-8", errors="replace") as handle:
            tail = handle.read()[-2000:]
    status = process.poll() if process is not None else None
    name = os.path.basename(job["state_dir"]).split("-", 1)[1]
    return {"index": job["index"], "name": name, "source": job["source"], "layers": [], "summary": "",
            "outcome": "error", "seconds": 0.0, "expected": "", "got": "the runner worker died",
            "problems": [f"the runner worker ended (status {status}) while running this scenario"],
            "traceback": tail}
