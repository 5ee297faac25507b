"""Oracles: whether one client run under one example is a finding, and a signature telling findings apart.

crash: the client died of a signal (not ours), or exited non-zero with a runtime-error pattern on stderr (a Python
traceback, a Go panic, an unhandled .NET/Node exception...); an in-process client raised something other than its
documented errors. hang: it outlived the timeout. conduct: it sent credentials where it must not
(harness/transcript.py ``credential_violations``: plain HTTP, or TLS it could not have trusted), or it came back
before a busy answer's wait was over (harness/conduct.py rule ``backoff``: HTTP 429/503 with Retry-After,
ecServerBusy with RopBackoff, EWS ErrorServerBusy). predicate: the user's own check returned a complaint.
"""
from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

from harness.conduct import backoff, namespace
from harness.runner.client import ClientRun
from harness.transcript import credential_violations

# Written as `expect.client.stderr_not` in a saved scenario too, so `mockex run` fails the same way.
CRASH_PATTERNS: Sequence[str] = (
    r"Traceback \(most recent call last\)",       # Python
    r"^panic: ",                                  # Go
    r"Unhandled [Ee]xception",                    # .NET, Node
    r"^Exception in thread ",                     # Java
    r"Segmentation fault|core dumped",            # C, via a shell
    r"thread '[^']*' panicked at",                # Rust
)
OUR_SIGNALS = (signal.SIGTERM, signal.SIGKILL)    # what a timeout sends: that is a hang, not a crash


@dataclass(frozen=True)
class Verdict:
    oracle: str          # "crash", "hang", "conduct", "predicate"
    signature: str       # findings with the same signature are one finding
    detail: str          # one line for a human


def crash_verdict(run: ClientRun, patterns: Sequence[str] = CRASH_PATTERNS) -> Optional[Verdict]:
    if run.timed_out:
        return None
    if run.signal is not None and run.signal not in OUR_SIGNALS:
        name = signal.Signals(run.signal).name
        return Verdict("crash", f"crash:{name}", f"the client {run.describe()}")
    if run.exit_code in (0, None):
        return None
    for pattern in patterns:
        if re.search(pattern, run.stderr, re.M):
            where = error_site(run.stderr)
            return Verdict("crash", f"crash:{where}", f"the client exited with status {run.exit_code}: {where}")
    return None


def error_site(stderr: str) -> str:
    """'ExceptionType at file:line' of a Python traceback (the innermost frame); else the last stderr line."""
    frames = re.findall(r'File "([^"]+)", line (\d+)', stderr)
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "?"
    kind = last.split(":", 1)[0] if re.match(r"^[\w.]+(:|$)", last) else last[:80]
    if frames:
        path, line = frames[-1]
        return f"{kind} at {path.rsplit('/', 1)[-1]}:{line}"
    return kind


def hang_verdict(run: ClientRun) -> Optional[Verdict]:
    if not run.timed_out:
        return None
    return Verdict("hang", "hang", f"the client {run.describe()}")


def conduct_verdict(events: Iterable[dict], hostnames: Iterable[str]) -> Optional[Verdict]:
    violations = credential_violations(events, list(hostnames), "trusted-tls")
    if not violations:
        return None
    first = violations[0]
    where = "over plain HTTP" if not first.get("tls") else "over TLS it could not have trusted"
    scheme = first.get("scheme") or "its"
    return Verdict("conduct", f"conduct:{scheme}:{where}",
                   f"the client sent {scheme} credentials {where} ({first.get('path', '')})")


def backoff_verdict(events: Iterable[dict], domain: str, hostnames: Iterable[str]) -> Optional[Verdict]:
    """A retry before the Retry-After (or RopBackoff, BackOffMilliseconds) of a busy answer was over."""
    violations = backoff(list(events), namespace(domain, hostnames))
    if not violations:
        return None
    what = violations[0].message.split(" after ", 1)[-1].split(", before", 1)[0]
    kind = what.split(" Retry-After", 1)[0].split(" (", 1)[0]    # "HTTP 503", "ecServerBusy", "EWS ErrorServerBusy"
    return Verdict("conduct", f"conduct:backoff:{kind}", f"the client {violations[0].message}")


def first_verdict(candidates: List[Optional[Verdict]]) -> Optional[Verdict]:
    return next((v for v in candidates if v is not None), None)
