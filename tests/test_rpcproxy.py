"""The sans-IO RPC proxy, driven by impacket's own RPC-over-HTTP client code (RPCProxyClient: CONN/A1-B1 handshake,
OUT stream reader, flow control, ping handling) over in-memory sockets, with DCERPC_v5 on top."""
import random
import struct
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from impacket.dcerpc.v5 import rpch, rpcrt
from impacket.dcerpc.v5.transport import HTTPTransport

from harness.org import load_org
from harness.protocols import rpcout, rpcproxy, rts
from harness.protocols.rpcchannel import Close, RpcTarget, Send, StartTimer
from harness.protocols.rpcproxy import HttpError, RpcProxy, parse_target
from harness.services.rpcproxy import RpcProxyService
from harness.transcript import Transcript
from tests.support.echo import ECHO, Echo
from tests.support.fuzz import scaled
from tests.support.rpchttp import chunk_spans, dechunk, is_chunked

ORG = load_org()
ALICE = ORG.find("alice")
VC, OUT_COOKIE, IN_COOKIE, GROUP = b"V" * 16, b"O" * 16, b"I" * 16, b"G" * 16


# ---- target rules ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("query, expected", [
    ("EX01:6004", RpcTarget("EX01", 6004)),
    ("ex01.contoso.test:6001", RpcTarget("ex01.contoso.test", 6001)),
    ("ex02:6002", RpcTarget("ex02", 6002)),
    (f"{ALICE.guid}@contoso.test:6001", RpcTarget(f"{ALICE.guid}@contoso.test", 6001)),
    (f"{ALICE.guid}%40contoso.test:6004", RpcTarget(f"{ALICE.guid}@contoso.test", 6004)),
    ("EX01:6003", RpcTarget("EX01", 6003)),
    ("EX01:593", HttpError(503, "Invalid RPC Port")),
    ("EX01:6005", HttpError(503, "Invalid RPC Port")),
    ("EX01:http", HttpError(503, "Invalid RPC Port")),
    ("EX01", HttpError(503, "Invalid RPC Port")),
    ("EX03:6004", HttpError(404, "Not Found")),
    (f"{ALICE.guid}@fabrikam.test:6001", HttpError(404, "Not Found")),
    ("00000000-0000-0000-0000-000000000000@contoso.test:6001", HttpError(404, "Not Found")),
    ("", HttpError(404, "Not Found")),
    (":6004", HttpError(404, "Not Found")),
])
def test_targets_follow_rpcproxyshim_rules(query, expected):
    assert parse_target(query, ORG) == expected


def test_refused_channels_are_recorded():
    proxy, transcript = make_proxy()
    assert proxy.open_channel("RPC_IN_DATA", "EX01:135", ALICE, ("127.0.0.1", 1)) == HttpError(503, "Invalid RPC Port")
    assert proxy.open_channel("GET", "EX01:6004", ALICE, ("127.0.0.1", 1)).status == 405
    (event,) = transcript.of_kind("rpc_channel")
    assert (event["channel"], event["status"], event["reason"]) == ("in", 503, "Invalid RPC Port")


# ---- an in-memory I/O layer ----------------------------------------------------------------------------------
def make_proxy(**kwargs):
    transcript = Transcript()
    return RpcProxy(ORG, transcript.record, random.Random(3), [Echo()], **kwargs), transcript


class FakeSocket:
    """The client's end of one channel's connection: send() feeds the proxy, recv() reads what it wrote."""

    def __init__(self, wire, channel):
        self.wire, self.channel = wire, channel
        self.inbox = bytearray()
        self.everything = bytearray()
        self.closed = None
        self.timers = []

    def send(self, data):
        self.wire.run(self.wire.proxy.data_received(self.channel, bytes(data)))
        return len(data)

    sendall = send

    def recv(self, size):
        if not self.inbox:
            raise ConnectionResetError(f"nothing to read (closed: {self.closed})")
        data = bytes(self.inbox[:size])
        del self.inbox[:size]
        return data

    def close(self):
        self.wire.run(self.wire.proxy.connection_lost(self.channel, "client closed"))


