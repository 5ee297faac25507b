"""Start-up cost of `mockex serve`, and the per-test cost of the pytest plugin's fixtures.

1. Start to ready: spawn `python -m harness serve --state-dir D --https-port 0 --http-port 0 --dns-port 0 --quiet`
   and time until D/endpoints.json appears: cold (a fresh state dir, so the CA and keys are generated) and warm (a
   state dir an earlier run left), --rounds of each, medians; with the server's CPU time by then. Then the first POX
   Autodiscover answer (Basic auth) after ready and the first with NTLM after that: what start-up does not import
   is paid by the first request that needs it.
2. Imports: `python -X importtime -m harness serve ...` on a warm state dir: the costliest packages (self time of
   all their modules) and the costliest single modules. Import-time figures carry -X importtime's own overhead.
3. The pytest plugin, measured in a child process running pytest on a generated test file: per-test cost (setup,
   call and teardown, time.perf_counter) of a bare test, of `mockex_fresh` (the session's server with fresh state;
   the session server is started first and not counted) and of `mockex()` (a server of the test's own).

With several --tree DIR (mockex checkouts), the rounds alternate between the trees, so load drift on a shared
machine hits every tree alike:

    python benchmarks/startup.py --tree /path/to/before --tree . [--rounds 9] [--fresh 200] [--spawns 5]

Children write bytecode caches (PYTHONDONTWRITEBYTECODE is dropped), as an installed package has them; the first
(cold) run of each tree writes them and is not counted. Loopback only; every wait is bounded.
"""
from __future__ import annotations

import argparse
import base64
import collections
import http.client
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Sequence, Tuple

HERE = os.path.abspath(__file__)
REPO = os.path.dirname(os.path.dirname(HERE))
START_TIMEOUT = 60.0
POX_REQUEST = (b'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
               b'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>alice@contoso.test</EMailAddress>'
               b'<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/'
               b'responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>')


def child_env(tree: str) -> Dict[str, str]:
    env = dict(os.environ, PYTHONPATH=tree)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def serve_command(state_dir: str, python_flags: Sequence[str], serve_args: Sequence[str]) -> List[str]:
    return [sys.executable, *python_flags, "-m", "harness", "serve", "--state-dir", state_dir, "--https-port", "0",
            "--http-port", "0", "--dns-port", "0", "--quiet", *serve_args]


def cpu_seconds(pid: int) -> float:
    """CPU time the process has run so far (ns resolution, from the scheduler): less hurt by other load than wall
    time on a shared machine."""
    with open(f"/proc/{pid}/schedstat") as handle:
        return int(handle.read().split()[0]) / 1e9


