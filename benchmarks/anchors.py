"""mockex next to its anchors: server CPU per request and requests/s of the same Autodiscover answer.

Servers, all on 127.0.0.1 (ephemeral or free ports), all over TLS with mockex's own RSA-2048 chain (leaf +
intermediate), all answering the 2006 POX request for alice with mockex's exact answer (body and headers, Date aside):
  mockex            `mockex serve` (and a second one with --scenarios generated fault scenarios loaded, none of
                    which applies to the request: the library of benchmarks/faults.py)
  bare twisted.web  a resource that returns the captured bytes: the floor of any Twisted server. Its TLS is
                    mockex's own (harness.pki.configure_server_tls at mockex's default ceiling: TLS 1.2 at most,
                    SChannel's 2012 R2 suite order, ECDHE on P-256), so both pay the same handshake and records
  mountebank        an https imposter (key/cert PEM), stub on method + path + Authorization; its response carries
                    `Connection: keep-alive` too, as mountebank otherwise closes every connection
  WireMock          the standalone jar run by java with a PKCS#12 keystore made from the PEM, stub on method + path
                    + Authorization, --no-request-journal --disable-request-logging, no chunked encoding
mountebank and WireMock keep their own stacks' TLS defaults (Node's, Java's; TLS 1.3 where offered): the lines
before the table say what each server negotiated. They come from npm into a cache directory: run
`benchmarks/setup.sh` once (it also installs wrk with apt-get); an anchor that is not installed is skipped with a
line saying so.

Method: server CPU per request = utime+stime of the server process (/proc; for WireMock the java process) over a
bounded run, divided by the answers completed in it; rounds interleave the servers (each round starts one server
later) and the table gives medians over --rounds rounds, after a warm-up run of each (longer for the JVM). Load:
  wrk -t1 -c32 -d<duration>, HTTPS keep-alive, POST with Basic auth (Debian package wrk; without it, or with
  --load builtin, the built-in generator of benchmarks/_load.py does the same).
  The built-in generator also measures what wrk cannot: a new connection per request with a full TLS handshake
  (wrk resumes its TLS session on reconnect), and NTLM (connection-bound: each of the 32 connections authenticates
  once before the clock starts). Those rows compare with bare twisted.web under the same generator.
The ratio column is mockex's CPU per request over that row's (below 1: mockex spends less). Targets: mockex <= 0.8x
the better of mountebank and WireMock, <= 1.0x bare twisted.web; with a full handshake per request <= 1.1x.

    benchmarks/setup.sh                                  # once: wrk, mountebank, WireMock into ~/.cache/mockex-bench
    python benchmarks/anchors.py [--rounds 3] [--duration 10] [--connections 32] [--scenarios 1000]
    python benchmarks/anchors.py --quick                 # smoke run: 2-second runs, one round
    python benchmarks/anchors.py --only handshake        # only the full-handshake rows (mockex, bare twisted.web)
"""
from __future__ import annotations

import argparse
import base64
import glob
import http.client
import json
import os
import platform
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402 - the benchmarks' shared pieces
    POX_HOST,
    POX_PATH,
    POX_REQUEST,
    Answer,
    basic_auth,
    capture_answer,
    cpu_seconds,
    leaf_files,
    median,
    ntlm_handshake,
    start_bare,
    start_mockex,
    stop,
    user,
    write_library,
)
from _load import LoadResult, request_bytes, run_builtin, run_wrk, wrk_path  # noqa: E402

DEFAULT_CACHE = os.environ.get("MOCKEX_BENCH_CACHE", os.path.expanduser("~/.cache/mockex-bench"))
KEYSTORE_PASSWORD = "mockex-bench"


@dataclass
class Server:
    label: str
    port: int
    pid: int                         # the process whose CPU counts
    process: subprocess.Popen
    version: str = ""