class Wire:
    """Carries out the proxy's actions the way services/rpcproxy.py does, on FakeSockets."""

    def __init__(self, proxy):
        self.proxy = proxy
        self.sockets = {}

    def open(self, method, query="EX01:6004", mailbox=ALICE):
        channel, actions = self.proxy.open_channel(method, query, mailbox, ("127.0.0.1", 40000 + len(self.sockets)),
                                                   conn=len(self.sockets) + 1)
        sock = self.sockets[channel] = FakeSocket(self, channel)
        self.run(actions)
        return sock

    def run(self, actions):
        for action in actions:
            sock = self.sockets[action.channel]
            if isinstance(action, Send):
                assert sock.closed is None, "the proxy wrote to a closed channel"
                sock.inbox += action.data
                sock.everything += action.data
            elif isinstance(action, Close):
                sock.closed = action.reason
            elif isinstance(action, StartTimer):
                sock.timers.append(action.seconds)


class TunnelTransport(HTTPTransport):
    """impacket's ncacn_http transport with its two HTTP connections replaced by FakeSockets (web.py's job)."""

    def __init__(self, wire, query="EX01:6004"):
        HTTPTransport.__init__(self, "EX01", 6004)
        self.set_rpc_proxy_url("https://mock/rpc/rpcproxy.dll")
        self.wire, self.query = wire, query
        self.sockets = {}

    def create_rpc_in_channel(self):
        self._open("RPC_IN_DATA")

    def create_rpc_out_channel(self):
        self._open("RPC_OUT_DATA")

    def _open(self, method):
        sock = self.sockets[method] = self.wire.open(method, self.query)
        assert sock.recv(8192) == rpcproxy.CONTINUE
        self._RPCProxyClient__channels[method] = SimpleNamespace(sock=sock, close=sock.close)


def tunnel(level=rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY, **proxy_kwargs):
    proxy, transcript = make_proxy(**proxy_kwargs)
    transport = TunnelTransport(Wire(proxy))
    dce = transport.get_dce_rpc()
    dce.set_credentials("alice", ALICE.password, "CONTOSO")
    dce.set_auth_level(level)
    dce.connect()
    dce.bind(ECHO)
    return dce, transport, proxy, transcript


def call(dce, opnum, stub=b""):
    dce.call(opnum, stub)
    return dce.recv()


def out_pdus(sock):
    """The PDUs of an OUT stream after its HTTP response header (de-chunked when it is chunked)."""
    data = bytes(sock.everything)
    end = data.index(b"\r\n\r\n", len(rpcproxy.CONTINUE)) + 4
    data = dechunk(data[end:]) if is_chunked(data[:end]) else data[end:]
    pdus = []
    while data:
        length = struct.unpack_from("<H", data, 8)[0]
        pdus.append(data[:length])
        data = data[length:]
    return pdus


def assert_never_recycles(sock):
    for pdu in out_pdus(sock):
        if pdu[2] == 20:
            assert not rts.decode(pdu).flags & rts.FLAG_RECYCLE_CHANNEL


