"""Bounded, seeded fuzz runs of unmodified impacket exchanger.py (nspi list-tables, dump-tables of the GAL,
guid-known) on the Outlook Anywhere layers: 30 examples a layer, seed 1, 30 s before a run is a hang.

exchanger.py logs every exception as "Protocol failed" and exits 0; tests/support/exchanger_traced.py runs it as it
is and turns an exception that is none of impacket's own (DCERPCException, RPCProxyClientException), the network's
(OSError) or exchanger's deliberate Exception("...") into a traceback and exit 1, which the crash oracle reads.

rts, dcerpc and nspi: no finding. ntlm: two, both real impacket 0.13 bugs on a CHALLENGE without one AV pair, where
impacket indexes the missing pair (None) instead of raising an error of its own:

- no MsvAvDnsComputerName, which MS-NLMP 2.2.2.1 lets a server leave out: computeResponseNTLMv2 builds the SPN
  for MsvAvTargetName from it, TypeError at ntlm.py (impacket then cannot log on to any server that omits it);
- no MsvAvNbComputerName, which the server MUST send: RPC over HTTP takes the RPC server name from it, TypeError
  at rpch.py instead of an RPCProxyClientException.

The test accepts exactly these (by exception type and file) and fails on any other finding.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from harness.fuzz import fuzz_client
from harness.fuzz.server import FuzzServer
from tests.support import REPO
from tests.support.clients import EXCHANGER, requires_exchanger

pytestmark = [pytest.mark.root, requires_exchanger]

TRACED = os.path.join(REPO, "tests", "support", "exchanger_traced.py")
ALL_USERS_GUID = "0640b792-06a6-564c-8b02-c32991521b16"   # a table's GUID: guid-known resolves it (NspiResolveNamesW)
EXCHANGER_RUN = (f"{sys.executable} {TRACED} {EXCHANGER} {{netbios_domain}}/{{username}}:{{password}}@{{host}} "
                 f"nspi list-tables --also nspi dump-tables -name GAL -rows-per-request 5 "
                 f"--also nspi guid-known -guid {ALL_USERS_GUID}")
KNOWN_IMPACKET_BUGS = {
    "TypeError at ntlm.py": {"fault": "auth.ntlm-challenge",
                             "params": {"av_pairs": [{"action": "drop", "av": "MsvAvDnsComputerName"}]}},
    "TypeError at rpch.py": {"fault": "auth.ntlm-challenge",
                             "params": {"av_pairs": [{"action": "drop", "av": "MsvAvNbComputerName"}]}},
}


@pytest.fixture
def address(tmp_path) -> str:
    """A loopback address of this test's own for the mock's :443 (exchanger.py knows no other port)."""
    if os.geteuid() != 0:
        pytest.skip("exchanger.py needs the mock on :443 (root, or run the suite inside `unshare -rn`)")
    draw = random.Random(f"{os.getpid()}:{tmp_path}")
    return f"127.{draw.randrange(64, 250)}.{draw.randrange(1, 250)}.{draw.randrange(1, 250)}"


def fuzz_exchanger(layer: str, address: str):
    return fuzz_client(EXCHANGER_RUN, layers=[layer], max_examples=30, seed=1, timeout=30, listen=address,
                       https_port=443)


def site(finding) -> str:
    return finding.verdict.signature.split(":", 1)[1].rsplit(":", 1)[0]


@pytest.mark.parametrize("layer", ["rts", "dcerpc", "nspi"])
def test_exchanger_has_no_finding_under_a_bounded_rpc_fuzz(layer, address) -> None:
    report = fuzz_exchanger(layer, address)
    assert report.examples >= 30
    assert report.findings == [], [f.describe() + "\n" + f.stderr[-1500:] for f in report.findings]


def test_exchanger_under_a_bounded_ntlm_fuzz_shows_only_its_known_impacket_bugs(address) -> None:
    report = fuzz_exchanger("ntlm", address)
    unknown = [f for f in report.findings if f.verdict.oracle != "crash" or site(f) not in KNOWN_IMPACKET_BUGS]
    assert unknown == [], [f.describe() + "\n" + f.stderr[-1500:] for f in unknown]
    for finding in report.findings:       # each shrunk to the one AV pair left out
        assert finding.faults == [KNOWN_IMPACKET_BUGS[site(finding)]], finding.describe()
    assert report.findings, "the seeded run no longer meets impacket's AV pair bugs: were they fixed?"


def test_the_new_faults_reach_exchanger(address) -> None:
    """What each layer's fault changes is what exchanger.py gets: an RTS command more, a fault PDU after the first
    response fragment, a text in every row."""
    cases = [
        ({"fault": "rpc.rts-mutate", "params": {"pdu": "CONN/C2", "extra": ["Padding"]}}, ["nspi", "list-tables"],
         "All Users"),
        ({"fault": "rpc.bind-ack", "params": {"fragment_size": 64, "fault_after": 1}}, ["nspi", "list-tables"],
         "Protocol failed: nca_s_fault_unspec"),
        ({"fault": "mailbox.nspi-rows", "params": {"cells": [{"action": "text", "column": 0, "value": "FUZZ-ÜNÏ"}]}},
         ["nspi", "dump-tables", "-name", "GAL"], "mailNickname: FUZZ-ÜNÏ"),
    ]
    with FuzzServer(listen=address, https_port=443) as server:
        user = server.endpoints["users"][0]
        target = f"{user['domain']}/{user['username']}:{user['password']}@{address}"
        for served, command, shown in cases:
            server.apply([served])
            done = subprocess.run([sys.executable, TRACED, EXCHANGER, target, *command], capture_output=True,
                                  text=True, timeout=60)
            assert done.returncode == 0 and shown in done.stdout + done.stderr, (served, done.stdout, done.stderr)
            events = server.new_events()
            if served["fault"] == "rpc.rts-mutate":
                assert "RTS(flags=0x0000: Version, ReceiveWindowSize, ConnectionTimeout, Padding)" in [
                    e.get("pdu") for e in events if e["kind"] == "rts"]
            if served["fault"] == "rpc.bind-ack":
                assert any(e["kind"] == "rpc_fault" and "mid-response" in e.get("reason", "") for e in events)
