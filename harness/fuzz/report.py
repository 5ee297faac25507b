"""What a fuzz run tells, like `mockex run`: a progress line (redrawn on a terminal, plain lines elsewhere), JSON, and
JUnit XML in the runner's shape (harness/runner/report.py): one failed testcase per distinct finding and one passed
summary testcase (so a run without findings still shows up in a CI test report with its example count)."""
from __future__ import annotations

import json
import sys
import time
from typing import IO, Any, Dict, List, Optional

from harness.fuzz.engine import Finding, FuzzReport, finding_name
from harness.runner import report as runner_report

EXPECTED = "not crash, not hang, send credentials only over TLS it could verify"
PLAIN_EVERY = 100   # examples between two plain progress lines (CI logs)


class FuzzProgress:
    """On a terminal one line redrawn (at most every 0.2 s); elsewhere a line per new finding and every
    PLAIN_EVERY examples."""

    def __init__(self, stream: IO[str] = sys.stderr, tty: Optional[bool] = None):
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.drawn, self.findings, self.lines = 0.0, 0, 0

    def update(self, examples: int, findings: int, seconds: float) -> None:
        rate = examples / seconds if seconds else 0.0
        text = f"{examples} examples, {rate:.1f}/s, {findings} findings"
        if self.tty:
            now = time.monotonic()
            if now - self.drawn >= 0.2 or findings != self.findings:
                self.drawn = now
                self.stream.write("\r\x1b[K" + text)
                self.stream.flush()
        elif findings != self.findings or examples // PLAIN_EVERY > self.lines:
            self.lines = examples // PLAIN_EVERY
            self.stream.write(text + "\n")
            self.stream.flush()
        self.findings = findings

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def served(finding: Finding) -> str:
    return ", ".join(f"{f['fault']}{f['params'] or ''}" for f in finding.faults)


def finding_json(finding: Finding) -> Dict[str, Any]:
    return {"name": finding_name(finding, finding.layers), "oracle": finding.verdict.oracle,
            "signature": finding.verdict.signature, "detail": finding.verdict.detail, "faults": finding.faults,
            "layers": list(finding.layers), "seed": finding.seed, "round": finding.round, "flaky": finding.flaky,
            "path": finding.path, "stderr": finding.stderr}


def to_json(report: FuzzReport, run: Dict[str, Any]) -> Dict[str, Any]:
    return {"format": "mockex-fuzz/1", "run": run,
            "summary": {"examples": report.examples, "seconds": round(report.seconds, 3),
                        "rate": round(report.rate, 2), "findings": len(report.findings)},
            "exit_status": 1 if report.findings else 0, "runs": report.runs,
            "findings": [finding_json(f) for f in report.findings]}


def results(report: FuzzReport, run: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The findings and the summary as the runner's result dicts (what its JUnit writer reads)."""
    cases: List[Dict[str, Any]] = []
    for finding in report.findings:
        cases.append({
            "name": finding_name(finding, finding.layers), "outcome": "failed", "layers": list(finding.layers),
            "seconds": 0.0, "source": finding.path or "not saved (--save-failures DIR)",
            "summary": f"served: {served(finding)}", "expected": EXPECTED, "got": finding.verdict.detail,
            "problems": [f"[{finding.verdict.oracle}] {finding.verdict.detail}"
                         + (" (flaky: did not always come back)" if finding.flaky else ""),
                         f"served: {served(finding)}",
                         f"found with seed {finding.seed if finding.seed is not None else 'derandomized'}, "
                         f"round {finding.round}"],
            "client": {"command": run.get("client", ""), "user": "", "stdout": "", "stderr": finding.stderr}})
    lines = [f"{report.examples} examples in {report.seconds:.1f} s ({report.rate:.1f}/s): "
             f"{len(report.findings)} findings"]
    lines += [f"run {'+'.join(r['layers'])} seed {r['seed'] if r['seed'] is not None else 'derandomized'}: "
              f"{r['examples']} examples, {r['findings']} findings" for r in report.runs]
    cases.append({"name": "fuzz summary", "outcome": "passed", "layers": list(run.get("layers") or []),
                  "seconds": report.seconds, "got": lines[0],
                  "client": {"stdout": "\n".join(lines) + "\n"}})
    return cases


def write_json(path: str, report: FuzzReport, run: Dict[str, Any]) -> None:
    runner_report.write_text(path, json.dumps(to_json(report, run), indent=2, ensure_ascii=False) + "\n")


def write_junit(path: str, report: FuzzReport, run: Dict[str, Any]) -> None:
    runner_report.write_junit(path, results(report, run), run, title="mockex fuzz")
