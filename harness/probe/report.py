"""The probe's result tree: steps with status, reason, remedy, evidence and timing; the verdict; JSON and text output.

A node's ``id`` is a stable dotted path ("autodiscover.root-domain.certificate"); its ``step`` is the vocabulary
step (harness.probe.verdicts.STEPS) it belongs to, or None for a group ("outlook-anywhere").
"""
from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from harness.verdicts import STEPS, remedy_for

SCHEMA_ID = "mockex-probe/1"
STATUSES = ("pass", "fail", "skip", "warn", "info")


class StepFailed(Exception):
    """Raised inside a check: the step fails with this reason id, one-line message and evidence."""

    def __init__(self, reason: str, message: str, **evidence: Any):
        super().__init__(message)
        self.reason, self.message, self.evidence = reason, message, evidence


@dataclass
class Step:
    id: str
    title: str
    step: Optional[str] = None
    host: Optional[str] = None
    status: str = "pass"
    reason: Optional[str] = None
    message: str = ""
    evidence: Dict[str, Any] = field(default_factory=dict)
    elapsed_ms: float = 0.0
    children: List["Step"] = field(default_factory=list)
    cause: Optional[str] = None   # id of the descendant whose failure this node's failure repeats (own id: itself)

    def __post_init__(self) -> None:
        if self.step is not None and self.step not in STEPS:
            raise ValueError(f"unknown step {self.step!r}")

    def add(self, child: "Step") -> "Step":
        self.children.append(child)
        return child

    def fail(self, reason: str, message: str, **evidence: Any) -> "Step":
        self.status, self.reason, self.message = "fail", reason, message
        self.evidence.update(evidence)
        return self

    def passed(self, message: str, **evidence: Any) -> "Step":
        self.status, self.message = "pass", message
        self.evidence.update(evidence)
        return self

    def mark(self, status: str, message: str, reason: Optional[str] = None, **evidence: Any) -> "Step":
        if status not in STATUSES:
            raise ValueError(status)
        self.status, self.message, self.reason = status, message, reason
        self.evidence.update(evidence)
        return self

    @property
    def remedy(self) -> Optional[str]:
        return remedy_for(self.reason) if self.reason and self.status in ("fail", "warn") else None

    def walk(self) -> Iterator["Step"]:
        yield self
        for child in self.children:
            yield from child.walk()

    def to_json(self) -> Dict[str, Any]:
        return {"id": self.id, "step": self.step, "title": self.title, "host": self.host, "status": self.status,
                "reason": self.reason, "message": self.message, "remedy": self.remedy,
                "elapsed_ms": round(self.elapsed_ms, 1), "cause": self.cause, "evidence": self.evidence,
                "children": [c.to_json() for c in self.children]}


class TimeLimit(Exception):
    """The probe's total time budget is spent: every open step fails with reason "time-limit"."""


# Whether the run's total time budget is spent (set by the runner): a step that fails once it is spent failed for
# lack of time, whatever the network error looked like.
TIME_SPENT: ContextVar[Callable[[], bool]] = ContextVar("TIME_SPENT")


class Timed:
    """``with Timed(step):`` records the elapsed time; a StepFailed inside fails the step and is swallowed;
    TimeLimit fails the step and goes on up (the runner stops there)."""

    def __init__(self, step: Step):
        self.step = step

    def __enter__(self) -> Step:
        self._started = time.monotonic()
        return self.step

    def __exit__(self, kind, exc, tb) -> bool:
        self.step.elapsed_ms = (time.monotonic() - self._started) * 1000
        if isinstance(exc, StepFailed):
            spent = TIME_SPENT.get(None)
            if spent is not None and spent():
                # the step's wait was cut short by the total limit, not by the step's own timeout: say so
                self.step.fail("time-limit", "the probe's total time limit ran out here")
                raise TimeLimit() from exc
            self.step.fail(exc.reason, exc.message, **exc.evidence)
            return True
        if isinstance(exc, TimeLimit) and self.step.status != "fail":
            self.step.fail("time-limit", "the probe's total time limit ran out here")
        return False