# ---- the handshake and calls through it ----------------------------------------------------------------------
@pytest.mark.parametrize("framing", rpcout.OUT_FRAMINGS)
def test_impacket_builds_the_tunnel_and_reads_a3_and_c2(framing):
    dce, transport, proxy, transcript = tunnel(out_framing=framing)
    assert transport._RPCProxyClient__serverConnectionTimeout == 120000
    assert transport._RPCProxyClient__serverReceiveWindowSize == 65536
    assert transport._RPCProxyClient__serverChunked == (framing == rpcout.EXCHANGE2013)
    out = transport.sockets["RPC_OUT_DATA"]
    head = bytes(out.everything)
    assert head.startswith(rpcproxy.CONTINUE + rpcout.OUT_CHANNEL_HEADS[framing])
    assert [rts.decode(p).name for p in out_pdus(out)[:2]] == ["CONN/A3", "CONN/C2"]
    assert transport.sockets["RPC_IN_DATA"].everything == bytearray(rpcproxy.CONTINUE)   # IN never gets more
    names = [(e["channel"], e["sent"], e["pdu"]) for e in transcript.of_kind("rts")]
    assert names == [("out", False, "CONN/A1"), ("out", True, "CONN/A3"), ("in", False, "CONN/B1"),
                     ("out", True, "CONN/C2")]
    channels = transcript.of_kind("rpc_channel")
    assert [(c["channel"], c["target"], c["port"], c["user"]) for c in channels] == [
        ("in", "EX01", 6004, "alice@contoso.test"), ("out", "EX01", 6004, "alice@contoso.test")]


@pytest.mark.parametrize("framing", rpcout.OUT_FRAMINGS)
@pytest.mark.parametrize("level", [rpcrt.RPC_C_AUTHN_LEVEL_NONE, rpcrt.RPC_C_AUTHN_LEVEL_CONNECT,
                                   rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY])
def test_calls_through_the_tunnel(level, framing):
    dce, transport, _, transcript = tunnel(level, out_framing=framing)
    assert call(dce, 0, b"over http") == b"over http\0\0\0\0"
    assert call(dce, 2)[:-4].decode() == f"alice@contoso.test|{level}|1"
    bind = transcript.of_kind("rpc_bind")[0]
    assert (bind["interface"], bind["auth_level"], bind["result"]) == ("ECHO", level, "accepted")
    assert bind["vc"] == vc_label(transport)


def vc_label(transport):
    return transport._RPCProxyClient__virtualConnectionCookie.hex()[:8]


def test_secondary_address_is_the_port_from_the_query():
    proxy, _ = make_proxy()
    transport = TunnelTransport(Wire(proxy), query="EX01:6002")
    dce = transport.get_dce_rpc()
    dce.connect()
    ack = dce.bind(ECHO)
    assert rpcrt.MSRPCBindAck(ack.getData())["SecondaryAddr"] == "6002"


def test_b1_before_a1_pairs_all_the_same():
    proxy, transcript = make_proxy()
    wire = Wire(proxy)
    in_sock, out_sock = wire.open("RPC_IN_DATA"), wire.open("RPC_OUT_DATA")
    in_sock.send(rpch.hCONN_B1(VC, IN_COOKIE, GROUP))
    assert out_sock.everything == bytearray(rpcproxy.CONTINUE)
    out_sock.send(rpch.hCONN_A1(VC, OUT_COOKIE, 262144))
    assert [rts.decode(p).name for p in out_pdus(out_sock)] == ["CONN/A3", "CONN/C2"]
    assert proxy.connections[VC].opened


def test_rpc_sent_before_the_out_channel_is_held_until_c2():
    proxy, _ = make_proxy()
    wire = Wire(proxy)
    in_sock = wire.open("RPC_IN_DATA")
    in_sock.send(rpch.hCONN_B1(VC, IN_COOKIE, GROUP))
    bind = rpcrt.MSRPCHeader()
    bind["type"] = rpcrt.MSRPC_BIND
    item = rpcrt.CtxItem()
    item["AbstractSyntax"], item["TransferSyntax"], item["TransItems"] = ECHO, rpcrt.DCERPC.NDRSyntax, 1
    body = rpcrt.MSRPCBind()
    body.addCtxItem(item)
    bind["pduData"] = body.getData()
    in_sock.send(bind.get_packet())
    out_sock = wire.open("RPC_OUT_DATA")
    out_sock.send(rpch.hCONN_A1(VC, OUT_COOKIE, 262144))
    pdus = out_pdus(out_sock)
    assert [p[2] for p in pdus] == [20, 20, rpcrt.MSRPC_BINDACK]


