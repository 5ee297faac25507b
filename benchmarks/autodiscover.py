"""Autodiscover throughput: N authenticated POX requests over one keep-alive TLS connection.

Prints requests/s and server CPU µs/request for mockex, next to a bare Twisted web resource that serves the same
response bytes and headers over the same TLS certificate in the same run (the ratio is the figure to watch, not the
absolute numbers). Loopback only; bounded by --requests and --max-seconds.

    python benchmarks/autodiscover.py [--requests 2000] [--auth basic|ntlm] [--scenarios N]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402 - the benchmarks' shared pieces
    basic_auth,
    capture_answer,
    cpu_seconds,
    drive,
    leaf_files,
    start_bare,
    start_mockex,
    stop,
    user,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--max-seconds", type=float, default=60)
    parser.add_argument("--auth", choices=("basic", "ntlm"), default="basic")
    parser.add_argument("--scenario", action="append", default=[], help="extra `mockex serve --scenario` arguments")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="mockex-bench-")
    state = os.path.join(workdir, "state")
    mock, endpoints = start_mockex(state, args.scenario)
    try:
        basic = basic_auth(endpoints)
        ntlm = ("alice", user(endpoints)["password"], "CONTOSO") if args.auth == "ntlm" else None
        drive(endpoints["https"]["port"], endpoints["ca_file"], 50, 10, basic, ntlm)  # warm up
        answer = capture_answer(endpoints, basic)  # the exact bytes mockex answers, for the bare server to serve
        cpu0 = cpu_seconds(mock.pid)
        done, elapsed = drive(endpoints["https"]["port"], endpoints["ca_file"], args.requests, args.max_seconds,
                              basic, ntlm)
        mock_cpu = cpu_seconds(mock.pid) - cpu0
    finally:
        stop(mock)

    cert, key = leaf_files(state)
    bare, port = start_bare(os.path.join(workdir, "bare"), answer, cert, key)
    try:
        drive(port, endpoints["ca_file"], 50, 10, None)
        cpu0 = cpu_seconds(bare.pid)
        bare_done, bare_elapsed = drive(port, endpoints["ca_file"], args.requests, args.max_seconds, None)
        bare_cpu = cpu_seconds(bare.pid) - cpu0
    finally:
        stop(bare)

    rows = [("mockex (POX, %s auth)" % args.auth, done, elapsed, mock_cpu),
            ("bare twisted.web, same bytes", bare_done, bare_elapsed, bare_cpu)]
    print(f"{'server':<34} {'requests':>8} {'req/s':>9} {'server CPU us/req':>18}")
    for name, count, seconds, cpu in rows:
        print(f"{name:<34} {count:>8} {count / seconds:>9.0f} {cpu * 1e6 / max(count, 1):>18.0f}")
    print(f"ratio mockex/bare: throughput {(done / elapsed) / (bare_done / bare_elapsed):.2f}x, "
          f"CPU per request {(mock_cpu / max(done, 1)) / max(bare_cpu / max(bare_done, 1), 1e-9):.2f}x")


if __name__ == "__main__":
    main()
