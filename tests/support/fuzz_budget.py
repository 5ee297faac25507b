"""The fuzz profile's budget: every property test runs its own example count (MOCKEX_FUZZ_SCALE times the count it
asks for) or until MOCKEX_FUZZ_SECONDS have passed, whichever comes first, and says how many examples it ran.

Hypothesis has no time budget, so under the fuzz profile a property test is run in rounds (conftest.py's
``pytest_pyfunc_call``): each round is one Hypothesis run of a tenth of the count, with fresh examples and the
example database replayed first, and no round starts once the seconds are spent. The clock only decides how many
examples run, never whether the test passes. The rounds' statistics are merged, so ``--hypothesis-show-statistics``
shows the whole run, and a summary line per test ends the session (``summarize``).
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import is_hypothesis_test, settings
from hypothesis.statistics import collector

ROUNDS = 10                      # a round overshoots the time budget by at most a tenth of the count
DEFAULT_SECONDS = 60.0           # per property test, when MOCKEX_FUZZ_SECONDS is not set
PROPERTY = "fuzz"                # the item's user property holding its run: examples, rounds, seconds, why it stopped


def time_budget() -> Optional[float]:
    """Seconds each property test may take under the fuzz profile; None under any other profile."""
    if os.environ.get("HYPOTHESIS_PROFILE") != "fuzz":
        return None
    return float(os.environ.get("MOCKEX_FUZZ_SECONDS", DEFAULT_SECONDS))


def run_in_rounds(item: pytest.Function) -> Optional[bool]:
    """Run ``item`` (a @given test) in rounds within the budget; None (pytest calls it as usual) when there is no
    budget or the item is not a property test."""
    seconds = time_budget()
    test = getattr(item, "obj", None)
    if seconds is None or test is None or not is_hypothesis_test(test):
        return None
    function = getattr(test, "__func__", test)
    own: settings = function._hypothesis_internal_use_settings
    wanted = own.max_examples
    per_round = max(1, -(-wanted // ROUNDS))
    arguments = {name: item.funcargs[name] for name in item._fixtureinfo.argnames}
    report = collector.value      # the pytest plugin's: it gets the merged statistics of every round
    rounds: List[Dict[str, Any]] = []
    ran, started, stopped = 0, time.monotonic(), ""
    try:
        while not stopped:
            asked = min(per_round, wanted - ran)
            function._hypothesis_internal_use_settings = settings(own, max_examples=asked)
            reported = len(rounds)
            with collector.with_value(rounds.append):
                test(**arguments)
            this_round = _valid_examples(rounds[-1]) if len(rounds) > reported else asked
            ran += this_round
            if ran >= wanted:
                stopped = f"all {wanted} examples"
            elif this_round < asked:     # the input space is used up, or assume() refused too much
                stopped = rounds[-1].get("stopped-because", "round ended early") if rounds else "round ended early"
            elif time.monotonic() - started >= seconds:
                stopped = f"time budget of {seconds:g} s spent"
    finally:
        function._hypothesis_internal_use_settings = own
        elapsed = time.monotonic() - started
        if report is not None and rounds:
            report(merged_statistics(rounds, stopped or "a round failed"))
        item.user_properties.append((PROPERTY, {"examples": ran, "wanted": wanted, "rounds": len(rounds),
                                                "seconds": round(elapsed, 1), "stopped": stopped or "failed"}))
    return True


def _valid_examples(statistics: Dict[str, Any]) -> int:
    return sum(case.get("status") == "valid" for key, phase in statistics.items() if key.endswith("-phase")
               for case in phase.get("test-cases", ()))


def merged_statistics(rounds: List[Dict[str, Any]], stopped: str) -> Dict[str, Any]:
    """One Hypothesis statistics dict for several runs of a test: phases' test cases and durations added up."""
    merged: Dict[str, Any] = {}
    for statistics in rounds:
        for key, value in statistics.items():
            if not key.endswith("-phase"):
                merged[key] = value
                continue
            phase = merged.setdefault(key, {"duration-seconds": 0.0, "test-cases": [], "distinct-failures": 0,
                                            "shrinks-successful": 0})
            phase["duration-seconds"] += value.get("duration-seconds", 0.0)
            phase["test-cases"] = phase["test-cases"] + list(value.get("test-cases", ()))
            phase["distinct-failures"] = max(phase["distinct-failures"], value.get("distinct-failures", 0))
            phase["shrinks-successful"] += value.get("shrinks-successful", 0)
    merged["stopped-because"] = f"{stopped} ({len(rounds)} round{'s' * (len(rounds) != 1)})"
    return merged


def summarize(terminalreporter: Any) -> None:
    """One line per property test run under the budget: examples run, rounds, seconds and why it stopped."""
    lines = []
    for outcome in ("passed", "failed", "xfailed", "xpassed", "error"):
        for report in terminalreporter.stats.get(outcome, ()):
            for name, run in getattr(report, "user_properties", ()):
                if name == PROPERTY and report.when == "call":
                    lines.append((report.nodeid, f"{run['examples']:>7} of {run['wanted']:<7} {run['rounds']:>2} "
                                                 f"rounds {run['seconds']:>6} s  {outcome:<7} {report.nodeid}  "
                                                 f"({run['stopped']})"))
    if lines:
        terminalreporter.section("fuzz budget: examples run per property test")
        for _, line in sorted(lines):
            terminalreporter.write_line(line)
