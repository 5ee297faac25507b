"""Does a big fault library slow the happy path? Autodiscover POX throughput with 0 scenarios vs 1,000 loaded.

The 1,000 generated scenarios are all active at once and none applies to the measured request: each is scoped to
a user or host the request does not name (user-scoped Autodiscover errors, host-scoped TLS, latency, refused-port
and reset faults), plus unscoped ones on hooks the request never reaches (port 80, DNS). So they exercise every
hook lookup on the way (accept, tls_profile, write, http_request, autodiscover) without changing the answer.

Both servers run side by side; rounds alternate between them and the best round of each counts (the least
disturbed one). The goal (issue 4): the loaded server within 10 % of the bare one.

    python benchmarks/faults.py [--scenarios 1000] [--requests 2000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import basic_auth, drive, start_mockex, stop, write_library  # noqa: E402 - the benchmarks' shared pieces


def serve(workdir: str, name: str, scenario_paths: list):
    return start_mockex(os.path.join(workdir, name), scenario_paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=60, help="cap per round")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="mockex-bench-faults-")
    library = os.path.join(workdir, "library")
    os.makedirs(library)
    paths = write_library(library, args.scenarios)
    servers = {}
    try:
        servers["bare"] = serve(workdir, "bare", [])
        servers["loaded"] = serve(workdir, "loaded", paths)
        rates = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, (_, endpoints) in servers.items():
                done, seconds = drive(endpoints["https"]["port"], endpoints["ca_file"], args.requests,
                                      args.max_seconds, basic_auth(endpoints))
                rates[name].append(done / seconds)
        loaded_faults = len(servers["loaded"][1]["faults"])
    finally:
        for process, _ in servers.values():
            stop(process)
    print(f"{'server':<34} {'best req/s':>10} {'median req/s':>13}")
    for name, label in (("bare", "mockex, no scenarios"), ("loaded", f"mockex, {args.scenarios} scenarios")):
        ordered = sorted(rates[name])
        print(f"{label:<34} {ordered[-1]:>10.0f} {ordered[len(ordered) // 2]:>13.0f}")
    ratio = max(rates["loaded"]) / max(rates["bare"])
    print(f"{loaded_faults} faults active; loaded/bare throughput {ratio:.3f} "
          f"({'within' if ratio >= 0.9 else 'NOT within'} the 10 % budget)")


if __name__ == "__main__":
    main()