# ---- flow control -------------------------------------------------------------------------------------------------
def test_out_traffic_waits_for_the_clients_window():
    proxy, transcript = make_proxy()
    wire = Wire(proxy)
    in_sock, out_sock = wire.open("RPC_IN_DATA"), wire.open("RPC_OUT_DATA")
    out_sock.send(rpch.hCONN_A1(VC, OUT_COOKIE, 10000))
    in_sock.send(rpch.hCONN_B1(VC, IN_COOKIE, GROUP))
    transport_replies = [p for p in out_pdus(out_sock)]
    assert len(transport_replies) == 2
    vc = proxy.connections[VC]
    big = [struct.pack("<BBBB4sHHL", 5, 0, 2, 3, b"\x10\0\0\0", 4000, 0, 9) + bytes(3984) for _ in range(5)]
    vc.held.extend(big)
    wire.run(proxy.out.release(vc))
    assert len(out_pdus(out_sock)) == 2 + 2                   # 8000 bytes fit in 10000, the third would not
    assert transcript.of_kind("rpc_flow_control")[-1]["in_flight"] == 8000
    in_sock.send(rpch.hFlowControlAckWithDestination(rpch.FDOutProxy, 8000, 10000, OUT_COOKIE))
    assert len(out_pdus(out_sock)) == 2 + 4
    in_sock.send(rpch.hFlowControlAckWithDestination(rpch.FDOutProxy, 8000, 10000, b"X" * 16))
    assert len(out_pdus(out_sock)) == 2 + 4 and transcript.of_kind("rts_ignored")
    in_sock.send(rpch.hFlowControlAckWithDestination(rpch.FDOutProxy, 16000, 10000, OUT_COOKIE))
    assert len(out_pdus(out_sock)) == 2 + 5 and not vc.held


def test_impacket_acknowledges_large_responses_and_keeps_going():
    dce, transport, proxy, transcript = tunnel()
    for _ in range(3):
        assert len(call(dce, 1, struct.pack("<L", 100000))) == 100004
    acks = [e for e in transcript.of_kind("rts") if e["pdu"] == "FlowControlAckWithDestination" and not e["sent"]]
    assert len(acks) >= 2
    assert_never_recycles(transport.sockets["RPC_OUT_DATA"])


def test_in_traffic_is_acknowledged_to_the_client_on_out():
    dce, transport, proxy, transcript = tunnel()
    for _ in range(10):
        call(dce, 0, b"u" * 4000)
    sent = [p for p in out_pdus(transport.sockets["RPC_OUT_DATA"]) if p[2] == 20]
    acks = [rts.as_flow_control_ack_with_destination(rts.decode(p)) for p in sent]
    acks = [a for a in acks if a is not None]
    assert acks and acks[0].destination == rts.FD_CLIENT
    assert acks[0].ack.channel_cookie == transport._RPCProxyClient__inChannelCookie
    assert acks[0].ack.available_window == 65536 and acks[0].ack.bytes_received >= 32768


def test_ping_on_demand_reaches_impacket_and_it_pings_back():
    dce, transport, proxy, transcript = tunnel()
    transport.wire.run(proxy.ping())
    assert call(dce, 0, b"after ping") == b"after ping\0\0\0\0"
    assert transport.rts_ping_received
    received = [e["pdu"] for e in transcript.of_kind("rts") if not e["sent"]]
    assert received.count("Ping") == 2                         # impacket answers with two pings on IN


# ---- failures ------------------------------------------------------------------------------------------------------
def test_closing_one_channel_closes_the_other():
    dce, transport, proxy, transcript = tunnel()
    transport.sockets["RPC_IN_DATA"].close()
    assert transport.sockets["RPC_OUT_DATA"].closed == "IN channel closed"
    assert not proxy.connections
    assert transcript.of_kind("rpc_channel_closed")[0]["reason"] == "client closed"


