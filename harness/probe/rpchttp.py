"""RPC over HTTP v2 for the probe: an impacket DCERPCTransport whose IN and OUT channels are the probe's own HTTP
connections (resolved address, SNI and Host = the proxy name, strict TLS, any port), so impacket's DCERPC_v5 does
the bind, NTLM at packet privacy and the calls, while every failure of the proxy is classified.

impacket's own ncacn_http transport cannot be used here: its RpcProxy must be port 80/443 in the string binding,
``set_rpc_proxy_url`` reaches other ports but its connections resolve the name with the system resolver and use
an unverifying TLS context (``impacket/http.py``), which would put credentials on an unchecked connection.
"""
from __future__ import annotations

import random
import re
from typing import List, Optional

from impacket.dcerpc.v5.transport import DCERPCTransport

from harness.probe.hosts import Connector
from harness.probe.http import Credentials, HttpConnection, NtlmHandshake, Response, basic_authorization, ntlm_challenge
from harness.probe.report import StepFailed
from harness.protocols import rts
from harness.protocols.dcerpc import FramingError, PduFramer

PROXY_PATH = "/rpc/rpcproxy.dll"
IN_CHANNEL_LENGTH = 1073741824      # what Outlook and impacket announce for RPC_IN_DATA
OUT_CHANNEL_LENGTH = 76             # the CONN/A1 body
RECEIVE_WINDOW = 262144             # advertised in CONN/A1
CHANNEL_LIFETIME = 1073741824
CLIENT_KEEPALIVE_MS = 300000
RTS_PTYPE = 20
CHANNEL_HEADERS = [("Cache-Control", "no-cache"), ("Connection", "Keep-Alive"), ("Expect", "100-continue"),
                   ("Accept", "application/rpc"), ("Pragma", "No-cache"), ("User-Agent", "MSRPC")]


def classify_refusal(response: Response, channel: str) -> StepFailed:
    """An RPC proxy answer other than 100 Continue / 200 as a verdict."""
    line = f"{response.status} {response.reason}".strip()
    where = f"in the {channel} channel"
    if response.status == 401:
        return StepFailed("http-401", f"401 Unauthorized {where}: the proxy rejected the credentials", status=401)
    if response.status == 404:
        return StepFailed("unknown-rpc-server", f"{line} {where}: the proxy does not know the RPC server name",
                          status=404)
    if response.status == 503 and "invalid rpc port" in response.reason.lower():
        return StepFailed("invalid-rpc-port", f"{line} {where}", status=503)
    if response.status == 503:
        code = re.search(r"RPC Error:\s*([0-9A-Fa-f]{1,8})", response.reason)
        return StepFailed("rpc-proxy-503", f"{line} {where}", status=503,
                          rpc_error=f"0x{int(code.group(1), 16):x}" if code else None)
    return StepFailed("rpc-proxy-http-error", f"{line} {where}", status=response.status)


