"""What a run tells: progress while it runs, a summary table, JUnit XML (one testcase per scenario) and JSON.

Results are the dicts harness.runner.worker returns; a report never holds a password (the worker masks the org's
passwords in everything a client printed, and the command is shown with its placeholders unfilled).
"""
from __future__ import annotations

import json
import re
import socket
import sys
import time
import xml.etree.ElementTree as ET
from typing import IO, Any, Dict, List, Optional

OUTCOMES = ("passed", "failed", "error", "skipped")
MARKS = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP"}
# characters XML 1.0 cannot carry, even escaped (a client may print anything)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
OUTPUT_TAIL = 8000       # characters of a client's stdout/stderr quoted in JUnit


def counts(results: List[Dict[str, Any]]) -> Dict[str, int]:
    found = {outcome: 0 for outcome in OUTCOMES}
    for result in results:
        found[result["outcome"]] += 1
    return found


def exit_status(results: List[Dict[str, Any]]) -> int:
    """0 only when every judged scenario passed (skipped ones are not judged); 1 otherwise."""
    found = counts(results)
    return 0 if found["failed"] == 0 and found["error"] == 0 else 1


class Progress:
    """A bar redrawn in place on a terminal; elsewhere (CI logs) one plain line per finished scenario."""

    def __init__(self, total: int, stream: IO[str] = sys.stderr, tty: Optional[bool] = None, width: int = 30):
        self.total, self.stream, self.width = total, stream, width
        self.tty = stream.isatty() if tty is None else tty
        self.done: Dict[str, int] = {outcome: 0 for outcome in OUTCOMES}
        self.started = time.monotonic()

    def update(self, result: Dict[str, Any]) -> None:
        self.done[result["outcome"]] += 1
        finished = sum(self.done.values())
        if self.tty:
            filled = self.width * finished // max(self.total, 1)
            bar = "#" * filled + "." * (self.width - filled)
            tally = f"{self.done['passed']} passed, {self.done['failed'] + self.done['error']} failed"
            self.stream.write(f"\r\x1b[K[{bar}] {finished}/{self.total}  {tally}  {result['name'][:40]}")
            if result["outcome"] in ("failed", "error"):
                self.stream.write(f"\r\x1b[K{MARKS[result['outcome']]} {result['name']}: "
                                  f"{first_problem(result)}\n")
        else:
            line = (f"[{finished:>{len(str(self.total))}}/{self.total}] {MARKS[result['outcome']]:<5} "
                    f"{result['name']} ({result['seconds']:.1f} s)")
            if result["outcome"] in ("failed", "error"):
                line += f": {first_problem(result)}"
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def first_problem(result: Dict[str, Any]) -> str:
    problems = result.get("problems") or []
    return problems[0] if problems else result.get("got", "")


def summary_table(results: List[Dict[str, Any]], seconds: float) -> str:
    width = max((len(r["name"]) for r in results), default=8)
    lines = [f"{'result':<6} {'scenario':<{width}}  {'time':>7}  what the client did"]
    for result in results:
        lines.append(f"{MARKS[result['outcome']]:<6} {result['name']:<{width}}  {result['seconds']:>6.1f}s  "
                     f"{result.get('got', '')}")
    failed = [r for r in results if r["outcome"] in ("failed", "error")]
    if failed:
        lines += ["", "failures:"]
        for result in failed:
            lines.append(f"  {result['name']}: should {result.get('expected', '')}")
            lines += [f"    - {problem}" for problem in result.get("problems", [])]
    found = counts(results)
    lines += ["", f"{len(results)} scenarios: {found['passed']} passed, {found['failed']} failed, "
                  f"{found['error']} errors, {found['skipped']} skipped in {seconds:.1f} s"]
    return "\n".join(lines)


def to_json(results: List[Dict[str, Any]], run: Dict[str, Any]) -> Dict[str, Any]:
    return {"format": "mockex-run/1", "run": run, "summary": counts(results), "exit_status": exit_status(results),
            "scenarios": results}


def write_json(path: str, results: List[Dict[str, Any]], run: Dict[str, Any]) -> None:
    write_text(path, json.dumps(to_json(results, run), indent=2) + "\n")


