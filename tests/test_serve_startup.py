"""What `mockex serve` has loaded once it is ready: code that only a first request or an option needs (DCE/RPC and
impacket, the mailbox store, Autodiscover's XML, EWS, the endpoint mapper, scenarios) waits for it, and the cyclic
collector, off while start-up builds long-lived objects, is on again when the reactor runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness.cli import build_parser
from harness.services.server import StoreOnDemand
from tests.support.ews import ALICE, ORG, new_store

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# `python -m harness serve ...` with a report of sys.modules and the collector at the reactor's first turn, which
# comes right after endpoints.json is written; then the reactor stops and the serve command ends as on SIGTERM.
AT_READY = """
import gc, json, runpy, sys
from twisted.internet import reactor

def report():
    print(json.dumps({"modules": sorted(sys.modules), "collecting": gc.isenabled()}))
    reactor.stop()

reactor.callWhenRunning(report)
state_dir, extra = sys.argv[1], sys.argv[2:]
sys.argv = ["harness", "serve", "--state-dir", state_dir, "--https-port", "0", "--http-port", "0", "--dns-port", "0",
            "--quiet", *extra]
runpy.run_module("harness", run_name="__main__", alter_sys=True)
"""

DEFERRED = ("impacket", "Cryptodome", "lxml", "harness.rpc", "harness.protocols.dcerpc", "harness.protocols.ntlm",
            "harness.services.epm", "harness.mailbox.store", "harness.protocols.autodiscover", "harness.protocols.ews",
            "harness.scenario", "harness.protocols.ews_schema", "harness.probe", "harness.runner", "harness.fuzz",
            "harness.control")


def at_ready(state_dir: str, *serve_args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", AT_READY, state_dir, *serve_args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def loaded(modules: list, name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


def test_serve_is_ready_without_the_code_only_requests_need(tmp_path):
    report = at_ready(str(tmp_path / "state"))
    assert [name for name in DEFERRED if loaded(report["modules"], name)] == []
    assert loaded(report["modules"], "harness.services.site") and loaded(report["modules"], "twisted.names")
    assert report["collecting"] is True


def test_the_options_that_need_it_load_it_at_start(tmp_path):
    """The same check sees what is loaded: the endpoint mapper brings DCE/RPC, --mailbox-size the mailbox store (its
    messages are generated at start, not in a client's first request), a scenario the scenario code."""
    report = at_ready(str(tmp_path / "state"), "--epm-port", "0", "--mailbox-size", "alice=3",
                      "--scenario", "auth-wrong-password")
    for name in ("harness.services.epm", "harness.protocols.dcerpc", "impacket", "harness.mailbox.store",
                 "harness.scenario"):
        assert loaded(report["modules"], name), name
    assert report["collecting"] is True


@pytest.mark.parametrize("sizes", [{}, {"alice": 5}])
def test_the_store_made_on_demand_is_the_seeded_store(sizes):
    lazy = StoreOnDemand(ORG, sizes, 0)         # keyed by user name, as --mailbox-size alice=5
    assert lazy._store is None                      # nothing made until it is read
    inbox = lazy.mailbox(ALICE).distinguished["inbox"]
    made = lazy.get()
    assert lazy.get() is made and lazy.mailboxes is made.mailboxes
    expected = new_store(**sizes).mailbox(ALICE).distinguished["inbox"]
    assert [(i.id, i.subject) for i in inbox.items.values()] == [(i.id, i.subject) for i in expected.items.values()]


def test_serve_parses_the_same_without_the_other_commands():
    argv = ["serve", "--state-dir", "/tmp/x", "--https-port", "0", "--mailbox-size", "alice=2", "--scenario", "a",
            "--scenario", "b", "--control", "--idle-timeout", "5", "--rpc-out-framing", "legacy", "--quiet"]
    assert vars(build_parser(only="serve").parse_args(argv)) == vars(build_parser().parse_args(argv))
    assert "serve" in build_parser(only="serve").format_help() and "sandbox" not in \
        build_parser(only="serve").format_help()