@dataclass
class Row:
    label: str
    server: str                      # key into the servers
    load: str                        # "wrk" | "builtin"
    mode: str = "keep-alive"         # "keep-alive" | "new TLS connection"
    auth: str = "basic"              # "basic" | "ntlm"
    subject: bool = False            # a mockex row: the others' ratio is taken against the subject of their group
    cpu_per_request: List[float] = field(default_factory=list)
    rates: List[float] = field(default_factory=list)
    answer_sizes: List[float] = field(default_factory=list)
    errors: int = 0
    resumed: int = 0

    @property
    def group(self):
        return (self.load, self.mode)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(check: Callable[[], bool], process: subprocess.Popen, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s")


def answer_headers(answer: Answer) -> Dict[str, str]:
    return {k: v for k, v in answer.headers}


# ---- anchors --------------------------------------------------------------------------------------------------
def mountebank_path(cache: str) -> Optional[str]:
    path = os.path.join(cache, "node_modules", "mountebank", "bin", "mb")
    return path if os.path.exists(path) else None


def start_mountebank(cache: str, workdir: str, answer: Answer, basic: str, cert: str, key: str) -> Server:
    admin = free_port()
    os.makedirs(workdir, exist_ok=True)
    process = subprocess.Popen(["node", mountebank_path(cache), "start", "--port", str(admin), "--localOnly",
                                "--nologfile", "--loglevel", "warn", "--pidfile", os.path.join(workdir, "mb.pid")],
                               cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{admin}/", timeout=2).status == 200,
                   process, "mountebank")
        headers = {**answer_headers(answer), "Connection": "keep-alive"}
        imposter = {
            "protocol": "https", "host": "127.0.0.1", "key": open(key).read(), "cert": open(cert).read(),
            "stubs": [{"predicates": [{"equals": {"method": "POST", "path": POX_PATH,
                                                  "headers": {"Authorization": basic}}}],
                       "responses": [{"is": {"statusCode": answer.status, "headers": headers,
                                             "body": answer.body.decode("utf-8")}}]}],
        }
        created = urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{admin}/imposters", data=json.dumps(imposter).encode(),
            headers={"Content-Type": "application/json"}), timeout=30)
        port = json.load(created)["port"]
    except Exception:
        stop(process)
        raise
    version = json.load(open(os.path.join(cache, "node_modules", "mountebank", "package.json")))["version"]
    return Server(f"mountebank {version}", port, process.pid, process, version)


def wiremock_jar(cache: str) -> Optional[str]:
    jars = sorted(glob.glob(os.path.join(cache, "node_modules", "wiremock", "build", "wiremock-standalone-*.jar")))
    return jars[-1] if jars else None


