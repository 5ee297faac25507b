"""`serve --rpc-capture` + `mockex export pcap`: a real server's RPC over HTTP virtual connections as pcapng that
tshark dissects without options: NSPI operation names in order, no malformed frame or expert warning, the stubs of
an unauthenticated session decoded to the org's recipients. With exchanger.py (NTLM at privacy, needs :443) the
sealed session still shows its operation names: they come from the DCE/RPC header, not the sealed stub."""
from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path
from typing import Iterator, List

import pytest
from impacket.dcerpc.v5 import nspi, rpcrt

from harness.export.pcap import SERVER_PORT, read_captures, write_pcapng
from harness.org import load_org
from harness.protocols.rpccapture import CAPTURE_DIR, CapturedPdu, decode_capture
from tests.support.clients import (
    EXCHANGER,
    default_socket_timeout,
    exchanger,
    rpc_bind,
    run_mockex,
    teletex_stat,
)
from tests.support.servers import start_on_port_443

TSHARK = shutil.which("tshark")
TIMEOUT = 60
ORG = load_org()
TAGS = [0x3001001F, 0x39FE001F]        # PR_DISPLAY_NAME, PR_SMTP_ADDRESS (Unicode)
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (Debian: apt-get install tshark)")


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A capturing server that saw an unauthenticated NSPI session (and exchanger.py when it can reach :443),
    stopped, then exported."""
    state = tmp_path_factory.mktemp("rpc-capture")
    served = start_on_port_443(str(state), "--rpc-capture")
    sealed = False
    try:
        with default_socket_timeout(TIMEOUT):
            dce = rpc_bind(served, "EX01", nspi.MSRPC_UUID_NSPI, level=rpcrt.RPC_C_AUTHN_LEVEL_NONE)
            stat_ = teletex_stat()
            handle = nspi.hNspiBind(dce, stat_)["contextHandle"]
            nspi.hNspiQueryRows(dce, handle, pStat=stat_, Count=50, pPropTags=TAGS)
            nspi.hNspiUnbind(dce, handle)
            dce.get_rpc_transport().disconnect()
        if EXCHANGER is not None and served.https_port == 443:
            result = exchanger(served, ["nspi", "list-tables"])
            assert result.returncode == 0, result.stderr
            sealed = True
        closed = served.wait_for(lambda e: e["kind"] == "rpc_vc_closed")
        if sealed and len(closed) < 2:
            closed = served.wait_for(lambda e: e["kind"] == "rpc_vc_closed" and e["vc"] != closed[0]["vc"])
        assert closed
    finally:
        assert served.stop() == 0
    out = state / "rpc.pcapng"
    result = run_mockex("export", "pcap", str(state), str(out))
    assert (result.returncode, result.stdout) == (0, ""), result.stderr
    yield {"state": state, "out": out, "stderr": result.stderr, "sealed": sealed}


def tshark(pcap: Path, *args: str) -> str:
    result = subprocess.run([TSHARK, "-n", "-r", str(pcap), *args], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def operations(pcap: Path, stream: int) -> List[str]:
    lines = tshark(pcap, "-Y", f"tcp.stream == {stream} && dcerpc", "-T", "fields", "-e", "_ws.col.Info")
    return [line for line in lines.splitlines() if line.startswith("Nspi")]


def test_each_virtual_connection_has_its_own_capture_file(captured):
    files = sorted((captured["state"] / CAPTURE_DIR).iterdir())
    assert len(files) == (2 if captured["sealed"] else 1)
    labels = {json.loads(line).get("vc") for line in (captured["state"] / "transcript.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "rpc_vc_closed"}
    assert {f.name[:-len(".bin")] for f in files} == labels
    for path in files:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        cookie, pdus = decode_capture(path.read_bytes())
        assert cookie.hex().startswith(path.stem) and pdus[0].from_client and pdus[0].pdu[2] == 20   # CONN/A1 or B1
    summary = f"PDUs of {len(files)} RPC virtual connections written to {captured['out']}"
    assert captured["stderr"].strip().endswith(summary)


def test_the_transcript_holds_no_pdu_bytes(captured):
    """The capture is a side file: the transcript stays as small as without it."""
    text = (captured["state"] / "transcript.jsonl").read_text()
    _, pdus = decode_capture(next((captured["state"] / CAPTURE_DIR).iterdir()).read_bytes())
    bind = next(p.pdu for p in pdus if p.pdu[2] == 11)
    assert bind.hex() not in text and max(len(line) for line in text.splitlines()) < 4096


@needs_tshark
def test_tshark_dissects_the_export_without_options_or_complaint(captured):
    assert tshark(captured["out"], "-Y", "_ws.malformed || _ws.expert.severity >= warning") == ""
    ports = set(tshark(captured["out"], "-T", "fields", "-e", "tcp.dstport", "-Y", "dcerpc.pkt_type == 0").split())
    assert ports == {str(SERVER_PORT)}
    assert operations(captured["out"], 0) == [
        "NspiBind request", "NspiBind response", "NspiQueryRows request", "NspiQueryRows response",
        "NspiUnbind request", "NspiUnbind response, Status: Unknown MAPISTATUS error 0x00000001"]


@needs_tshark
def test_the_unauthenticated_stubs_decode_to_the_org(captured):
    (rows,) = tshark(captured["out"], "-Y", "nspi.opnum == 3 && dcerpc.pkt_type == 2", "-T", "fields",
                     "-e", "nspi.SRowSet.cRows", "-e", "nspi.SPropValue_CTR.lpszW").splitlines()
    count, strings = rows.split("\t")
    people = sorted(ORG.mailboxes, key=lambda m: m.display_name.lower())
    assert int(count) == len(people)
    assert strings.split(",") == [text for m in people for text in (m.display_name, m.email)]


@needs_tshark
def test_a_sealed_session_still_shows_its_operation_names(captured):
    if not captured["sealed"]:
        pytest.skip("exchanger.py needs the server on :443 (root)")
    assert tshark(captured["out"], "-Y", "tcp.stream == 1 && dcerpc.pkt_type == 0", "-T", "fields",
                  "-e", "dcerpc.auth_level").split() == ["6"] * 3
    assert operations(captured["out"], 1) == [
        "NspiBind request", "NspiBind response", "NspiGetHierarchyInfo request", "NspiGetHierarchyInfo response",
        "NspiUnbind request", "NspiUnbind response"]


def test_a_broken_stream_is_what_tshark_flags(captured, tmp_path):
    """The check can fail: the same capture with the QueryRows answer's stub cut short (its fragment length
    adjusted, so the stream stays in step) is flagged malformed."""
    if TSHARK is None:
        pytest.skip("tshark is not installed")
    connections = read_captures(str(captured["state"]))
    pdus = connections[0].pdus
    index = max((i for i, p in enumerate(pdus) if p.pdu[2] == 2), key=lambda i: len(pdus[i].pdu))
    shorter = bytearray(pdus[index].pdu[:-40])
    shorter[8:10] = struct.pack("<H", len(shorter))
    pdus[index] = CapturedPdu(pdus[index].time, False, bytes(shorter))
    out = tmp_path / "broken.pcapng"
    with open(out, "wb") as handle:
        write_pcapng(handle, connections[:1])
    assert tshark(out, "-Y", "_ws.malformed || _ws.expert.severity >= warning") != ""


def test_a_state_dir_without_capture_is_one_line_and_exit_2(tmp_path):
    result = run_mockex("export", "pcap", str(tmp_path), str(tmp_path / "out.pcapng"))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.strip() == f"mockex export: no RPC capture in {tmp_path / CAPTURE_DIR} " \
                                    "(run `mockex serve --rpc-capture`)"