def junit_xml(results: List[Dict[str, Any]], run: Dict[str, Any], title: str = "mockex run") -> str:
    """JUnit XML as Jenkins, GitLab, GitHub test reporters and Azure read it (the junit-10.xsd shape; tests/ has
    that schema and a test validates against it). ``title``: the tool (`mockex fuzz` writes its findings here too)."""
    found = counts(results)
    total = f"{sum(r['seconds'] for r in results):.3f}"
    suites = ET.Element("testsuites", name=title, tests=str(len(results)), failures=str(found["failed"]),
                        errors=str(found["error"]), skipped=str(found["skipped"]), time=total)
    suite = ET.SubElement(suites, "testsuite", name=f"{title} {run.get('client', '')}".strip(),
                          tests=str(len(results)), failures=str(found["failed"]), errors=str(found["error"]),
                          skipped=str(found["skipped"]), time=total,
                          timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(run.get("started", time.time()))),
                          hostname=socket.gethostname(), id="0", package="mockex")
    properties = ET.SubElement(suite, "properties")
    for key in ("client", "sandbox", "shard", "jobs", "seed", "seeds", "layers", "max_examples", "mockex"):
        if run.get(key) is not None:
            ET.SubElement(properties, "property", name=key, value=_xml(str(run[key])))
    for result in results:
        case = ET.SubElement(suite, "testcase", name=result["name"],
                             classname="mockex." + ("-".join(result.get("layers") or []) or "clean"),
                             time=f"{result['seconds']:.3f}")
        if result["outcome"] == "skipped":
            ET.SubElement(case, "skipped", message=_xml(result.get("expected", "")))
        elif result["outcome"] in ("failed", "error"):
            tag = "failure" if result["outcome"] == "failed" else "error"
            element = ET.SubElement(case, tag, message=_xml(first_problem(result)[:500]),
                                    type="expectation" if tag == "failure" else "runner")
            element.text = _xml(failure_text(result))
        client = result.get("client") or {}
        out = _transcript_block(result) + _tail("client stdout", client.get("stdout", ""))
        if out:
            ET.SubElement(case, "system-out").text = _xml(out)
        if client.get("stderr"):
            ET.SubElement(case, "system-err").text = _xml(_tail("client stderr", client["stderr"]))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_junit(path: str, results: List[Dict[str, Any]], run: Dict[str, Any], title: str = "mockex run") -> None:
    write_text(path, junit_xml(results, run, title))


def failure_text(result: Dict[str, Any]) -> str:
    """What the client did and what it should have done."""
    client = result.get("client") or {}
    lines = [f"scenario: {result['name']} ({result.get('source', '')})", f"  {result.get('summary', '')}",
             f"the client should: {result.get('expected', '')}", f"what it did: {result.get('got', '')}", "problems:"]
    lines += [f"  - {problem}" for problem in result.get("problems", [])]
    if client:
        lines.append(f"client: {client.get('command', '')} (as {client.get('user', '')})")
    if result.get("probe"):
        lines.append(f"probe verdict: {json.dumps(result['probe'])}")
    if result.get("traceback"):
        lines += ["", result["traceback"]]
    if result.get("transcript"):   # kept only with --state-dir
        lines.append(f"transcript: {result['transcript']}")
    return "\n".join(lines)


def _transcript_block(result: Dict[str, Any]) -> str:
    lines = result.get("transcript_excerpt") or []
    return ("--- mock transcript (excerpt) ---\n" + "\n".join(lines) + "\n") if lines else ""


def _tail(title: str, text: str) -> str:
    if not text:
        return ""
    if len(text) > OUTPUT_TAIL:
        text = f"[... {len(text) - OUTPUT_TAIL} characters left out ...]\n" + text[-OUTPUT_TAIL:]
    return f"--- {title} ---\n{text}" + ("" if text.endswith("\n") else "\n")


def _xml(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def write_text(path: str, text: str) -> None:
    """``text`` to the file ``path`` ('-': stdout)."""
    if path == "-":
        sys.stdout.write(text)
        return
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
