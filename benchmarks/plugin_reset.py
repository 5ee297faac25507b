"""Per-test reset cost of the pytest plugin's ``mockex_org`` (a fresh org state on the session's server through the
control plane: POST /reset, POST /apply per scenario, GET /info; POST /clear after the test).

1. Direct: one `mockex serve --control`, then --rounds of ``Org.begin(scenarios)`` + ``Org.clear()`` exactly as the
   fixture calls them, timed with time.perf_counter: no scenario, and one built-in (tls-expired). Medians and p90.
2. In pytest: a child pytest on a generated file of --tests tests (half bare, half ``mockex_org`` with a marker);
   setup + teardown durations from pytest's own reports; the first test (which starts the session server) is not
   counted. The figure is the median of the marked tests minus the median of the bare ones.

    python benchmarks/plugin_reset.py [--rounds 500] [--tests 200]

Loopback only; the server is stopped at the end; every wait is bounded.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from harness.pytest_plugin import Control, Org  # noqa: E402
from harness.testing import start_server  # noqa: E402

GENERATED = '''
import pytest

@pytest.mark.parametrize("n", range({half}))
def test_bare(n):
    pass

@pytest.mark.parametrize("n", range({half}))
@pytest.mark.mockex("tls-expired")
def test_org(n, mockex_org):
    pass
'''

COLLECT = '''
import json, os

def pytest_runtest_logreport(report):
    if report.when in ("setup", "teardown"):
        with open(os.environ["DURATIONS"], "a") as out:
            out.write(json.dumps([report.nodeid, report.when, report.duration]) + "\\n")
'''


def ms(values: List[float]) -> str:
    ordered = sorted(values)
    return (f"median {statistics.median(ordered) * 1000:.2f} ms, p90 {ordered[int(len(ordered) * 0.9)] * 1000:.2f} "
            f"ms (n={len(ordered)})")


def direct(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as state:
        served = start_server(state, "--control", "--quiet")
        try:
            org = Org(served, Control(served.endpoints["control"]), served.endpoints["seed"], dedicated=False)
            for label, scenarios in (("no scenario", []), ("tls-expired", ["tls-expired"])):
                times = []
                for _ in range(rounds):
                    began = time.perf_counter()
                    org.begin(scenarios)
                    if scenarios:
                        org.clear()
                    times.append(time.perf_counter() - began)
                print(f"direct  begin+clear, {label:<12} {ms(times[rounds // 10:])}")   # the first tenth warms up
            org.control.close()
        finally:
            served.stop()


def in_pytest(tests: int) -> None:
    with tempfile.TemporaryDirectory() as root:
        with open(os.path.join(root, "test_generated.py"), "w") as out:
            out.write(GENERATED.format(half=tests // 2))
        with open(os.path.join(root, "conftest.py"), "w") as out:
            out.write(COLLECT)
        durations = os.path.join(root, "durations.jsonl")
        env = dict(os.environ, PYTHONPATH=REPO, DURATIONS=durations)
        installed = any(e.value == "harness.pytest_plugin" for e in importlib.metadata.entry_points(group="pytest11"))
        load = [] if installed else ["-p", "harness.pytest_plugin"]
        subprocess.run([sys.executable, "-m", "pytest", "-q", *load, "-p", "no:xdist",
                        "-p", "no:cacheprovider", "test_generated.py"], cwd=root, env=env, check=True,
                       stdout=subprocess.DEVNULL, timeout=600)
        per_test: Dict[str, float] = {}
        with open(durations) as handle:
            for line in handle:
                nodeid, _, duration = json.loads(line)
                per_test[nodeid] = per_test.get(nodeid, 0.0) + duration
    bare = [d for node, d in per_test.items() if "test_bare" in node]
    org = [d for node, d in per_test.items() if "test_org" in node][1:]   # the first starts the session server
    print(f"pytest  setup+teardown, bare test          {ms(bare)}")
    print(f"pytest  setup+teardown, mockex_org+marker  {ms(org)}")
    print(f"pytest  per-test reset cost (median difference): "
          f"{(statistics.median(org) - statistics.median(bare)) * 1000:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--tests", type=int, default=200)
    args = parser.parse_args()
    direct(max(args.rounds, 10))
    in_pytest(max(args.tests, 4))


if __name__ == "__main__":
    main()
