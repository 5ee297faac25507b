"""The client under test: its command line with placeholders filled from the scenario's mock, its environment,
and one run of it bounded by the scenario's timeout.

The command is split into words as a POSIX shell would (shlex), and no shell runs it: a placeholder is replaced
inside its word, so a password with spaces or quotes stays one argument. A placeholder is a known name in braces
(``{email}``, ``{addresses[mail.contoso.test]}``); any other brace is left alone, so inline code (``python -c``
with f-strings, ``sh -c`` with ``${VAR}``) needs no escaping, except that a near miss of a known name (``{emial}``)
is refused as a typo. ``{{email}}`` is the literal text ``{email}``.
"""
from __future__ import annotations

import difflib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from harness.sandbox.namespace import CA_VARIABLES  # the variables `mockex sandbox` sets too

PROBE = "probe"    # `--client probe`: the built-in analyzer, run in the worker (no process start)
KILL_GRACE = 2.0   # seconds between SIGTERM and SIGKILL for a client past its timeout
OUTPUT_LIMIT = 1 << 20   # bytes kept of each stream (the end of it)

PLACEHOLDERS = {
    "email": "the mailbox's e-mail address (alice@contoso.test unless the scenario names a user)",
    "password": "its password",
    "username": "its logon name (alice)",
    "login": "DOMAIN\\user (CONTOSO\\alice)",
    "upn": "its user principal name",
    "netbios_domain": "the NetBIOS domain (CONTOSO)",
    "domain": "the e-mail domain (contoso.test)",
    "host": "the address the mock listens on (127.0.0.1)",
    "https_port": "the HTTPS port (standing in for 443)",
    "http_port": "the plain HTTP port (standing in for 80)",
    "dns_host": "the mock's DNS server address",
    "dns_port": "the mock's DNS port",
    "dns": "dns_host:dns_port",
    "autodiscover_url": "https://autodiscover.<domain>:<port>/autodiscover/autodiscover.xml",
    "autodiscover_svc_url": "the SOAP Autodiscover URL (autodiscover.svc)",
    "ews_url": "the EWS URL",
    "rpc_proxy_url": "the Outlook Anywhere (RPC proxy) URL",
    "ca_file": "the PEM file of the mock's root CA, to trust",
    "endpoints": "the path of the mock's endpoints.json (everything above and more)",
    "transcript": "the path of the mock's transcript.jsonl",
    "state_dir": "the scenario's state directory",
    "scenario": "the scenario's name",
    "seed": "the run's seed",
    "addresses": "the address of each host name: {addresses[mail.contoso.test]} (hosts with port faults have "
                 "their own)",
}


class CommandError(ValueError):
    """A client command that cannot be run (unbalanced quotes, unknown placeholder)."""


# {{name}} (an escaped placeholder), or {name} / {name[key]}
PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}|\{([a-z_]+)(?:\[([^\]{}]+)\])?\}")


def parse_command(text: str) -> List[str]:
    """The words of ``text``, refusing a near miss of a placeholder name (a typo would reach the client as is)."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise CommandError(f"--client {text!r}: {exc}") from None
    if not words:
        raise CommandError("--client is empty")
    for word in words:
        for match in PLACEHOLDER.finditer(word):
            name = match.group(2)
            if name is None or name in PLACEHOLDERS:
                if name == "addresses" and not match.group(3):
                    raise CommandError("--client: {addresses} needs a host name: {addresses[mail.contoso.test]}")
                continue
            close = difflib.get_close_matches(name, PLACEHOLDERS, n=1, cutoff=0.75)
            if close:
                raise CommandError(f"--client: unknown placeholder {{{name}}}: did you mean {{{close[0]}}}? "
                                   "(known: " + ", ".join(f"{{{key}}}" for key in PLACEHOLDERS) + ")")
    return words


def values(endpoints: Dict[str, Any], user: Dict[str, Any], scenario: str, state_dir: str,
           endpoints_path: str) -> Dict[str, Any]:
    """Every placeholder's value for one scenario's mock and user."""
    autodiscover = endpoints["autodiscover_urls"]
    return {
        "email": user["email"], "password": user["password"], "username": user["username"],
        "login": f"{user['domain']}\\{user['username']}", "upn": user["upn"], "netbios_domain": user["domain"],
        "domain": endpoints["domain"], "host": endpoints["https"]["host"],
        "https_port": endpoints["https"]["port"], "http_port": endpoints["http"]["port"],
        "dns_host": endpoints["dns"]["host"], "dns_port": endpoints["dns"]["port"],
        "dns": f"{endpoints['dns']['host']}:{endpoints['dns']['port']}",
        "autodiscover_url": autodiscover[1], "autodiscover_svc_url": autodiscover[2],
        "ews_url": endpoints["ews_url"], "rpc_proxy_url": endpoints["rpc_proxy_url"],
        "ca_file": endpoints["ca_file"], "endpoints": endpoints_path, "transcript": endpoints["transcript"],
        "state_dir": state_dir, "scenario": scenario, "seed": endpoints["seed"],
        "addresses": dict(endpoints.get("addresses", {})),
    }


def missing_program(words: List[str], cwd: Optional[str] = None) -> str:
    """Why the client's program cannot be run ("" when it can, or when its name is a placeholder)."""
    program = words[0]
    if PLACEHOLDER.search(program):
        return ""
    if os.sep in program:
        path = os.path.join(cwd or os.getcwd(), program)
        if not os.path.isfile(path):
            return f"{program}: no such file"
        return "" if os.access(path, os.X_OK) else f"{program}: not executable (chmod +x, or name its interpreter)"
    return "" if shutil.which(program) else f"{program}: not found on PATH"