def start_until_ready(tree: str, state_dir: str, *python_flags: str,
                      serve_args: Sequence[str] = ()) -> Tuple[subprocess.Popen, float, float]:
    """(the server, wall seconds from spawn to endpoints.json, its CPU seconds by then)."""
    ready = os.path.join(state_dir, "endpoints.json")
    if os.path.exists(ready):
        os.unlink(ready)
    started = time.perf_counter()
    process = subprocess.Popen(serve_command(state_dir, python_flags, serve_args), cwd=tree, env=child_env(tree),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not os.path.exists(ready):
        if process.poll() is not None or time.perf_counter() - started > START_TIMEOUT:
            process.kill()
            raise SystemExit(f"{tree}: server did not start: {process.stderr.read().decode()[-2000:]}")
        time.sleep(0.001)
    return process, time.perf_counter() - started, cpu_seconds(process.pid)


def stop(process: subprocess.Popen) -> bytes:
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return err


def first_pox(state_dir: str, ntlm: bool = False) -> float:
    """Seconds for one POX Autodiscover request on a new TLS connection, answered 200: with Basic auth, or with an
    NTLM handshake (two round trips; the server's first NTLM logon loads its NTLM code)."""
    with open(os.path.join(state_dir, "endpoints.json"), encoding="utf-8") as handle:
        endpoints = json.load(handle)
    alice = next(u for u in endpoints["users"] if u["username"] == "alice")
    context = ssl.create_default_context(cafile=endpoints["ca_file"])
    context.check_hostname = False   # by IP: the name check is not what is measured
    headers = {"Host": "autodiscover.contoso.test", "Content-Type": "text/xml"}
    client = None
    if ntlm:
        import spnego
        client = spnego.client(alice["username"], alice["password"], hostname="autodiscover.contoso.test",
                               protocol="ntlm")
        token = client.step()
    else:
        token = f"{alice['upn']}:{alice['password']}".encode()
    started = time.perf_counter()
    conn = http.client.HTTPSConnection(endpoints["https"]["host"], endpoints["https"]["port"], context=context,
                                       timeout=30)
    while True:
        scheme = "NTLM" if ntlm else "Basic"
        conn.request("POST", "/autodiscover/autodiscover.xml", body=POX_REQUEST,
                     headers={**headers, "Authorization": f"{scheme} {base64.b64encode(token).decode()}"})
        response = conn.getresponse()
        response.read()
        challenge = [v for k, v in response.getheaders() if k.lower() == "www-authenticate" and v.startswith("NTLM ")]
        if client is None or response.status != 401 or not challenge:
            break
        token = client.step(base64.b64decode(challenge[0].split(" ", 1)[1]))
    conn.close()
    if response.status != 200:
        raise SystemExit(f"POX answered {response.status}")
    return time.perf_counter() - started


def start_rounds(trees: List[str], rounds: int, workdir: str,
                 serve_args: Sequence[str]) -> Dict[str, Dict[str, List[float]]]:
    figures: Dict[str, Dict[str, List[float]]] = {t: collections.defaultdict(list) for t in trees}
    warm_dirs = {}
    for index, tree in enumerate(trees):   # one uncounted run each: bytecode caches and the warm state dir
        warm_dirs[tree] = os.path.join(workdir, f"warm-{index}")
        stop(start_until_ready(tree, warm_dirs[tree], serve_args=serve_args)[0])
    for round_no in range(rounds):
        for index, tree in enumerate(trees):
            cold_dir = os.path.join(workdir, f"cold-{index}-{round_no}")
            for kind, state_dir in (("cold", cold_dir), ("warm", warm_dirs[tree])):
                process, seconds, cpu = start_until_ready(tree, state_dir, serve_args=serve_args)
                try:
                    figures[tree][f"{kind} start to ready"].append(seconds)
                    figures[tree][f"{kind} CPU to ready"].append(cpu)
                    if not serve_args:   # a scenario's faults may refuse it
                        figures[tree][f"{kind} first POX (Basic)"].append(first_pox(state_dir))
                        figures[tree][f"{kind} then POX (NTLM)"].append(first_pox(state_dir, ntlm=True))
                finally:
                    stop(process)
            shutil.rmtree(cold_dir, ignore_errors=True)
    return figures


def import_breakdown(trees: List[str], workdir: str, runs: int = 3, top: int = 10) -> None:
    """Per module the least self time over ``runs`` runs, the trees taking turns (load spikes on a shared machine
    only ever add)."""
    state_dirs = {tree: os.path.join(workdir, f"imports-{index}") for index, tree in enumerate(trees)}
    least: Dict[str, Dict[str, int]] = {tree: {} for tree in trees}
    for tree in trees:
        stop(start_until_ready(tree, state_dirs[tree])[0])            # warm the state dir first
    for _ in range(runs):
        for tree in trees:
            process = start_until_ready(tree, state_dirs[tree], "-X", "importtime")[0]
            for line in stop(process).decode(errors="replace").splitlines():
                if not line.startswith("import time:") or "self [us]" in line:
                    continue
                self_us, _cumulative, name = line[len("import time:"):].split("|")
                name, us = name.strip(), int(self_us)
                least[tree][name] = min(us, least[tree].get(name, us))
    for tree in trees:
        packages: Dict[str, int] = collections.Counter()
        for module, us in least[tree].items():
            packages[module.split(".")[0]] += us
        print(f"  imports of a warm `serve` ({tree}): {len(least[tree])} modules, "
              f"{sum(least[tree].values()) / 1000:.0f} ms self time in all (least of {runs} runs each)")
        print(f"    {'package':<28}{'ms':>7}    {'module':<44}{'ms':>7}")
        worst = sorted(((us, module) for module, us in least[tree].items()), reverse=True)[:top]
        for (package, us), (module_us, module) in zip(packages.most_common(top), worst):
            print(f"    {package:<28}{us / 1000:>7.1f}    {module:<44}{module_us / 1000:>7.1f}")


def plugin_child(fresh: int, spawns: int, bare: int) -> None:
    """Runs in a child with PYTHONPATH = the tree: pytest on generated tests, per-test times by group."""
    import importlib.metadata

    import pytest

    import harness.pytest_plugin as plugin
    has_fresh = hasattr(plugin, "mockex_fresh")
    lines = ["def test_0_session(mockex_server):\n    pass\n"]
    lines += [f"def test_bare_{i}():\n    pass\n" for i in range(bare)]
    if has_fresh:
        lines += [f"def test_fresh_{i}(mockex_fresh):\n    pass\n" for i in range(fresh)]
    lines += [f"def test_spawn_{i}(mockex):\n    mockex()\n" for i in range(spawns)]
    lines += ["def test_zz_end():\n    pass\n"]   # the session teardown lands here, not in a measured test
    workdir = tempfile.mkdtemp(prefix="mockex-plugin-bench-")
    with open(os.path.join(workdir, "test_generated.py"), "w") as handle:
        handle.write("\n\n".join(lines))
    times: Dict[str, List[float]] = collections.defaultdict(list)

    class Timer:
        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_protocol(self, item, nextitem):
            started = time.perf_counter()
            yield
            times[item.name.rsplit("_", 1)[0]].append(time.perf_counter() - started)

    installed = any(e.value == "harness.pytest_plugin" for e in importlib.metadata.entry_points(group="pytest11"))
    load = [] if installed else ["-p", "harness.pytest_plugin"]
    code = pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-o", "addopts=", *load,
                        os.path.join(workdir, "test_generated.py")], plugins=[Timer()])
    shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({"exit": int(code), "times": times, "has_fresh": has_fresh}))


