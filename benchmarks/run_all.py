"""How long `mockex run --all --client probe` takes: the whole built-in library, each scenario against a fresh mock,
judged by its `expect`. Prints the wall time, the sum of the scenarios' own times (what the workers overlap) and the
slowest scenarios. The goal (issue: the runner): under 60 s for the ~104 scenarios on a 2-core machine.

Most of a scenario's time is waiting (a latency fault paces every answer, a timeout verdict is a step timeout that
runs out), not CPU, so more workers than cores still shorten the run.

    python benchmarks/run_all.py [--jobs 4] [--shard K/N]

Run it inside `unshare -n` (a private loopback) when other programs may hold ports on 127.0.0.x.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", "-j", type=int, default=4, help="scenarios in parallel (default 4)")
    parser.add_argument("--shard", help="only this shard, K/N")
    parser.add_argument("--slowest", type=int, default=8, help="how many of the slowest scenarios to list")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mockex-bench-") as directory:
        report = os.path.join(directory, "results.json")
        command = [sys.executable, "-m", "harness", "run", "--all", "--client", "probe", "-j", str(args.jobs),
                   "--json", report, "--quiet"] + (["--shard", args.shard] if args.shard else [])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [CHECKOUT, os.environ.get("PYTHONPATH")])))
        started = time.monotonic()
        done = subprocess.run(command, cwd=CHECKOUT, env=env, capture_output=True, text=True)
        wall = time.monotonic() - started
        if not os.path.exists(report):
            print(done.stdout + done.stderr, file=sys.stderr)
            return 1
        with open(report, encoding="utf-8") as handle:
            results = json.load(handle)
    scenarios = results["scenarios"]
    own = sum(s["seconds"] for s in scenarios)
    summary = results["summary"]
    print(f"mockex run --all --client probe -j {args.jobs}{' --shard ' + args.shard if args.shard else ''} "
          f"on {os.cpu_count()} cores")
    print(f"  {len(scenarios)} scenarios: {summary['passed']} passed, {summary['failed']} failed, "
          f"{summary['error']} errors, {summary['skipped']} skipped (exit status {done.returncode})")
    print(f"  wall time            {wall:6.1f} s   (goal: under 60 s)")
    print(f"  scenarios' own time  {own:6.1f} s   ({own / wall:.1f}x overlapped by {args.jobs} workers)")
    print(f"  slowest {args.slowest}:")
    for scenario in sorted(scenarios, key=lambda s: -s["seconds"])[:args.slowest]:
        print(f"    {scenario['seconds']:6.1f} s  {scenario['name']}")
    return 0 if done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