class RpcOverHttp(DCERPCTransport):
    def __init__(self, connector: Connector, rpc_server: str, rpc_port: int, credentials: Credentials, scheme: str,
                 rng: random.Random):
        super().__init__(rpc_server, rpc_port)
        self.set_credentials(credentials.user, credentials.password, credentials.domain)
        self._connector = connector
        self._credentials = credentials
        self._scheme = scheme
        self._target = f"{PROXY_PATH}?{rpc_server}:{rpc_port}"
        self._cookies = {name: rng.getrandbits(128).to_bytes(16, "little")
                         for name in ("vc", "in", "out", "group")}
        self._in: Optional[HttpConnection] = None
        self._out: Optional[HttpConnection] = None
        self._framer = PduFramer()
        self._pending: List[bytes] = []
        self._received = 0
        self._acked = 0
        self.events: List[str] = []

    # ---- establishment (MS-RPCH 3.2.2.4.1) -------------------------------------------------------------------
    def connect(self) -> int:
        self._in = self._open_channel("RPC_IN_DATA", IN_CHANNEL_LENGTH)
        self._out = self._open_channel("RPC_OUT_DATA", OUT_CHANNEL_LENGTH)
        cookies = self._cookies
        self._out.send_data(rts.encode(rts.RtsPdu(rts.FLAG_NONE, (
            rts.Version(1), rts.Cookie(cookies["vc"]), rts.Cookie(cookies["out"]),
            rts.ReceiveWindowSize(RECEIVE_WINDOW)))))
        self._in.send_data(rts.encode(rts.RtsPdu(rts.FLAG_NONE, (
            rts.Version(1), rts.Cookie(cookies["vc"]), rts.Cookie(cookies["in"]), rts.ChannelLifetime(CHANNEL_LIFETIME),
            rts.ClientKeepalive(CLIENT_KEEPALIVE_MS), rts.AssociationGroupId(cookies["group"])))))
        head = self._out.read_head(skip_informational=True)
        if head.status != 200:
            raise classify_refusal(head, "RPC_OUT_DATA")
        for expected in ("CONN/A3", "CONN/C2"):
            name = self._next_rts_name()
            if name != expected:
                raise StepFailed("rpc-channel-broken", f"expected {expected} on the OUT channel, got {name}")
            self.events.append(name)
        return 1

    def _open_channel(self, method: str, length: int) -> HttpConnection:
        conn = self._connector.open()
        try:
            authorization = self._authorize(conn, method)
            conn.send_head(method, self._target, CHANNEL_HEADERS + [("Content-Length", str(length)),
                                                                    ("Authorization", authorization)])
            head = conn.read_head(skip_informational=False)
        except BaseException:
            conn.close()
            raise
        if head.status != 100:
            conn.close()
            raise classify_refusal(head, method)
        return conn

    def _authorize(self, conn: HttpConnection, method: str) -> str:
        """The Authorization value for the channel request; NTLM/Negotiate take their first leg on ``conn``."""
        if self._scheme == "Basic":
            return basic_authorization(self._credentials)
        handshake = NtlmHandshake(self._credentials)
        first = conn.request(method, self._target, CHANNEL_HEADERS + [
            ("Authorization", f"{self._scheme} {handshake.first_token()}")])
        challenge = ntlm_challenge(first, self._scheme)
        if first.status != 401 or challenge is None:
            raise classify_refusal(first, method) if first.status != 401 else StepFailed(
                "http-401", f"no {self._scheme} challenge from the proxy in the {method} channel")
        return f"{self._scheme} {handshake.answer(challenge)}"

    # ---- the OUT stream ------------------------------------------------------------------------------------
    def _next_pdu(self) -> bytes:
        while not self._pending:
            try:
                data = self._out.read_data()
            except StepFailed as failure:
                if failure.reason == "timeout":
                    raise StepFailed("rts-timeout", f"the RPC proxy sent nothing more: {failure.message}")
                raise StepFailed("rpc-channel-broken", f"the OUT channel broke: {failure.message}")
            if not data:
                raise StepFailed("rpc-channel-broken", "the RPC proxy closed the OUT channel")
            try:
                self._pending.extend(self._framer.feed(data))
            except FramingError as exc:
                raise StepFailed("rpc-channel-broken", f"the OUT channel carries no valid PDUs: {exc}")
        return self._pending.pop(0)

    def _next_rts_name(self) -> str:
        pdu = self._next_pdu()
        if pdu[2] != RTS_PTYPE:
            return f"a DCE/RPC PDU of type {pdu[2]}"
        try:
            return rts.decode(pdu).name
        except rts.RtsError as exc:
            raise StepFailed("rpc-channel-broken", f"malformed RTS PDU on the OUT channel: {exc.reason}")

    def _acknowledge(self, size: int) -> None:
        """Flow control: tell the outbound proxy what was consumed once half the window is used."""
        self._received += size
        if self._received - self._acked >= RECEIVE_WINDOW // 2:
            ack = rts.flow_control_ack_with_destination(rts.FD_OUT_PROXY, self._received, RECEIVE_WINDOW,
                                                        self._cookies["out"])
            self._in.send_data(rts.encode(ack))
            self._acked = self._received

    # ---- what DCERPC_v5 calls ------------------------------------------------------------------------------
    def send(self, data, forceWriteAndx=0, forceRecv=0) -> None:
        self._in.send_data(bytes(data))

    def recv(self, forceRecv=0, count=0) -> bytes:
        while True:
            pdu = self._next_pdu()
            if pdu[2] == RTS_PTYPE:   # pings and acknowledgements: nothing to answer on this side
                continue
            self._acknowledge(len(pdu))
            return pdu

    def disconnect(self) -> int:
        for conn in (self._in, self._out):
            if conn is not None:
                conn.close()
        self._in = self._out = None
        return 1

    def get_socket(self):
        return self._out.sock if self._out is not None else None
