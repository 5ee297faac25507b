"""Running `mockex sandbox` from tests as a given user: this one, or nobody (through setpriv, when we are root).

Each run gets a directory of its own, open to every user, as HOME, TMPDIR and working directory: the sandbox's
temporary directory lands there (so a test sees it removed), and its path marks every process of the run (the mock
is started with --state-dir under it), so a /proc scan finds what a run left behind.
"""
from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from tests.support import REPO

RUN_TIMEOUT = 300      # bounds a hung run only: a run takes seconds
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
CURL = shutil.which("curl")
EXCHANGER = shutil.which("exchanger.py")
# What nobody's interpreter must manage: import the checkout and the clients, and start itself again by
# sys.executable (as the sandbox does), which fails where the path crosses a directory nobody cannot enter.
IMPORTS = ("import subprocess, sys; import harness.sandbox, twisted, OpenSSL, exchangelib, impacket; "
           "subprocess.run([sys.executable, '-c', ''], check=True)")


@dataclass(frozen=True)
class User:
    name: str                 # "self" (whoever runs the tests) or "nobody"
    prefix: Sequence[str]     # what runs a command as this user
    python: str               # an interpreter this user can run, importing this checkout and its dependencies
    pythonpath: str


def site_packages() -> List[str]:
    return [path for path in sys.path if path.endswith("site-packages")]


def open_directory() -> str:
    """A fresh directory every user may write in (sticky, as /tmp)."""
    path = tempfile.mkdtemp(prefix="mockex-sandbox-test-")
    os.chmod(path, 0o1777)
    return path


def _runs(prefix: Sequence[str], python: str, pythonpath: str) -> bool:
    where = open_directory()
    try:
        done = subprocess.run([*prefix, python, "-c", IMPORTS], cwd=where, capture_output=True, timeout=RUN_TIMEOUT,
                              env=dict(os.environ, PYTHONPATH=pythonpath, HOME=where))
        return done.returncode == 0
    finally:
        shutil.rmtree(where, ignore_errors=True)


@functools.lru_cache(maxsize=None)
def user(name: str) -> User:
    """The user, or pytest.skip's reason as a ValueError when it cannot run the sandbox here."""
    if name == "self":
        return User("self", (), sys.executable, os.pathsep.join([REPO, *os.environ.get("PYTHONPATH", "").split(
            os.pathsep)]).rstrip(os.pathsep))
    if os.geteuid() != 0:
        raise ValueError("dropping to nobody needs root; the run as this (unprivileged) user covers it")
    if shutil.which("setpriv") is None:
        raise ValueError("setpriv (util-linux) is not installed")
    # The venv's interpreter may live where nobody cannot go (a pyenv build under /root): then any interpreter of
    # the same version nobody can run, given the checkout and this venv's packages on its path.
    pythonpath = os.pathsep.join([REPO, *site_packages()])
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, shutil.which(version), f"/usr/bin/{version}", f"/usr/local/bin/{version}"]
    for python in dict.fromkeys(c for c in candidates if c):
        if os.path.exists(python) and _runs(NOBODY, python, pythonpath):
            return User("nobody", tuple(NOBODY), python, pythonpath)
    raise ValueError(f"no {version} that nobody can run and that imports the checkout and {site_packages()} "
                     f"({sys.executable} is not reachable for nobody)")


@functools.lru_cache(maxsize=None)
def refusal(who: User) -> Optional[str]:
    """Why this user cannot make the sandbox here (harness.sandbox.unavailable_reason, asked as that user)."""
    where = open_directory()
    try:
        done = subprocess.run([*who.prefix, who.python, "-c", "from harness.sandbox import unavailable_reason as r; "
                               "print(r() or '')"], cwd=where, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                              env=environment(who, where))
    finally:
        shutil.rmtree(where, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() or None


def environment(who: User, where: str, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    return dict(os.environ, PYTHONPATH=who.pythonpath, HOME=where, TMPDIR=where, **(extra or {}))


def sandbox_argv(who: User, *args: str) -> List[str]:
    return [*who.prefix, who.python, "-m", "harness", "sandbox", *args]


def run(who: User, where: str, *args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    """`mockex sandbox ARGS` as ``who`` in ``where``, to completion."""
    return subprocess.run(sandbox_argv(who, *args), cwd=where, env=environment(who, where), capture_output=True,
                          text=True, errors="replace", timeout=timeout)


def processes_marked(marker: str) -> List[str]:
    """The command lines of live processes (other than this one) that mention ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except OSError:   # gone meanwhile
            continue
        if marker in cmdline and state != b"Z":
            found.append(f"{entry}: {cmdline}")
    return found


def end_marked(marker: str) -> None:
    """SIGKILL what a failed run left behind (processes this test started, found by its marker)."""
    for line in processes_marked(marker):
        try:
            os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
        except OSError:
            pass


def leftovers(where: str) -> List[str]:
    """What a finished run left: live processes naming its directory, and its sandbox temporary directory."""
    left = processes_marked(where)
    left += [os.path.join(where, name) for name in os.listdir(where) if name.startswith("mockex-sandbox-")]
    return left