# A phase's later steps: (node id, step name, title) each, in the order they run.
LaterSteps = Sequence[Tuple[str, str, str]]


def run_in_order(phase: Step, host: Optional[str], steps: LaterSteps,
                 checks: Sequence[Callable[[Step], None]]) -> None:
    """Each step run by its check, in order, timed; once one fails, the rest are added as skipped."""
    for index, ((node_id, step_name, title), check) in enumerate(zip(steps, checks)):
        step = phase.add(Step(node_id, title, step_name, host))
        with Timed(step):
            check(step)
        if step.status == "fail":
            skip_steps(phase, host, steps[index + 1:])
            return


def skip_steps(phase: Step, host: Optional[str], steps: LaterSteps) -> None:
    for node_id, step_name, title in steps:
        phase.add(Step(node_id, title, step_name, host, status="skip", message="skipped (previous step failed)"))


@dataclass
class Verdict:
    passed: bool
    fails_at: Optional[str] = None
    reason: Optional[str] = None
    host: Optional[str] = None
    message: str = ""
    step_id: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        return {"passed": self.passed, "fails_at": self.fails_at, "reason": self.reason, "host": self.host,
                "message": self.message, "step_id": self.step_id,
                "remedy": remedy_for(self.reason) if self.reason else None}


def verdict_of(phases: List[Step]) -> Verdict:
    """The first failing phase decides; within it, its ``cause`` chain (Autodiscover points at the attempt that
    got furthest), else the first failing child, down to the deepest failing node."""
    for phase in phases:
        if phase.status == "fail":
            node = _decisive(phase)
            return Verdict(False, node.step, node.reason, node.host, node.message, node.id)
    return Verdict(True)


def _decisive(node: Step) -> Step:
    if node.cause == node.id:
        return node
    if node.cause:
        nxt = next((d for d in node.walk() if d.id == node.cause and d is not node), None)
    else:
        nxt = next((c for c in node.children if c.status == "fail"), None)
    return _decisive(nxt) if nxt is not None else node


@dataclass
class Report:
    email: str
    phases: List[Step]
    started: float
    elapsed_ms: float
    options: Dict[str, Any]

    @property
    def verdict(self) -> Verdict:
        return verdict_of(self.phases)

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict.passed else 1

    def to_json(self) -> Dict[str, Any]:
        return {"schema": SCHEMA_ID, "email": self.email,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                "elapsed_ms": round(self.elapsed_ms, 1), "options": self.options,
                "verdict": self.verdict.to_json(), "steps": [p.to_json() for p in self.phases]}


# ---- text -------------------------------------------------------------------------------------------------------
SYMBOLS = {"pass": "✔", "fail": "✘", "skip": "-", "warn": "!", "info": "i"}
COLOURS = {"pass": "32", "fail": "31", "skip": "90", "warn": "33", "info": "36"}


def render_text(report: Report, colour: bool = False, verbose: bool = False) -> str:
    """The step tree; a failure's remedy is printed once, under the step the verdict names (warnings get theirs)."""
    lines: List[str] = []
    verdict = report.verdict

    def paint(status: str, text: str) -> str:
        return f"\x1b[{COLOURS[status]}m{text}\x1b[0m" if colour else text

    def emit(node: Step, depth: int) -> None:
        indent = "  " * depth
        text = node.title + (f" — {node.message}" if node.message else "")
        lines.append(f"{indent}{paint(node.status, SYMBOLS[node.status])} {text}")
        if (node.id == verdict.step_id or node.status == "warn") and node.remedy:
            lines.append(f"{indent}    What to do: {node.remedy}")
        if verbose:
            for key, value in node.evidence.items():
                lines.append(f"{indent}    {key}: {value}")
        for child in node.children:
            emit(child, depth + 1)

    for phase in report.phases:
        emit(phase, 0)
    if verdict.passed:
        lines.append(paint("pass", f"All checks passed for {report.email} ({report.elapsed_ms / 1000:.1f} s)."))
    else:
        where = f" on {verdict.host}" if verdict.host else ""
        lines.append(paint("fail", f"Failed at {verdict.fails_at}{where}: {verdict.reason} — {verdict.message}"))
    return "\n".join(lines)
