"""`mockex sandbox -- CMD`: run one command in a private user + network + mount namespace, made without root,
where the mock serves the org on 127.0.0.1:443/80/53 and every program resolves the org's names through it.

How: util-linux `unshare --user --map-root-user --net --mount` re-executes this Python into ``supervisor.main``
(the same process: `mockex sandbox` execs unshare, unshare execs the supervisor). We use the `unshare` binary rather
than ctypes for the namespaces themselves because the user namespace has to be entered while the process is single
threaded and its uid/gid maps written in the right order (setgroups deny first), which unshare does everywhere it
exists; what follows inside (loopback up, private mounts, binds, parent-death signal) is done with ctypes and ioctl
(``namespace`` shapes the namespace with ``kernel``'s calls), so neither iproute2 nor mount(8) is needed. Python
3.11 has no os.unshare. docs/sandbox.md has the whole story.

Inside, the supervisor brings loopback up, binds a resolv.conf naming 127.0.0.1, a hosts file holding only
localhost, and (when the host's nsswitch.conf asks other sources than files and dns, such as systemd-resolved) one
asking files then dns, all from a temporary directory, and hides a host nscd's socket; starts `mockex serve` on the
real ports, runs the command with the CA in SSL_CERT_FILE, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS and
CURL_CA_BUNDLE, forwards signals to it, stops the mock when it ends and exits with its status. Nothing is written
outside the temporary directory (and a --state-dir you name); the namespace and its binds vanish with the last
process in it.

Exit status: the command's (128+N when signal N ended it); 125 when the sandbox could not be made or the mock did
not start, 126 when the command cannot be executed, 127 when it is not found.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import List, NoReturn, Optional

from harness.sandbox.namespace import CA_VARIABLES, shape_namespace, unavailable_reason, unshare_argv

__all__ = ["SandboxOptions", "sandbox_argv", "exec_sandbox", "unavailable_reason", "unshare_argv", "shape_namespace",
           "CA_VARIABLES", "SETUP_FAILED", "NOT_EXECUTABLE", "NOT_FOUND"]
SETUP_FAILED, NOT_EXECUTABLE, NOT_FOUND = 125, 126, 127
# The directory holding the harness package, put first on the supervisor's (and the mock's) sys.path: they import
# this very harness, however this one was found (installed, editable, PYTHONPATH, the current directory), without
# touching the environment the command inherits.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOOT = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from harness.sandbox.supervisor import main; "
        "sys.exit(main(sys.argv[1]))")


@dataclass
class SandboxOptions:
    command: List[str]
    serve_args: List[str] = field(default_factory=list)   # for `mockex serve`: --org, --scenario, --seed, limits
    state_dir: Optional[str] = None    # kept after the run; None: a temporary one, removed with the sandbox
    quiet: bool = False                # no banner on stderr (errors are still reported)


def sandbox_argv(options: SandboxOptions, parent: Optional[int] = None) -> List[str]:
    """The argv that runs ``options.command`` in a sandbox: start it as a child of process ``parent`` (default: this
    one), which it then lives no longer than. Its parent-death signal follows the *thread* that started it: start
    it from a thread that outlives it. Check unavailable_reason() first for a clear refusal."""
    config = dict(asdict(options), parent=os.getpid() if parent is None else parent)
    return unshare_argv([sys.executable, "-c", BOOT, PACKAGE_PARENT, json.dumps(config)])


def exec_sandbox(options: SandboxOptions) -> NoReturn:
    """Become the sandbox (`mockex sandbox`): the caller's parent stays the parent, so its shell waits for the
    command's exit status and its Ctrl-C reaches the command."""
    argv = sandbox_argv(options, parent=os.getppid())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