def test_a_closed_association_closes_both_channels_after_its_fault():
    dce, transport, proxy, transcript = tunnel()
    transport.sockets["RPC_IN_DATA"].send(struct.pack("<BBBB4sHHL", 5, 0, 2, 3, b"\x10\0\0\0", 16, 0, 9))
    out = transport.sockets["RPC_OUT_DATA"]
    assert out_pdus(out)[-1][2] == rpcrt.MSRPC_FAULT
    assert out.closed == "the DCE/RPC association closed" and transport.sockets["RPC_IN_DATA"].closed


@pytest.mark.parametrize("first, reason", [
    (rpch.hCONN_A1(VC, OUT_COOKIE, 262144), "CONN/A1 where CONN/B1 was expected"),
    (rpch.hPing(), "Ping where CONN/B1 was expected"),
    (struct.pack("<BBBB4sHHL", 5, 0, 11, 3, b"\x10\0\0\0", 16, 0, 1), "DCE/RPC PDU (type 11) where CONN/B1"),
    (rpch.hCONN_B1(VC, IN_COOKIE, GROUP)[:18] + b"\x07\x00" + rpch.hCONN_B1(VC, IN_COOKIE, GROUP)[20:],
     "malformed RTS PDU: command 6 type truncated"),
    (b"\x05\x00\x14\x03\x10\x00\x00\x00\x04\x00" + bytes(6), "frag_length 4"),
], ids=["a1-on-in", "ping", "bind", "bad-rts", "short-frame"])
def test_a_bad_start_on_in_closes_the_channel(first, reason):
    proxy, transcript = make_proxy()
    wire = Wire(proxy)
    sock = wire.open("RPC_IN_DATA")
    sock.send(first)
    assert sock.closed and reason in transcript.of_kind("rpc_proxy_error")[0]["reason"]
    assert sock.everything == bytearray(rpcproxy.CONTINUE)


def test_anything_after_a1_on_out_closes_the_connection():
    proxy, transcript = make_proxy()
    wire = Wire(proxy)
    out_sock = wire.open("RPC_OUT_DATA")
    out_sock.send(rpch.hCONN_A1(VC, OUT_COOKIE, 262144) + rpch.hPing())
    assert out_sock.closed == "Ping after CONN/A1 on the OUT channel"


def test_a_second_channel_for_a_virtual_connection_is_refused():
    dce, transport, proxy, transcript = tunnel()
    cookie = transport._RPCProxyClient__virtualConnectionCookie
    intruder = transport.wire.open("RPC_IN_DATA")
    intruder.send(rpch.hCONN_B1(cookie, IN_COOKIE, GROUP))
    assert intruder.closed == "a second IN channel for the virtual connection"
    assert call(dce, 0, b"unharmed") == b"unharmed\0\0\0\0"


def test_connection_timeout_closes_a_lonely_channel_only():
    proxy, transcript = make_proxy(connection_timeout_ms=5000)
    wire = Wire(proxy)
    lonely = wire.open("RPC_OUT_DATA")
    assert lonely.timers == [5.0]
    lonely.send(rpch.hCONN_A1(VC, OUT_COOKIE, 262144))
    wire.run(proxy.timer_expired(lonely.channel))
    assert lonely.closed == "no partner channel within 5000 ms"
    dce, transport, proxy2, _ = tunnel()
    for sock in transport.sockets.values():
        transport.wire.run(proxy2.timer_expired(sock.channel))
        assert sock.closed is None


# ---- hostile streams ---------------------------------------------------------------------------------------------
@settings(max_examples=scaled(150), suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["in", "out"]), st.binary(max_size=120)), max_size=6), st.booleans())
def test_random_channel_traffic_never_escapes(chunks, with_handshake):
    proxy, transcript = make_proxy()
    wire = Wire(proxy)
    socks = {"in": wire.open("RPC_IN_DATA"), "out": wire.open("RPC_OUT_DATA")}
    if with_handshake:
        socks["out"].send(rpch.hCONN_A1(VC, OUT_COOKIE, 262144))
        socks["in"].send(rpch.hCONN_B1(VC, IN_COOKIE, GROUP))
    for side, data in chunks:
        socks[side].send(data)
    assert not transcript.of_kind("rpc_internal_error")
    for sock in socks.values():
        if sock.closed is None:
            continue
        assert transcript.of_kind("rpc_proxy_error", "rpc_close")