def pkcs12_keystore(cert: str, key: str, target: str) -> None:
    """WireMock reads a keystore, not PEM: the same key and chain as PKCS#12."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12
    chain = x509.load_pem_x509_certificates(open(cert, "rb").read())
    private = serialization.load_pem_private_key(open(key, "rb").read(), password=None)
    data = pkcs12.serialize_key_and_certificates(b"mockex", private, chain[0], chain[1:],
                                                 serialization.BestAvailableEncryption(KEYSTORE_PASSWORD.encode()))
    with open(target, "wb") as out:
        out.write(data)


def start_wiremock(cache: str, workdir: str, answer: Answer, basic: str, cert: str, key: str) -> Server:
    jar = wiremock_jar(cache)
    mappings = os.path.join(workdir, "mappings")
    os.makedirs(mappings, exist_ok=True)
    keystore = os.path.join(workdir, "keystore.p12")
    pkcs12_keystore(cert, key, keystore)
    stub = {"request": {"method": "POST", "urlPath": POX_PATH, "headers": {"Authorization": {"equalTo": basic}}},
            "response": {"status": answer.status, "headers": answer_headers(answer),
                         "base64Body": base64.b64encode(answer.body).decode()}}
    with open(os.path.join(mappings, "pox.json"), "w", encoding="utf-8") as out:
        json.dump(stub, out)
    port = free_port()
    process = subprocess.Popen(["java", "-jar", jar, "--disable-http", "--bind-address", "127.0.0.1",
                                "--https-port", str(port), "--https-keystore", keystore, "--keystore-type", "PKCS12",
                                "--keystore-password", KEYSTORE_PASSWORD, "--key-manager-password", KEYSTORE_PASSWORD,
                                "--root-dir", workdir, "--no-request-journal", "--disable-request-logging",
                                "--disable-banner", "--use-chunked-encoding", "never"],
                               cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    unverified = ssl._create_unverified_context()
    try:
        wait_until(lambda: urllib.request.urlopen(f"https://127.0.0.1:{port}/__admin/health", context=unverified,
                                                  timeout=2).status == 200, process, "WireMock")
    except Exception:
        stop(process)
        raise
    version = os.path.basename(jar)[len("wiremock-standalone-"):-len(".jar")]
    return Server(f"WireMock {version}", port, process.pid, process, version)


# ---- measuring ------------------------------------------------------------------------------------------------
def one_run(row: Row, server: Server, seconds: float, connections: int, basic: str, alice: dict) -> LoadResult:
    headers = {"Host": POX_HOST, "Content-Type": "text/xml"}
    if row.auth == "basic":
        headers["Authorization"] = basic
    if row.mode != "keep-alive":
        headers["Connection"] = "close"
    if row.load == "wrk":
        return run_wrk(server.port, POX_PATH, headers, POX_REQUEST, connections=connections, seconds=seconds)
    prepare = None
    if row.auth == "ntlm":
        def prepare(sock: ssl.SSLSocket) -> None:
            conn = http.client.HTTPSConnection("127.0.0.1", server.port)
            conn.sock = sock  # http.client speaks over the connection we made; it stays ours afterwards
            base = {"Host": POX_HOST, "Content-Type": "text/xml"}
            authorization = ntlm_handshake(conn, base, "alice", alice["password"], "CONTOSO")
            conn.request("POST", POX_PATH, body=POX_REQUEST, headers={**base, "Authorization": authorization})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"NTLM authentication failed: {response.status}")
    return run_builtin(server.port, request_bytes("POST", POX_PATH, headers, POX_REQUEST), connections=connections,
                       seconds=seconds, new_connection_per_request=row.mode != "keep-alive", prepare=prepare)


def measure(row: Row, server: Server, seconds: float, connections: int, basic: str, alice: dict, record=True):
    before = cpu_seconds(server.pid)
    result = one_run(row, server, seconds, connections, basic, alice)
    spent = cpu_seconds(server.pid) - before
    if record:
        row.errors += result.errors
        row.resumed += result.resumed
        if result.requests:
            row.cpu_per_request.append(spent * 1e6 / result.requests)
            row.rates.append(result.requests / max(result.seconds, 1e-9))
            row.answer_sizes.append(result.answer_bytes / result.requests)
    return result


def tls_summary(port: int) -> str:
    context = ssl._create_unverified_context()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            return f"{tls.version()} {tls.cipher()[0]}"


def load_average() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def tool_versions(cache: str) -> str:
    versions = [f"python {platform.python_version()}"]
    try:
        import twisted
        versions.append(f"twisted {twisted.__version__}")
    except ImportError:
        pass
    for command, name in ((["node", "--version"], "node"), (["java", "-version"], "java")):
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=30)
            text = (out.stdout or out.stderr).splitlines()[0].strip()
            versions.append(f"{name} {text}")
        except (OSError, IndexError, subprocess.TimeoutExpired):
            pass
    if wrk_path():
        out = subprocess.run([wrk_path(), "--version"], capture_output=True, text=True, timeout=30)
        versions.append((out.stdout or out.stderr).split("[")[0].strip())
    return ", ".join(versions)


def fmt(value: Optional[float], pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def print_table(rows: List[Row], args) -> None:
    subjects = {row.group: row for row in rows if row.subject and row.auth == "basic" and "scenarios" not in row.label}
    for row in rows:  # a group with no plain mockex row (the NTLM one) takes its own mockex row
        subjects.setdefault(row.group, next(r for r in rows if r.group == row.group and r.subject))
    print("| server | load | CPU µs/request | (each round) | req/s | bytes/answer | ratio mockex/it |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        cpu = median(row.cpu_per_request)
        subject = subjects[row.group]
        ratio = None
        if not row.subject and cpu and median(subject.cpu_per_request):
            ratio = median(subject.cpu_per_request) / cpu
        load = "wrk -t1 -c%d" % args.connections if row.load == "wrk" else "built-in -c%d" % args.connections
        load += ", " + row.mode + (", NTLM" if row.auth == "ntlm" else "")
        notes = []
        if row.errors:
            notes.append(f"{row.errors} errors")
        if row.mode != "keep-alive":
            notes.append(f"{row.resumed} resumed handshakes")
        label = row.label + (f" ({'; '.join(notes)})" if notes else "")
        rounds = " ".join(f"{value:.0f}" for value in row.cpu_per_request) or "-"
        print(f"| {label} | {load} | {fmt(cpu, '.0f')} | {rounds} | {fmt(median(row.rates), '.0f')} | "
              f"{fmt(median(row.answer_sizes), '.0f')} | {fmt(ratio, '.2f') + 'x' if ratio else '-'} |")


def print_targets(rows: List[Row]) -> None:
    by_key = {(row.server, row.load, row.mode, row.auth): row for row in rows}

    def cpu(server, load, mode="keep-alive", auth="basic"):
        row = by_key.get((server, load, mode, auth))
        return median(row.cpu_per_request) if row else None

    def line(text: str, mine: Optional[float], theirs: Optional[float], target: Optional[float]) -> None:
        if not mine or not theirs:
            print(f"  {text}: not measured")
            return
        ratio = mine / theirs
        verdict = "" if target is None else (f" (target <= {target:.2f}: " +
                                             ("met)" if ratio <= target else "NOT met)"))
        print(f"  {text}: {ratio:.2f}x{verdict}")

    main_load = next((row.load for row in rows if row.server == "mockex" and row.mode == "keep-alive"
                      and row.auth == "basic"), "wrk")
    anchors = [(cpu(name, main_load), name) for name in ("mountebank", "wiremock") if cpu(name, main_load)]
    print("targets (CPU per request, medians):")
    best = min(anchors) if anchors else (None, "")
    line(f"mockex / better of mountebank and WireMock ({best[1] or 'neither measured'})",
         cpu("mockex", main_load), best[0], 0.8)
    line("mockex / bare twisted.web, keep-alive", cpu("mockex", main_load), cpu("bare", main_load), 1.0)
    line("mockex with scenarios / bare twisted.web", cpu("loaded", main_load), cpu("bare", main_load), 1.0)
    line("mockex with scenarios / mockex without", cpu("loaded", main_load), cpu("mockex", main_load), None)
    line("mockex NTLM / bare twisted.web (built-in load)", cpu("mockex", "builtin", auth="ntlm"),
         cpu("bare", "builtin"), 1.0)
    line("mockex / bare twisted.web, full TLS handshake per request",
         cpu("mockex", "builtin", "new TLS connection"), cpu("bare", "builtin", "new TLS connection"), 1.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table shows medians")
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run (bounded)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of unmeasured load per row before round 1")
    parser.add_argument("--jvm-warmup", type=float, default=20,
                        help="seconds of unmeasured load for WireMock, whose JIT takes longer to settle")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections per run")
    parser.add_argument("--scenarios", type=int, default=1000, help="fault scenarios in the loaded mockex (0: none)")
    parser.add_argument("--load", choices=("auto", "wrk", "builtin"), default="auto",
                        help="keep-alive load generator (auto: wrk when installed)")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE,
                        help="where benchmarks/setup.sh put mountebank and WireMock (default %(default)s; "
                             "env MOCKEX_BENCH_CACHE)")
    parser.add_argument("--skip", action="append", default=[],
                        choices=("mountebank", "wiremock", "loaded", "handshake", "ntlm"), help="leave a part out")
    parser.add_argument("--only", choices=("handshake",),
                        help="only that part: the full-handshake rows of mockex and bare twisted.web")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: --duration 2 --warmup 1 --jvm-warmup 3 --rounds 1")
    args = parser.parse_args()
    if args.only == "handshake":
        args.skip = ["mountebank", "wiremock", "loaded", "ntlm"]
    if args.quick:
        args.duration, args.warmup, args.jvm_warmup, args.rounds = 2, 1, 3, 1
    if args.load == "wrk" and not wrk_path():
        raise SystemExit("wrk is not installed: run benchmarks/setup.sh (apt-get install -y wrk)")
    load = "wrk" if args.load == "wrk" or (args.load == "auto" and wrk_path()) else "builtin"
    if load == "builtin" and args.load == "auto":
        print("wrk not installed (benchmarks/setup.sh installs it): the built-in load generator drives every row")

    print(f"load average before: {load_average()}; {os.cpu_count()} CPUs")
    print(tool_versions(args.cache_dir))
    workdir = tempfile.mkdtemp(prefix="mockex-bench-anchors-")
    servers: Dict[str, Server] = {}
    rows: List[Row] = []
    try:
        process, endpoints = start_mockex(os.path.join(workdir, "mockex"))
        servers["mockex"] = Server("mockex", endpoints["https"]["port"], process.pid, process)
        basic, alice = basic_auth(endpoints), user(endpoints)
        answer = capture_answer(endpoints, basic)
        cert, key = leaf_files(os.path.join(workdir, "mockex"))
        print(f"answer: {answer.status}, {len(answer.body)}-byte body, {len(answer.headers)} headers besides Date")
        process, port = start_bare(os.path.join(workdir, "bare"), answer, cert, key)
        servers["bare"] = Server("bare twisted.web", port, process.pid, process)
        if "loaded" not in args.skip and args.scenarios > 0:
            paths = write_library(os.path.join(workdir, "library"), args.scenarios)
            process, loaded_endpoints = start_mockex(os.path.join(workdir, "loaded"), paths)
            servers["loaded"] = Server(f"mockex, {args.scenarios:,} scenarios", loaded_endpoints["https"]["port"],
                                       process.pid, process)
            print(f"loaded mockex: {len(loaded_endpoints['faults'])} faults active")
        for name, found, starter in (("mountebank", mountebank_path, start_mountebank),
                                     ("wiremock", wiremock_jar, start_wiremock)):
            if name in args.skip:
                continue
            if not found(args.cache_dir):
                print(f"skipped: {name} is not installed in {args.cache_dir} (run benchmarks/setup.sh)")
                continue
            try:
                servers[name] = starter(args.cache_dir, os.path.join(workdir, name), answer, basic, cert, key)
            except (OSError, RuntimeError) as failure:
                print(f"skipped: {name} did not start: {failure}")

        if args.only is None:
            rows.append(Row("mockex", "mockex", load, subject=True))
            rows.append(Row("bare twisted.web", "bare", load))
        for name in ("mountebank", "wiremock", "loaded"):
            if name in servers:
                rows.append(Row(servers[name].label, name, load, subject=name == "loaded"))
        if "handshake" not in args.skip:
            rows.append(Row("mockex", "mockex", "builtin", "new TLS connection", subject=True))
            rows.append(Row("bare twisted.web", "bare", "builtin", "new TLS connection"))
        if "ntlm" not in args.skip:
            rows.append(Row("mockex", "mockex", "builtin", auth="ntlm", subject=True))
            if load != "builtin":
                rows.append(Row("bare twisted.web", "bare", "builtin"))
        for server in servers.values():
            print(f"{server.label}: 127.0.0.1:{server.port}, {tls_summary(server.port)}")

        for row in rows:  # warm-up: JITs compile, caches fill; not counted
            warmup = args.jvm_warmup if row.server == "wiremock" else args.warmup
            measure(row, servers[row.server], warmup, args.connections, basic, alice, record=False)
        for index in range(args.rounds):
            shift = index % len(rows)
            for row in rows[shift:] + rows[:shift]:
                measure(row, servers[row.server], args.duration, args.connections, basic, alice)
    finally:
        for server in servers.values():
            stop(server.process)
        shutil.rmtree(workdir, ignore_errors=True)  # the transcripts of a full run reach hundreds of MB
    print(f"load average after: {load_average()}")
    print(f"medians of {args.rounds} interleaved round(s) of {args.duration:g} s each")
    print_table(rows, args)
    print_targets(rows)


if __name__ == "__main__":
    main()
