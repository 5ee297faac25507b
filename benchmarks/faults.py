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
import base64
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from autodiscover import drive, start  # noqa: E402  (the sibling benchmark: server start-up and the POX client)

# (share of the library, scenario fault line with {i} for the scenario's index)
MIX = [
    (0.40, "autodiscover.error-code: {{code: 500, user: user{i}@contoso.test}}"),
    (0.15, "tls.expired: {{host: tls{i}.contoso.test}}"),
    (0.15, "network.latency: {{host: slow{i}.contoso.test, ms: 2000}}"),
    (0.10, "network.reset: {{host: reset{i}.contoso.test, when: mid-response}}"),
    (0.05, "network.refused: {{host: closed{i}.contoso.test}}"),
    (0.10, "network.refused: {{port: 80}}"),
    (0.05, "dns.nxdomain: {{host: gone{i}.contoso.test}}"),
]


def write_library(directory: str, count: int) -> list:
    """``count`` scenario files, none of which touches the measured request; returns their paths."""
    lines = [line for share, line in MIX for _ in range(round(share * count))][:count]
    paths = []
    for index, line in enumerate(lines):
        path = os.path.join(directory, f"bench-{index:04d}.yaml")
        with open(path, "w", encoding="utf-8") as out:
            out.write(f"name: bench-{index:04d}\nfaults:\n  - {line.format(i=index)}\n"
                      "expect:\n  analyzer: {passes: true}\n")
        paths.append(path)
    return paths


def serve(workdir: str, name: str, scenario_paths: list):
    state = os.path.join(workdir, name)
    os.makedirs(state)
    extra = [arg for path in scenario_paths for arg in ("--scenario", path)]
    process = start([sys.executable, "-m", "harness", "serve", "--state-dir", state, "--https-port", "0",
                     "--http-port", "0", "--dns-port", "0", "--quiet", *extra], os.path.join(state, "endpoints.json"))
    with open(os.path.join(state, "endpoints.json"), encoding="utf-8") as handle:
        return process, json.load(handle)


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
                alice = next(u for u in endpoints["users"] if u["username"] == "alice")
                basic = "Basic " + base64.b64encode(f"{alice['upn']}:{alice['password']}".encode()).decode()
                done, seconds = drive(endpoints["https"]["port"], endpoints["ca_file"], args.requests,
                                      args.max_seconds, basic)
                rates[name].append(done / seconds)
        loaded_faults = len(servers["loaded"][1]["faults"])
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait()
    print(f"{'server':<34} {'best req/s':>10} {'median req/s':>13}")
    for name, label in (("bare", "mockex, no scenarios"), ("loaded", f"mockex, {args.scenarios} scenarios")):
        ordered = sorted(rates[name])
        print(f"{label:<34} {ordered[-1]:>10.0f} {ordered[len(ordered) // 2]:>13.0f}")
    ratio = max(rates["loaded"]) / max(rates["bare"])
    print(f"{loaded_faults} faults active; loaded/bare throughput {ratio:.3f} "
          f"({'within' if ratio >= 0.9 else 'NOT within'} the 10 % budget)")


if __name__ == "__main__":
    main()
