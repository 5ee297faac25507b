"""Where `mockex serve` spends its CPU on the measured POX request: py-spy samples the server while the load of
benchmarks/anchors.py runs (wrk -t1 -c32 keep-alive, or with --handshake a new TLS connection per request through
the built-in generator), then prints the frames with the most own time and the share of samples that pass through
each part of mockex (inclusive).

    python benchmarks/profile_pox.py [--seconds 20] [--handshake] [--scenarios N] [--top 10] [--raw FILE]

--scenarios N loads the N generated fault scenarios of anchors.py's loaded row (none applies to the request).

Needs py-spy (pip install py-spy) and, for keep-alive, wrk (benchmarks/setup.sh); both load and sampling are bounded
by --seconds. py-spy attaches to a child process, which needs ptrace rights (root, or kernel.yama.ptrace_scope 0).
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Counter, Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import POX_HOST, POX_PATH, POX_REQUEST, basic_auth, start_mockex, write_library  # noqa: E402
from _load import request_bytes, run_builtin, run_wrk, wrk_path  # noqa: E402

# The parts of the server whose inclusive share is printed: a frame's file path contains the key.
PARTS = [("HTTP core (protocols/httpconn, httphead, httpencode)", ("protocols/httpconn.py", "protocols/httphead.py",
                                                                   "protocols/httpencode.py")),
         ("h11", ("(h11/",)), ("edge (services/web.py)", ("services/web.py",)),
         ("site (services/site.py)", ("services/site.py",)), ("Autodiscover (protocols/autodiscover*)",
                                                               ("protocols/autodiscover",)),
         ("transcript", ("harness/transcript.py",)), ("write pacing (services/pacing.py)", ("services/pacing.py",)),
         ("pyOpenSSL", ("OpenSSL/",)), ("Twisted TLS (twisted/protocols/tls.py)", ("twisted/protocols/tls.py",))]


def summarise(raw_file: str, top: int) -> Tuple[int, List[Tuple[str, int]], Dict[str, int]]:
    """(samples, the frames with most own time, samples per part) from py-spy's raw (collapsed stack) output."""
    own: Counter[str] = collections.Counter()
    parts: Counter[str] = collections.Counter()
    samples = 0
    with open(raw_file, encoding="utf-8") as lines:
        for line in lines:
            stack, _, count_text = line.rstrip().rpartition(" ")
            if not count_text.isdigit():   # py-spy now and then writes a stack without its count: left out
                continue
            count = int(count_text)
            frames = stack.split(";")
            samples += count
            own[frames[-1]] += count
            for name, keys in PARTS:
                if any(key in frame for frame in frames for key in keys):
                    parts[name] += count
    return samples, own.most_common(top), dict(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds sampled under load (bounded)")
    parser.add_argument("--handshake", action="store_true", help="a new TLS connection per request")
    parser.add_argument("--scenarios", type=int, default=0,
                        help="generated fault scenarios loaded, none of which applies to the request (0: none)")
    parser.add_argument("--top", type=int, default=10, help="how many frames by own time")
    parser.add_argument("--raw", help="keep py-spy's collapsed stacks in this file")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(spy):
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    if not args.handshake and not wrk_path():
        raise SystemExit("wrk is not installed: run benchmarks/setup.sh (or use --handshake)")
    with tempfile.TemporaryDirectory(prefix="mockex-profile-") as workdir:
        library = write_library(os.path.join(workdir, "library"), args.scenarios) if args.scenarios > 0 else []
        process, endpoints = start_mockex(os.path.join(workdir, "state"), library)
        raw = args.raw or os.path.join(workdir, "stacks.txt")
        try:
            port = endpoints["https"]["port"]
            headers = {"Host": POX_HOST, "Content-Type": "text/xml", "Authorization": basic_auth(endpoints)}

            def load(seconds: float):
                if args.handshake:
                    request = request_bytes("POST", POX_PATH, {**headers, "Connection": "close"}, POX_REQUEST)
                    return run_builtin(port, request, connections=32, seconds=seconds,
                                       new_connection_per_request=True)
                return run_wrk(port, POX_PATH, headers, POX_REQUEST, connections=32, seconds=seconds)

            load(3)   # warm-up: imports, caches
            sampler = subprocess.Popen([spy, "record", "--pid", str(process.pid), "--rate", "250", "--duration",
                                        str(round(args.seconds)), "--format", "raw", "--output", raw, "--nonblocking"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            result = load(args.seconds + 2)   # the load outlasts the sampling
            _, error = sampler.communicate(timeout=args.seconds + 60)
            if sampler.returncode != 0 or not os.path.exists(raw):
                raise SystemExit(f"py-spy failed: {error.decode(errors='replace')[-500:]}")
        finally:
            process.terminate()
            process.wait(timeout=30)
        samples, frames, parts = summarise(raw, args.top)
    mode = "new TLS connection per request (built-in load)" if args.handshake else "wrk -t1 -c32 keep-alive"
    loaded = f", {args.scenarios:,} scenarios loaded" if args.scenarios > 0 else ""
    print(f"mockex serve{loaded}, POX, {mode}: {result.requests} answers in {result.seconds:.1f} s, {samples} samples")
    print(f"top {args.top} frames by own time (native code counts in the Python frame that called it):")
    for frame, count in frames:
        print(f"  {100 * count / samples:5.1f}%  {frame}")
    print("samples passing through (inclusive):")
    for name, _ in PARTS:
        print(f"  {100 * parts.get(name, 0) / samples:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