def plugin_figures(tree: str, args: argparse.Namespace) -> None:
    done = subprocess.run([sys.executable, HERE, "--plugin-child", "--fresh", str(args.fresh), "--spawns",
                           str(args.spawns), "--bare", str(args.bare)], cwd=tempfile.gettempdir(),
                          env=child_env(tree), capture_output=True, text=True, timeout=600)
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise SystemExit(f"plugin run failed in {tree}: {done.stdout[-2000:]}{done.stderr[-2000:]}") from None
    if result["exit"] != 0:
        raise SystemExit(f"plugin tests failed in {tree}: {done.stdout[-3000:]}")
    times = result["times"]
    print(f"  pytest plugin, per test ({tree}):")
    print(f"    session server start (once)        {times['test_0'][0] * 1000:9.1f} ms")
    for group, label in (("test_bare", "bare test (pytest's own cost)"),
                         ("test_fresh", "mockex_fresh (session server, reset)"),
                         ("test_spawn", "mockex() (a server of its own)")):
        values = times.get(group)
        if not values:
            print(f"    {label:<38} n/a (no such fixture)")
            continue
        print(f"    {label:<38}{statistics.median(values) * 1000:9.2f} ms median, "
              f"p90 {sorted(values)[int(len(values) * 0.9)] * 1000:.2f}, n={len(values)}")


def describe(values: List[float]) -> str:
    return (f"{statistics.median(values) * 1000:7.1f} ms median  (min {min(values) * 1000:6.1f}, "
            f"max {max(values) * 1000:6.1f}, n={len(values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", default=[], help="a mockex checkout (repeatable; default: this one)")
    parser.add_argument("--rounds", type=int, default=7, help="cold and warm starts per tree")
    parser.add_argument("--scenario", action="append", default=[],
                        help="start-up with this scenario (repeatable; no POX figures then)")
    parser.add_argument("--fresh", type=int, default=200, help="tests using mockex_fresh")
    parser.add_argument("--spawns", type=int, default=5, help="tests calling mockex()")
    parser.add_argument("--bare", type=int, default=50, help="tests using no fixture")
    parser.add_argument("--skip", action="append", default=[], choices=("start", "imports", "plugin"))
    parser.add_argument("--plugin-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plugin_child:
        plugin_child(args.fresh, args.spawns, args.bare)
        return
    trees = [os.path.abspath(t) for t in args.tree] or [REPO]
    workdir = tempfile.mkdtemp(prefix="mockex-startup-bench-")
    try:
        if "start" not in args.skip:
            serve_args = [arg for scenario in args.scenario for arg in ("--scenario", scenario)]
            figures = start_rounds(trees, args.rounds, workdir, serve_args)
            for tree in trees:
                print(f"start-up ({tree}{', scenarios ' + ' '.join(args.scenario) if args.scenario else ''}):")
                for label, values in figures[tree].items():
                    print(f"  {label:<28}{describe(values)}")
        if "imports" not in args.skip:
            import_breakdown(trees, workdir)
        if "plugin" not in args.skip:
            for tree in trees:
                plugin_figures(tree, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
