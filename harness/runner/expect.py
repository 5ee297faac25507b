"""What a client must do in a scenario, and whether it did.

By default a scenario's ``expect.analyzer`` says what a correct client does: succeed (exit 0) where the analyzer
passes, fail cleanly (a non-zero exit, not a crash or a hang) where it fails at a step. In every scenario it keeps
the default client-conduct rules (harness/conduct.py: credentials only over TLS it could trust, no foreign hosts,
bounded https-only redirects, back-off honoured, no hammering after 401). ``expect.client`` overrides any of these,
key by key; ``expect.client.conduct`` requires or waives conduct rules.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from harness import conduct
from harness.runner.client import ClientRun
from harness.scenario import Scenario

CREDENTIAL_CONDUCT = ("credentials-untrusted-tls", "credentials-cleartext")   # what "trusted-tls" stands for
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
    conduct: Tuple[str, ...] = conduct.DEFAULT_RULES   # the conduct rules judged
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
        if self.conduct:
            parts.append("keep the conduct rules " + ", ".join(self.conduct))
        return ", ".join(parts)

    def to_json(self) -> Dict[str, Any]:
        shown: Dict[str, Any] = {"exit": self.exit, "credentials": self.credentials,
                                 "conduct": list(self.conduct), "derived_from": self.derived_from}
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
        if key != "conduct":
            settings[key] = tuple(value) if isinstance(value, list) else value
    chosen = (client or {}).get("conduct") or {}
    waive = list(chosen.get("waive", ()))
    if settings.get("credentials") in ("any", "never"):   # "never" is judged on its own, "any" judges nothing
        waive += list(CREDENTIAL_CONDUCT)
    settings["conduct"] = tuple(conduct.rules_for(chosen.get("require", ()), waive))
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
    """With ``credentials: never``, one line per auth event (at most five), saying where the credentials went
    (with the default ``trusted-tls`` the conduct rules say it, by name)."""
    if expectation.credentials != "never":
        return []
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


MAX_PER_RULE = 5   # problem lines per conduct rule; the JSON report lists every violation


def conduct_problems(found: List[conduct.Violation]) -> List[str]:
    """``[rule] what it did (transcript seq N)``, at most five lines per rule."""
    problems: List[str] = []
    shown: Dict[str, int] = {}
    for violation in found:
        shown[violation.rule] = shown.get(violation.rule, 0) + 1
        if shown[violation.rule] <= MAX_PER_RULE:
            problems.append(f"[{violation.rule}] {violation.message} (transcript seq {violation.seq})")
    problems += [f"[{rule}] ... and {count - MAX_PER_RULE} more" for rule, count in shown.items()
                 if count > MAX_PER_RULE]
    return problems


def judge(expectation: ClientExpectation, run: ClientRun, violations: List[dict],
          conduct_found: Optional[List[conduct.Violation]] = None) -> List[str]:
    """Every way the run departs from the expectation (empty: it passed)."""
    return (exit_problems(expectation, run) + output_problems(expectation, run)
            + credential_problems(expectation, violations) + conduct_problems(conduct_found or []))
