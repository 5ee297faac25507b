"""The sandbox's namespaces: how to enter them without root (util-linux `unshare`), why this user may not, and how
to shape them once inside (loopback up; resolv.conf, hosts and, when needed, nsswitch.conf bound from a directory of
ours and nscd's socket hidden, so every program resolves names through a DNS server on 127.0.0.1:53).

Reusable on its own: a supervisor of another kind (`mockex run --sandbox`'s workers) may run itself under
``unshare_argv(...)`` and call ``shape_namespace(directory)`` first thing inside.
"""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
from typing import Dict, List, Optional

from harness.sandbox.kernel import bind_over, loopback_up, make_mounts_private, userns_refusal_causes

NAMESPACE_FLAGS = ["--user", "--map-root-user", "--net", "--mount"]
PROBE_TIMEOUT = 60   # bounds a hung probe only; it takes milliseconds
# The host's name service cache daemon answers from outside the namespace, with the host's view of names.
NSCD_SOCKETS = ("/run/nscd/socket", "/var/run/nscd/socket")
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE")


def unshare_argv(argv: List[str]) -> List[str]:
    """``argv`` run as root of a new user namespace (mapped to the caller's uid) with its own network and mounts."""
    return [shutil.which("unshare") or "unshare", *NAMESPACE_FLAGS, "--", *argv]


def unavailable_reason() -> Optional[str]:
    """None when this user can make the sandbox's namespaces here, else why not and which setting to change. Tries
    it for real (a user namespace that is refused fails in unshare(2), or later, uid_map or mount, depending on the
    setting that refuses it)."""
    if shutil.which("unshare") is None:
        return "`unshare` (util-linux) is not on PATH; the sandbox needs it to make the namespaces"
    argv = unshare_argv([sys.executable, "-S", "-c", ""])
    try:
        probe = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {argv[0]}: {exc}"
    if probe.returncode == 0:
        return None
    said = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else f"exit status {probe.returncode}"
    causes = userns_refusal_causes()
    why = ("; ".join(causes) if causes else
           "no sysctl forbids it, so the kernel was built without user namespaces or a seccomp policy forbids "
           "unshare(2) (Docker's default profile does; run the container with --security-opt seccomp=unconfined "
           "or --privileged)")
    return f"cannot make a user namespace as {_user()} ({said}): {why}"


def _user() -> str:
    try:
        return f"{getpass.getuser()} (uid {os.getuid()})"
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def shape_namespace(directory: str) -> None:
    """Inside fresh namespaces: loopback up, mounts private, and the resolver files (written to ``directory``, which
    must outlive every process that reads them) bound over /etc's."""
    loopback_up()
    make_mounts_private()
    files: Dict[str, str] = {"/etc/resolv.conf": "nameserver 127.0.0.1\n", "/etc/hosts": hosts_file()}
    try:
        with open("/etc/nsswitch.conf", encoding="utf-8") as handle:
            nsswitch = nsswitch_for_dns(handle.read())
    except OSError:
        nsswitch = None   # glibc's default without one asks dns, then files
    if nsswitch is not None:
        files["/etc/nsswitch.conf"] = nsswitch
    for socket_path in sorted({os.path.realpath(path) for path in NSCD_SOCKETS if os.path.exists(path)}):
        files[socket_path] = ""   # glibc asks a running nscd first; an empty file in its place is not a socket
    for target, content in files.items():
        source = os.path.join(directory, target.strip("/").replace("/", "-"))
        with open(source, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.chmod(source, 0o644)
        bind_over(source, target)


def hosts_file() -> str:
    """Loopback names only: the org's names must come from the mock's DNS, where the dns faults act."""
    return f"127.0.0.1\tlocalhost {socket.gethostname()}\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def nsswitch_for_dns(text: str) -> Optional[str]:
    """nsswitch.conf with its hosts line reduced to `files dns`, or None when it asks nothing else already. Other
    sources (systemd-resolved's `resolve`, mdns, myhostname, sss) answer from outside the namespace, over a unix
    socket or by their own rules, and would bypass the mock."""
    lines, changed = text.splitlines(), False
    for index, line in enumerate(lines):
        key, colon, sources = line.partition(":")
        if colon and key.strip() == "hosts" and sources.split("#")[0].split() not in (["files", "dns"], ["dns"]):
            lines[index], changed = "hosts: files dns", True
    return "\n".join(lines) + "\n" if changed else None
