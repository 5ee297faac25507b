"""Run a shell script in a private network + mount namespace (root only).

Inside, loopback is up and /etc/resolv.conf points at 127.0.0.1, so the system resolver (getaddrinfo, curl,
requests) asks mockex's DNS on :53: clients resolve the org's names with no change to them or to the host.
"""
from __future__ import annotations

import os
import shutil
import subprocess

NAMESPACE_PRELUDE = """\
set -e
ip link set lo up
mount --bind "$MOCKEX_RESOLV" /etc/resolv.conf
"""


def available() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and shutil.which("ip") is not None


def run_in_namespace(script: str, workdir: str, timeout: float = 120, env: dict | None = None):
    resolv = os.path.join(workdir, "resolv.conf")
    with open(resolv, "w") as handle:
        handle.write("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
    full_env = dict(os.environ, MOCKEX_RESOLV=resolv, **(env or {}))
    return subprocess.run(["unshare", "--net", "--mount", "bash", "-c", NAMESPACE_PRELUDE + script],
                          cwd=workdir, env=full_env, capture_output=True, text=True, timeout=timeout)