def fill(words: List[str], found: Dict[str, Any]) -> List[str]:
    def value(match: "re.Match[str]") -> str:
        escaped, name, key = match.groups()
        if escaped is not None:
            return f"{{{escaped}}}" if escaped in PLACEHOLDERS else match.group(0)
        if name not in PLACEHOLDERS:
            return match.group(0)
        if key is None:
            return str(found[name])
        table = found[name]
        if not isinstance(table, dict) or key not in table:
            raise CommandError(f"--client: no value for {{{name}[{key}]}}"
                               + (f" (known: {', '.join(table)})" if isinstance(table, dict) else ""))
        return str(table[key])
    return [PLACEHOLDER.sub(value, word) for word in words]


def environment(found: Dict[str, Any], export_ca: bool, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The client's environment: ours, plus MOCKEX_<PLACEHOLDER> for each scalar placeholder, plus the CA file in
    the variables OpenSSL, requests, Node.js and curl read when ``export_ca``."""
    env = dict(os.environ if base is None else base)
    for name, value in found.items():
        if not isinstance(value, dict):
            env[f"MOCKEX_{name.upper()}"] = str(value)
    if export_ca:
        env.update({variable: found["ca_file"] for variable in CA_VARIABLES})
    return env


@dataclass
class ClientRun:
    argv: List[str]
    exit_code: Optional[int]      # None when killed by a signal
    signal: Optional[int]         # the signal that ended it (ours on timeout)
    timed_out: bool
    stdout: str
    stderr: str
    seconds: float
    start_error: str = ""         # why it could not be started (then nothing ran)

    def describe(self) -> str:
        if self.start_error:
            return f"could not be started: {self.start_error}"
        if self.timed_out:
            return f"did not finish within its timeout and was killed ({self.seconds:.1f} s)"
        if self.signal is not None:
            return f"was killed by {signal.Signals(self.signal).name} after {self.seconds:.1f} s"
        return f"exited with status {self.exit_code} after {self.seconds:.1f} s"


class ClientProcess:
    """One client run in its own session (process group), so a timeout or an interrupted run ends the client and
    everything it started."""

    def __init__(self) -> None:
        self.process: Optional[subprocess.Popen] = None

    def run(self, argv: List[str], env: Dict[str, str], timeout: float, cwd: Optional[str] = None) -> ClientRun:
        started = time.monotonic()
        try:
            self.process = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            return ClientRun(argv, None, None, False, "", "", 0.0, start_error=f"{argv[0]}: {exc.strerror or exc}")
        timed_out = False
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # a client whose own children still hold its output open has exited: that is not a timeout
            timed_out = self.process.poll() is None
            self.kill(signal.SIGTERM)
            try:
                out, err = self.process.communicate(timeout=KILL_GRACE)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                out, err = self.process.communicate()
        finally:
            self.kill(signal.SIGKILL)   # whatever the client left behind in its group
        code = self.process.returncode
        return ClientRun(argv, code if code is not None and code >= 0 else None,
                         -code if code is not None and code < 0 else None, timed_out,
                         _text(out), _text(err), time.monotonic() - started)

    def kill(self, signum: int) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass


def _text(data: Optional[bytes]) -> str:
    data = data or b""
    if len(data) > OUTPUT_LIMIT:
        data = b"[...%d bytes cut...]\n" % (len(data) - OUTPUT_LIMIT) + data[-OUTPUT_LIMIT:]
    return data.decode("utf-8", "replace")
