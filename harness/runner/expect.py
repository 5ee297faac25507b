"""What a client must do in a scenario, and whether it did.

By default a scenario's ``expect.analyzer`` says what a correct client does: succeed (exit 0) where the analyzer
passes, fail cleanly (a non-zero exit, not a crash or a hang) where it fails at a step. In every scenario it sends
credentials only over TLS it could trust. ``expect.client`` overrides any of these, key by key.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from harness.runner.client import ClientRun
from harness.scenario import Scenario

CREDENTIAL_RULES = {
    "trusted-tls": "credentials only over TLS it could trust",
    "never": "no credentials at all",
    "any": "credentials anywhere",
}


@dataclass(frozen=True)
class ClientExpectation:
    exit: Union[str, int] = "any"          # "success", "failure", "any" or an exit code
    stdout: Tuple[str, ...] = ()
    stderr: Tuple[str, ...] = ()
    stdout_not: Tuple[str, ...] = ()
    stderr_not: Tuple[str, ...] = ()
    credentials: str = "trusted-tls"
    timeout: Optional[float] = None
    derived_from: str = "analyzer"         # "analyzer", "client" or "analyzer+client"
    analyzer: Dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        exits = {"success": "succeed (exit 0)", "failure": "fail cleanly (a non-zero exit)",
                 "any": "exit in any way"}
        parts = [exits[self.exit] if isinstance(self.exit, str) else f"exit with status {self.exit}"]
        for key, verb in (("stdout", "print"), ("stderr", "print on stderr"), ("stdout_not", "never print"),
                          ("stderr_not", "never print on stderr")):
            parts += [f"{verb} /{pattern}/" for pattern in getattr(self, key)]
        parts.append(f"send {CREDENTIAL_RULES[self.credentials]}")
        return ", ".join(parts)

    def to_json(self) -> Dict[str, Any]:
        shown: Dict[str, Any] = {"exit": self.exit, "credentials": self.credentials,
                                 "derived_from": self.derived_from}
        for key in ("stdout", "stderr", "stdout_not", "stderr_not"):
            if getattr(self, key):
                shown[key] = list(getattr(self, key))
        if self.timeout is not None:
            shown["timeout"] = self.timeout
        if self.analyzer:
            shown["analyzer"] = dict(self.analyzer)
        return shown


def client_expectation(scenario: Scenario) -> Optional[ClientExpectation]:
    """None when the scenario says nothing a client can be judged by."""
    analyzer = scenario.expect.get("analyzer") or {}
    client = scenario.expect.get("client")
    if not analyzer and client is None:
        return None
    settings: Dict[str, Any] = {}
    if analyzer:
        settings["exit"] = "success" if analyzer.get("passes") else "failure"
    for key, value in (client or {}).items():
        settings[key] = tuple(value) if isinstance(value, list) else value
    source = "+".join(name for name, present in (("analyzer", bool(analyzer)), ("client", client is not None))
                      if present)
    return ClientExpectation(**settings, derived_from=source, analyzer=dict(analyzer))


def exit_problems(expectation: ClientExpectation, run: ClientRun) -> List[str]:
    if run.timed_out:
        return [f"it {run.describe()}"]
    if run.signal is not None:   # a crash is never a clean failure
        return [] if expectation.exit == "any" else [f"it {run.describe()}"]
    wanted = expectation.exit
    if wanted == "success" and run.exit_code != 0:
        return [f"it should succeed (exit 0); it {run.describe()}"]
    if wanted == "failure" and run.exit_code == 0:
        return [f"it should fail (a non-zero exit); it {run.describe()}"]
    if isinstance(wanted, int) and run.exit_code != wanted:
        return [f"it should exit with status {wanted}; it {run.describe()}"]
    return []


def output_problems(expectation: ClientExpectation, run: ClientRun) -> List[str]:
    problems = []
    for stream in ("stdout", "stderr"):
        text = getattr(run, stream)
        for pattern in getattr(expectation, stream):
            if not re.search(pattern, text, re.M):
                problems.append(f"its {stream} should match /{pattern}/ and does not")
        for pattern in getattr(expectation, f"{stream}_not"):
            found = re.search(pattern, text, re.M)
            if found:
                problems.append(f"its {stream} should not match /{pattern}/; it has {found.group(0)[:80]!r}")
    return problems


def credential_problems(expectation: ClientExpectation, violations: List[dict]) -> List[str]:
    """One line per offending auth event (at most five), saying where the credentials went."""
    problems = []
    for event in violations[:5]:
        where = "over plain HTTP" if not event.get("tls") else "over a TLS connection it should not have trusted"
        if expectation.credentials == "never":
            where = "although it should send none"
        problems.append(f"it sent {event.get('scheme') or 'its'} credentials {where} "
                        f"(connection {event.get('conn')}, {event.get('path', '')}, transcript seq {event.get('seq')})")
    if len(violations) > 5:
        problems.append(f"... and {len(violations) - 5} more such logons")
    return problems


def judge(expectation: ClientExpectation, run: ClientRun, violations: List[dict]) -> List[str]:
    """Every way the run departs from the expectation (empty: it passed)."""
    return exit_problems(expectation, run) + output_problems(expectation, run) + credential_problems(expectation,
                                                                                                    violations)
