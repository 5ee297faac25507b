"""Outlook Anywhere (RPC over HTTP) cost of `mockex serve`: throughput and memory per virtual connection.

Needs root: impacket's RPC-over-HTTP client only talks to port 443, so the server listens on <--listen>:443
(run as root, or inside `unshare -rn` after `ip link set lo up`). Loopback only; every phase is bounded by a count
and by --max-seconds.

1. Memory: the server's VmRSS (/proc/<pid>/status) with 0 virtual connections (after one warm-up connection), then
   with --idle virtual connections held open by raw sockets (TLS, Basic auth, RPC_OUT_DATA + CONN/A1 and
   RPC_IN_DATA + CONN/B1, waiting for CONN/A3 and CONN/C2), and the cost per connection; then, on a fresh server,
   the same for twice as many idle HTTPS keep-alive connections, to separate the TLS/HTTP share from the RPC
   layer's. RLIMIT_NOFILE is raised for this process and the servers it starts.
2. Throughput with impacket's ncacn_http client, as exchanger.py uses it: virtual connection + NSPI bind (NTLM at
   --level) + NspiBind + NspiQueryRows (the GAL, 50 rows) + NspiUnbind + disconnect per cycle, then NspiQueryRows
   calls on one bound connection; with the server's CPU time per cycle and per call (utime+stime of the server
   process) next to the CPU impacket's client spends on the same exchange (time.process_time of this process, where
   the client runs), and their ratio.

    sudo python benchmarks/rpc.py [--phase memory|throughput] [--idle 1000] [--cycles 100] [--calls 1000]
                                  [--max-seconds 120]

The raw-socket client of phase 1 is tests/support/rpchttp.py's: it needs the ``test`` extra, as the tests do.
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import socket
import sys
import time
from typing import Callable, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from _common import cpu_seconds, serving_on_443  # noqa: E402 - the benchmarks' shared process helpers
from impacket.dcerpc.v5 import nspi, rpcrt  # noqa: E402
from impacket.dcerpc.v5.transport import DCERPCTransportFactory  # noqa: E402
from impacket.http import AUTH_BASIC  # noqa: E402

from tests.support.rpchttp import ORG, open_virtual_connection, tls_connect  # noqa: E402 - the raw client

ORG_MAIL_HOST = ORG.mail_host.encode()
GAL_TAGS = [0x3001001F, 0x39FE001F, 0x0FFF0102]      # PR_DISPLAY_NAME, PR_SMTP_ADDRESS, PR_ENTRYID


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def transcript_lines(path: str) -> int:
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def raise_file_limit(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(needed, soft), max(hard, needed)))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# `python -m harness` under cProfile timed by CPU (process_time), not wall clock: on a shared machine the wall clock
# charges idle polls and preemption to whatever runs.
PROFILED_SERVER = """
import cProfile, runpy, sys, time
out, sys.argv = sys.argv[1], ["harness"] + sys.argv[2:]
profiler = cProfile.Profile(time.process_time)
profiler.enable()
try:
    runpy.run_module("harness", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    profiler.disable()
    profiler.dump_stats(out)
"""


def serving(listen: str, profile: Optional[str] = None, framing: str = "exchange2013"):
    """A fresh `mockex serve` on <listen>:443: (endpoints.json, pid); with ``profile``, run under cProfile (CPU
    time), whose stats land in that file when the server ends (SIGTERM stops its reactor cleanly)."""
    command = ["-c", PROFILED_SERVER, os.path.abspath(profile)] if profile else ["-m", "harness"]
    return serving_on_443(listen, "mockex-rpc-bench-", ["--rpc-out-framing", framing], command=command)


# ---- memory ---------------------------------------------------------------------------------------------------
def idle_https_connection(host: str, ca_file: str):
    """A TLS connection to the site after one answered request (a 401), kept alive as IIS keeps it."""
    sock = tls_connect(host, ca_file, timeout=30)
    sock.sendall(b"GET /rpc/rpcproxy.dll HTTP/1.1\r\nHost: " + ORG_MAIL_HOST + b"\r\n\r\n")
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(65536)
    head, _, body = response.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return sock


def held_open(endpoints: dict, pid: int, count: int, max_seconds: float, open_one: Callable[[], object]) -> dict:
    """Server VmRSS with nothing open (after one warm-up), then with up to ``count`` connections from open_one."""
    open_one().close()                     # warm-up: the code paths are loaded
    time.sleep(0.5)
    figures = {"baseline": rss_kib(pid), "fds_before": open_files(pid),
               "events_before": transcript_lines(endpoints["transcript"])}
    held, started, cpu0 = [], time.perf_counter(), cpu_seconds(pid)
    try:
        while len(held) < count and time.perf_counter() - started < max_seconds:
            held.append(open_one())
        figures["seconds"], figures["cpu"] = time.perf_counter() - started, cpu_seconds(pid) - cpu0
        time.sleep(0.5)
        figures.update(loaded=rss_kib(pid), fds=open_files(pid), held=len(held),
                       events=transcript_lines(endpoints["transcript"]) - figures["events_before"])
    finally:
        for connection in held:
            connection.close()
    figures["each"] = (figures["loaded"] - figures["baseline"]) / max(len(held), 1)
    return figures


def memory(args) -> None:
    with serving(args.listen, framing=args.rpc_out_framing) as (endpoints, pid):
        alice = next(u for u in endpoints["users"] if u["username"] == "alice")
        host, ca_file, rng = endpoints["https"]["host"], endpoints["ca_file"], random.Random(1)
        vcs = held_open(endpoints, pid, args.idle, args.max_seconds, lambda: open_virtual_connection(
            host, ca_file, "alice", alice["password"], rng, timeout=30))
        time.sleep(1.0)
        after = rss_kib(pid)
    n = vcs["held"]
    print(f"idle virtual connections: {n} opened in {vcs['seconds']:.1f} s ({n / vcs['seconds']:.0f}/s, server CPU "
          f"{vcs['cpu'] * 1e3 / max(n, 1):.1f} ms each), server fds {vcs['fds_before']} -> {vcs['fds']}")
    print(f"server VmRSS: {vcs['baseline']} KiB with 0 connections, {vcs['loaded']} KiB with {n} idle virtual "
          f"connections -> {vcs['each']:.1f} KiB per virtual connection ({vcs['events'] / max(n, 1):.0f} transcript "
          f"events each, written to the transcript file); {after} KiB after closing them all (CPython keeps freed "
          f"memory in its arenas)")
    with serving(args.listen, framing=args.rpc_out_framing) as (endpoints, pid):
        host, ca_file = endpoints["https"]["host"], endpoints["ca_file"]
        plain = held_open(endpoints, pid, 2 * n, args.max_seconds, lambda: idle_https_connection(host, ca_file))
    print(f"for comparison, a fresh server with {plain['held']} idle HTTPS keep-alive connections (two per virtual "
          f"connection): {plain['baseline']} -> {plain['loaded']} KiB, {plain['each']:.1f} KiB per connection, "
          f"so the RPC layer adds {vcs['each'] - 2 * plain['each']:.1f} KiB per virtual connection")


# ---- throughput -------------------------------------------------------------------------------------------------
def nspi_session(host: str, password: str, level: int, http_auth: str):
    transport = DCERPCTransportFactory(f"ncacn_http:EX01[6004,RpcProxy={host}:443]")
    transport.set_credentials("alice", password, "CONTOSO")
    if http_auth == "basic":
        transport.set_auth_type(AUTH_BASIC)
    dce = transport.get_dce_rpc()
    if level != rpcrt.RPC_C_AUTHN_LEVEL_NONE:
        dce.set_credentials("alice", password, "CONTOSO")
        dce.set_auth_level(level)
    dce.connect()
    dce.bind(nspi.MSRPC_UUID_NSPI)
    stat = nspi.STAT()
    stat["CodePage"] = nspi.CP_TELETEX
    return dce, nspi.hNspiBind(dce, stat)["contextHandle"]


def query_gal(dce, handle) -> int:
    stat = nspi.STAT()
    stat["CodePage"] = nspi.CP_TELETEX
    rows = nspi.hNspiQueryRows(dce, handle, pStat=stat, Count=50, pPropTags=GAL_TAGS)["ppRows"]["cRows"]
    if rows == 0:
        raise SystemExit("NspiQueryRows returned no rows")
    return rows


def throughput(args) -> None:
    with serving(args.listen, args.server_profile, args.rpc_out_framing) as (endpoints, pid):
        measure_throughput(endpoints, pid, args)


def measure_throughput(endpoints: dict, pid: int, args) -> None:
    alice = next(u for u in endpoints["users"] if u["username"] == "alice")
    host = endpoints["https"]["host"]

    def cycle():
        dce, handle = nspi_session(host, alice["password"], args.level, args.http_auth)
        query_gal(dce, handle)
        nspi.hNspiUnbind(dce, handle)
        dce.get_rpc_transport().disconnect()

    cycle()                                # warm-up
    cpu0, client0, done, started = cpu_seconds(pid), time.process_time(), 0, time.perf_counter()
    while done < args.cycles and time.perf_counter() - started < args.max_seconds:
        cycle()
        done += 1
    elapsed, cpu, client = time.perf_counter() - started, cpu_seconds(pid) - cpu0, time.process_time() - client0
    print(f"virtual connection + bind (NTLM level {args.level}, HTTP {args.http_auth}) + NspiBind + NspiQueryRows "
          f"+ NspiUnbind: {done} cycles in {elapsed:.1f} s = {done / elapsed:.1f}/s, "
          f"server CPU {cpu * 1e3 / max(done, 1):.2f} ms per cycle, impacket client CPU "
          f"{client * 1e3 / max(done, 1):.2f} ms per cycle (server/client {cpu / max(client, 1e-9):.2f})")

    dce, handle = nspi_session(host, alice["password"], args.level, args.http_auth)
    query_gal(dce, handle)                 # warm-up
    cpu0, client0, calls, started = cpu_seconds(pid), time.process_time(), 0, time.perf_counter()
    while calls < args.calls and time.perf_counter() - started < args.max_seconds:
        query_gal(dce, handle)
        calls += 1
    elapsed, cpu, client = time.perf_counter() - started, cpu_seconds(pid) - cpu0, time.process_time() - client0
    nspi.hNspiUnbind(dce, handle)
    dce.get_rpc_transport().disconnect()
    print(f"NspiQueryRows on one bound connection: {calls} calls in {elapsed:.1f} s = {calls / elapsed:.0f}/s, "
          f"server CPU {cpu * 1e6 / max(calls, 1):.0f} us per call, impacket client CPU "
          f"{client * 1e6 / max(calls, 1):.0f} us per call (server/client {cpu / max(client, 1e-9):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="127.0.4.1",
                        help="loopback address for the server's :443 (default 127.0.4.1, clear of the test suite's "
                             "127.0.0.x)")
    parser.add_argument("--idle", type=int, default=1000, help="idle virtual connections to hold open (default 1000)")
    parser.add_argument("--cycles", type=int, default=100, help="connect+bind+query cycles (default 100)")
    parser.add_argument("--calls", type=int, default=1000, help="NspiQueryRows calls on one connection (default 1000)")
    parser.add_argument("--level", type=int, default=rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY, choices=(1, 2, 5, 6),
                        help="RPC auth level of the throughput phase (default 6, as exchanger.py)")
    parser.add_argument("--http-auth", choices=("ntlm", "basic"), default="ntlm")
    parser.add_argument("--rpc-out-framing", choices=("exchange2013", "legacy"), default="exchange2013",
                        help="the server's OUT channel persona (default exchange2013: chunked)")
    parser.add_argument("--phase", choices=("memory", "throughput"), action="append",
                        help="run only this phase (repeatable; default: both)")
    parser.add_argument("--server-profile", metavar="FILE",
                        help="run the throughput phase's server under cProfile and write its stats to FILE (the CPU "
                             "figures then include the profiler's overhead)")
    parser.add_argument("--max-seconds", type=float, default=120, help="time bound of each phase (default 120)")
    args = parser.parse_args()
    if not socket.inet_aton(args.listen)[0] == 127:
        raise SystemExit("--listen must be a loopback address")

    limit = raise_file_limit(4 * args.idle + 256)
    print(f"RLIMIT_NOFILE {limit}; server on {args.listen}:443")
    phases = args.phase or ["memory", "throughput"]
    if "memory" in phases:
        memory(args)
    if "throughput" in phases:
        throughput(args)


if __name__ == "__main__":
    main()