# ---- the Twisted-facing adapter ----------------------------------------------------------------------------------
class FakeTimer:
    def __init__(self, seconds, fn, args):
        self.seconds, self.fn, self.args, self.cancelled = seconds, fn, args, False

    def cancel(self):
        assert not self.cancelled, "cancelled twice"
        self.cancelled = True

    def fire(self):
        self.fn(*self.args)


class FakeIO:
    """web.py's ChannelIO as the adapter sees it."""
    peer = ("127.0.0.1", 50000)

    def __init__(self):
        self.written, self.closed, self.timers = bytearray(), False, []

    def write(self, data):
        self.written += data

    def close(self):
        self.closed = True

    def call_later(self, seconds, fn, *args):
        self.timers.append(FakeTimer(seconds, fn, args))
        return self.timers[-1]


def service_channel(method, query="EX01:6004"):
    service = RpcProxyService(ORG, Transcript(), random.Random(1), interfaces=[Echo()])
    io = FakeIO()
    request = SimpleNamespace(method=method, query=query, conn=SimpleNamespace(conn_id=7))
    return service, service.open_channel(request, ALICE, io), io


def test_service_writes_the_handshake_and_expires_a_lonely_channel():
    service, channel, io = service_channel("RPC_OUT_DATA")
    assert bytes(io.written) == rpcproxy.CONTINUE and [t.seconds for t in io.timers] == [120.0]
    channel.data_received(rpch.hCONN_A1(VC, OUT_COOKIE, 262144))
    assert bytes(io.written).startswith(rpcproxy.CONTINUE + rpcout.OUT_CHANNEL_HEADS[rpcout.EXCHANGE2013])
    io.timers[0].fire()
    assert io.closed and not service.proxy.connections


def test_service_cancels_the_timer_when_the_connection_goes():
    service, channel, io = service_channel("RPC_IN_DATA")
    channel.connection_lost("connection lost")
    assert io.timers[0].cancelled


def test_service_passes_refusals_back_to_web():
    _, refusal, io = service_channel("RPC_IN_DATA", query="EX01:80")
    assert refusal == HttpError(503, "Invalid RPC Port") and not io.written


# ---- the OUT channel framing personas -----------------------------------------------------------------------------
def handshake(proxy, **open_kwargs):
    """OUT (CONN/A1) then IN (CONN/B1) on a bare proxy: the bytes written to OUT, and the two channels."""
    peer = ("127.0.0.1", 50000)
    out_channel, _ = proxy.open_channel("RPC_OUT_DATA", "EX01:6004", ALICE, peer, **open_kwargs)
    in_channel, _ = proxy.open_channel("RPC_IN_DATA", "EX01:6004", ALICE, peer)
    actions = proxy.data_received(out_channel, rpch.hCONN_A1(VC, OUT_COOKIE, 262144))
    actions += proxy.data_received(in_channel, rpch.hCONN_B1(VC, IN_COOKIE, GROUP))
    written = b"".join(a.data for a in actions if isinstance(a, Send) and a.channel is out_channel)
    return written, out_channel, in_channel


A3 = rts.encode(rts.conn_a3(rpcproxy.CONNECTION_TIMEOUT_MS))
C2 = rts.encode(rts.conn_c2(rpcproxy.IN_RECEIVE_WINDOW, rpcproxy.CONNECTION_TIMEOUT_MS))


