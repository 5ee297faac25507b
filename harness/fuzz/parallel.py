"""Scale: a fuzz run as a plan of independent runs, one per (layers, seed), split between local workers (``-j N``)
and CI machines (``--shard K/N``).

The plan depends only on the layers, ``--seed`` and ``--seeds``, never on ``-j`` or the shard, so ``-j 2`` finds
what ``-j 1`` finds and the N shards of a matrix together run the plan exactly once. Each run is a whole engine run
(its own mock child, its own Hypothesis run, its own budget of ``max_examples``); the Hypothesis example database
directory, if any, is shared by all of them. Findings are merged in plan order, one per signature, and saved only
then, so the files written do not depend on which worker finished first.
"""
from __future__ import annotations

import multiprocessing
import queue
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from harness.fuzz.engine import ClientCallable, FuzzOptions, FuzzReport, fuzz, save_finding

Progress = Callable[[int, int, float], None]   # (examples so far, findings so far, seconds)
POLL = 0.2   # seconds between progress updates while workers run


@dataclass(frozen=True)
class Run:
    """One engine run of the plan: these layers (mixed in each example) with this seed."""
    index: int
    layers: Tuple[str, ...]
    seed: Optional[int]

    @property
    def name(self) -> str:
        return f"{'+'.join(self.layers)}@{'derandomized' if self.seed is None else self.seed}"


def plan(layers: Sequence[str], seed: Optional[int], seeds: int = 1, mix: bool = False) -> List[Run]:
    """layers x seeds: each layer on its own (``mix``: all layers in one run), with seeds S, S+1, ... S+seeds-1.
    One seed and no ``--seed``: Hypothesis' derandomized run, as a plain `mockex fuzz`; several seeds and no
    ``--seed`` start at 0 (derandomized runs would all be the same run)."""
    groups = [tuple(dict.fromkeys(layers))] if mix else [(layer,) for layer in dict.fromkeys(layers)]
    drawn: List[Optional[int]] = [None] if seed is None and seeds == 1 else [(seed or 0) + k for k in range(seeds)]
    runs = [(group, s) for s in drawn for group in groups]
    return [Run(index, group, s) for index, (group, s) in enumerate(runs)]


def shard(runs: Sequence[Run], index: int, count: int) -> List[Run]:
    """Shard ``index`` of ``count`` (1-based): every count-th run of the plan from the index-th (as `mockex run
    --shard` does with scenarios), so the shards' sizes differ by one at most."""
    return list(runs)[index - 1::count]


def fuzz_plan(client: Union[str, ClientCallable], options: FuzzOptions, runs: Sequence[Run], jobs: int = 1,
              progress: Optional[Progress] = None) -> FuzzReport:
    """Run these runs, ``jobs`` at a time (worker processes; a callable client must then be picklable, i.e. a
    module-level function), and merge their reports."""
    started = time.monotonic()
    unsaved = replace(options, save_failures=None)
    if jobs <= 1 or len(runs) <= 1:
        reports = _in_this_process(client, unsaved, runs, progress, started)
    else:
        reports = _in_workers(client, unsaved, runs, jobs, progress, started)
    merged = merge(runs, reports)
    merged.seconds = time.monotonic() - started
    if options.save_failures:
        for finding in merged.findings:
            finding.path = save_finding(finding, options.save_failures, finding.layers)
    return merged


def merge(runs: Sequence[Run], reports: Sequence[FuzzReport]) -> FuzzReport:
    """One report: examples summed, findings in plan order with one per signature, one ``runs`` entry per run."""
    merged = FuzzReport()
    seen: set = set()
    for run, report in zip(runs, reports):
        merged.examples += report.examples
        merged.runs.append({"layers": list(run.layers), "seed": run.seed, "examples": report.examples,
                            "seconds": round(report.seconds, 3), "findings": len(report.findings)})
        for finding in report.findings:
            if finding.verdict.signature not in seen:
                seen.add(finding.verdict.signature)
                merged.findings.append(finding)
    return merged


def _options_for(options: FuzzOptions, run: Run) -> FuzzOptions:
    return replace(options, layers=run.layers, seed=run.seed)


def _in_this_process(client: Union[str, ClientCallable], options: FuzzOptions, runs: Sequence[Run],
                     progress: Optional[Progress], started: float) -> List[FuzzReport]:
    reports: List[FuzzReport] = []
    done_examples, done_findings = 0, 0
    for run in runs:
        def tell(report: FuzzReport, examples: int = done_examples, findings: int = done_findings) -> None:
            if progress is not None:
                progress(examples + report.examples, findings + len(report.findings), time.monotonic() - started)
        report = fuzz(client, _options_for(options, run), tell)
        reports.append(report)
        done_examples += report.examples
        done_findings += len(report.findings)
    return reports


def _in_workers(client: Union[str, ClientCallable], options: FuzzOptions, runs: Sequence[Run], jobs: int,
                progress: Optional[Progress], started: float) -> List[FuzzReport]:
    # spawn, not fork: the parent may hold threads (a callable client's) and Hypothesis' global state
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        updates = manager.Queue()
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures: Dict[Future, int] = {
                pool.submit(_worker, client, _options_for(options, run), run.index, updates): position
                for position, run in enumerate(runs)}
            latest: Dict[int, Tuple[int, int]] = {}
            pending = set(futures)
            while pending:
                _, pending = wait(pending, timeout=POLL, return_when=FIRST_COMPLETED)
                _drain(updates, latest)
                if progress is not None:
                    progress(sum(e for e, _ in latest.values()), sum(f for _, f in latest.values()),
                             time.monotonic() - started)
            reports: List[Optional[FuzzReport]] = [None] * len(runs)
            for future, position in futures.items():
                reports[position] = future.result()   # a worker's exception is raised here
    return [r for r in reports if r is not None]


def _drain(updates: Any, latest: Dict[int, Tuple[int, int]]) -> None:
    while True:
        try:
            index, examples, findings = updates.get_nowait()
        except queue.Empty:
            return
        latest[index] = (examples, findings)


def _worker(client: Union[str, ClientCallable], options: FuzzOptions, index: int, updates: Any) -> FuzzReport:
    last = [0.0]

    def tell(report: FuzzReport) -> None:
        now = time.monotonic()
        if now - last[0] >= POLL / 2:
            last[0] = now
            updates.put((index, report.examples, len(report.findings)))

    report = fuzz(client, options, tell)
    updates.put((index, report.examples, len(report.findings)))
    return report