def test_exchange2013_sends_a_chunked_200_with_one_pdu_per_chunk():
    proxy, transcript = make_proxy()
    written, _, _ = handshake(proxy)
    assert written == (b"HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"%x\r\n" % len(A3) + A3 + b"\r\n" + b"%x\r\n" % len(C2) + C2 + b"\r\n")
    assert b"Content-Length" not in written
    out = [e for e in transcript.of_kind("rpc_channel") if e["channel"] == "out"]
    assert [e["framing"] for e in out] == ["exchange2013"]


def test_legacy_sends_content_length_and_raw_pdus():
    proxy, _ = make_proxy(out_framing="legacy")
    written, _, _ = handshake(proxy)
    assert written == (b"HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\nContent-Length: 1073741824\r\n\r\n"
                       + A3 + C2)


def test_a_channel_may_override_the_proxy_framing():
    proxy, _ = make_proxy()
    written, _, _ = handshake(proxy, framing="legacy")
    assert written.endswith(b"Content-Length: 1073741824\r\n\r\n" + A3 + C2)
    with pytest.raises(ValueError):
        make_proxy(out_framing="iis6")


@pytest.mark.parametrize("framing", rpcout.OUT_FRAMINGS)
def test_rpc_pdus_and_pings_are_framed_like_the_handshake(framing):
    dce, transport, proxy, _ = tunnel(out_framing=framing)
    assert call(dce, 0, b"x" * 5000) == b"x" * 5000 + b"\0" * 4
    transport.wire.run(proxy.ping())
    out = bytes(transport.sockets["RPC_OUT_DATA"].everything)
    body = out[out.index(b"\r\n\r\n", len(rpcproxy.CONTINUE)) + 4:]
    pdus = out_pdus(transport.sockets["RPC_OUT_DATA"])
    assert rts.decode(pdus[-1]).name == "Ping"
    if framing == rpcout.LEGACY:
        assert body == b"".join(pdus)
    else:                                                   # each chunk is exactly one PDU, sized as the PDU
        spans = chunk_spans(body)
        assert [body[start:end] for start, end, _ in spans] == pdus
        assert all(end - start == size for start, end, size in spans)
        assert spans[-1][1] + 2 == len(body)                # no last-chunk: the channel stays open


def test_a_cut_inside_a_chunk_announces_the_whole_pdu_then_resets():
    from harness.faults.base import catalog
    from harness.hooks import FaultSet, Scope
    faults = FaultSet([catalog()["rpc.out-channel-drop"](after_bytes=len(A3) + 10)])
    proxy, _ = make_proxy(faults=faults)
    cut = faults.first(rpcproxy.rpc_channel_hook, Scope("EX01"), SimpleNamespace(method="RPC_OUT_DATA"), "EX01", 6004)
    written, out_channel, _ = handshake(proxy, cut=cut)
    assert written.endswith(b"%x\r\n" % len(A3) + A3 + b"\r\n" + b"%x\r\n" % len(C2) + C2[:10])
    assert dechunk(written[written.index(b"\r\n\r\n") + 4:]) == A3 + C2[:10]
    assert out_channel.closed


def test_the_legacy_fault_picks_the_framing_per_channel():
    from harness.faults.base import catalog
    from harness.hooks import FaultSet
    faults = FaultSet([catalog()["rpc.legacy-out-framing"](host="EX01")])
    service = RpcProxyService(ORG, Transcript(), random.Random(1), interfaces=[Echo()], faults=faults)
    heads = {}
    for query in ("EX01:6004", "ex01.contoso.test:6004"):
        io = FakeIO()
        request = SimpleNamespace(method="RPC_OUT_DATA", query=query, conn=SimpleNamespace(conn_id=7))
        channel = service.open_channel(request, ALICE, io)
        channel.data_received(rpch.hCONN_A1(bytes([len(heads)]) * 16, OUT_COOKIE, 262144))
        heads[query] = bytes(io.written)[len(rpcproxy.CONTINUE):]
    assert heads["EX01:6004"].startswith(rpcout.OUT_CHANNEL_HEADS["legacy"])
    assert heads["ex01.contoso.test:6004"].startswith(rpcout.OUT_CHANNEL_HEADS["exchange2013"])
