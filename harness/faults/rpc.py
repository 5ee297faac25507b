"""RPC over HTTP faults: the RPC proxy refusing channels, the RTS channel machinery misbehaving, and the DCE/RPC
server refusing binds or calls.

Scope: `host` is the RPC server name the client asked the proxy for (the `?<name>:<port>` of /rpc/rpcproxy.dll:
EX01, ex01.contoso.test or <mailbox guid>@contoso.test, as the client wrote it), `user` the HTTP-authenticated
mailbox's address.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Dict, List, Optional

from harness.faults.base import Fault, FaultParamError, Param, register
from harness.protocols import rts
from harness.protocols.dcerpc import NAK_NAMES, NAK_NOT_SPECIFIED, BindNak, CallFault
from harness.protocols.dcerpc.binding import BindAckEdit
from harness.protocols.dcerpc.pdus import REASON_NAMES
from harness.protocols.rpcchannel import IN, METHODS, OUT, ChannelCut
from harness.protocols.rpcout import LEGACY, OutFraming, RtsAction
from harness.protocols.rpcproxy import CONNECTION_TIMEOUT_MS, IN_RECEIVE_WINDOW, HttpError

INTERFACES = ("nspi", "rfr", "emsmdb", "asyncemsmdb")
RPC_S_SERVER_UNAVAILABLE = 0x000006BA
RPC_C_AUTHN_LEVEL_PKT_PRIVACY = 6
_HEX_CODE = re.compile(r"^[0-9A-Fa-f]{1,8}$")


class RpcScopedFault(Fault):
    """Base of the rpc and mailbox faults, whose `host` scope is an RPC server name rather than a DNS/HTTP host."""

    @classmethod
    def all_params(cls) -> Dict[str, Param]:
        return {**super().all_params(), "host": Param(str, None, "apply only to this RPC server name, as the client "
                                                                 "asks the proxy for it: EX01, ex01.contoso.test or "
                                                                 "<mailbox guid>@contoso.test")}


def _names(fault: Fault) -> Optional[List[str]]:
    names = fault.values["names"]
    return None if names is None else [name.lower() for name in names]


class _RefusedTarget(RpcScopedFault):
    """Refuses channels for the listed RPC server names (every name when none are listed)."""

    def __init__(self, rng=None, **values):
        super().__init__(rng, **values)
        self.names = _names(self)

    def refuses(self, server: str) -> bool:
        return self.names is None or server.lower() in self.names


@register
class ProxyError(RpcScopedFault):
    name = "rpc.proxy-error"
    summary = "The RPC proxy answers the OUT channel with `HTTP/1.0 503 RPC Error: <code>` instead of 200."
    description = ("The proxy authenticated both channels, then could not reach the RPC server behind it: it sends "
                   "the RPC status in hex in place of the OUT channel's `200 Success` (6BA = RPC_S_SERVER_UNAVAILABLE, "
                   "the back end is down or blocked; 5 = access denied; 6D9 = no endpoints). "
                   "Typical of a stopped RPC Client Access service or a firewall between CAS and mailbox server.")
    symptoms = {"impacket": "RPCProxyClientException: RPC Proxy CONN/A1 request failed, code: 0x6ba - "
                            "RPC_S_SERVER_UNAVAILABLE",
                "exchanger.py": "Protocol failed: ... code: 0x6ba; 'This usually means the target has no ACL to "
                                "connect to this endpoint using RPC Proxy'"}
    analyzer = {"fails_at": "rpc-proxy", "reason": "rpc-proxy-503"}
    params = {"code": Param(str, "6BA", 'the RPC status the proxy reports, in hex (quote it: "5")')}

    @classmethod
    def validate(cls, values):
        result = super().validate(values)
        if not _HEX_CODE.match(result["code"]):
            raise FaultParamError("code", f"{result['code']!r} is not a hex status", "e.g. 6BA or 5")
        return result

    def __init__(self, rng=None, **values):
        super().__init__(rng, **values)
        self.status_line = f"HTTP/1.0 503 RPC Error: {self.values['code'].upper()}\r\n\r\n".encode("ascii")

    def on_rts(self, scope, direction, pdu_name):
        if pdu_name == "CONN/A3":
            return RtsAction("refuse", self.status_line)
        return None


@register
class InvalidPort(_RefusedTarget):
    name = "rpc.invalid-port"
    summary = "The RPC proxy refuses the RPC server port: `503 Invalid RPC Port` (ValidPorts does not list it)."
    description = ("RpcProxy's ValidPorts (HKLM\\Software\\Microsoft\\Rpc\\RpcProxy) does not allow the name:port "
                   "pair: after a server rename, for a server added later, or with ports missing from the list. "
                   "Both channels get the 503 on their authenticated request.")
    symptoms = {"impacket": "RPCProxyClientException: RPC Proxy Client: NTLM authentication failed in RPC_IN_DATA "
                            "channel: HTTP/1.1 503 Invalid RPC Port",
                "exchanger.py": "Protocol failed: ... 503 Invalid RPC Port"}
    analyzer = {"fails_at": "rpc-proxy", "reason": "invalid-rpc-port"}
    params = {"ports": Param(list, None, "the refused ports (default: every port)", items=int),
              "names": Param(list, None, "the RPC server names refused (default: every name)", items=str)}

    def __init__(self, rng=None, **values):
        super().__init__(rng, **values)
        self.ports = self.values["ports"]

    def on_rpc_channel(self, scope, request, server, port):
        if self.refuses(server) and (self.ports is None or port in self.ports):
            return HttpError(503, "Invalid RPC Port")
        return None


@register
class UnknownServer(_RefusedTarget):
    name = "rpc.unknown-server"
    summary = "The RPC proxy does not know the RPC server name: `404 Not Found` on both channels."
    description = ("The name in ?<name>:<port> is not one the proxy serves: a stale or mistyped server name in the "
                   "profile, a mailbox GUID the CAS cannot place, or a reverse proxy (TMG) that only publishes some "
                   "names. Exchange 2013 accepts the NetBIOS name only for compatibility.")
    symptoms = {"impacket": "RPCProxyClientException: ... failed in RPC_IN_DATA channel: HTTP/1.1 404 Not Found",
                "exchanger.py": "Protocol failed: ... RPC_IN_DATA channel: HTTP/1.1 404 Not Found"}
    analyzer = {"fails_at": "rpc-proxy", "reason": "unknown-rpc-server"}
    params = {"names": Param(list, None, "the RPC server names refused (default: every name)", items=str)}

    def on_rpc_channel(self, scope, request, server, port):
        return HttpError(404, "Not Found") if self.refuses(server) else None


@register
class NoConnA3(RpcScopedFault):
    name = "rpc.no-conn-a3"
    summary = "The OUT channel's `200 Success` comes, then nothing: no CONN/A3 (and no CONN/C2) ever arrives."
    description = ("A reverse proxy or load balancer that buffers response bodies holds everything after the "
                   "RPC_OUT_DATA header back (it waits for the announced 1 GiB); the client's RTS handshake stalls "
                   "until its own timeout.")
    symptoms = {"impacket": "hangs in connect() reading CONN/A3; with a socket timeout: TimeoutError "
                            "'The read operation timed out'",
                "outlook": "the connection stays in 'Connecting' and is eventually dropped"}
    analyzer = {"fails_at": "rpc-proxy", "reason": "rts-timeout"}

    def on_rts(self, scope, direction, pdu_name):
        return RtsAction("drop")


@register
class NoConnC2(RpcScopedFault):
    name = "rpc.no-conn-c2"
    summary = "CONN/A3 arrives, CONN/C2 never does: the virtual connection never opens for the client."
    description = ("The proxy cannot finish the connection to the RPC server (CONN/B2 and C1 go unanswered behind "
                   "it), so it never tells the client the virtual connection is open.")
    symptoms = {"impacket": "hangs in connect() reading CONN/C2; with a socket timeout: TimeoutError "
                            "'The read operation timed out'"}
    analyzer = {"fails_at": "rpc-proxy", "reason": "rts-timeout"}

    def on_rts(self, scope, direction, pdu_name):
        return RtsAction("drop") if pdu_name == "CONN/C2" else None


class _CutChannel(RpcScopedFault):
    """Reset the virtual connection once one channel has carried ``after_bytes`` body bytes."""
    direction = ""

    def __init__(self, rng=None, **values):
        super().__init__(rng, **values)
        self.cut = ChannelCut(self.values["after_bytes"])

    def on_rpc_channel(self, scope, request, server, port):
        return self.cut if METHODS.get(request.method) == self.direction else None


@register
class OutChannelDrop(_CutChannel):
    name = "rpc.out-channel-drop"
    summary = "The OUT channel is reset (TCP RST) after a given number of body bytes."
    description = ("A load balancer or reverse proxy with a response size or idle limit kills the long-lived "
                   "RPC_OUT_DATA response; the IN channel goes with it. The default of 28 bytes lets CONN/A3 "
                   "through and cuts before CONN/C2.")
    symptoms = {"impacket": "connect() never completes: the reset reads as EOF (Python ssl turns the RST into b'' "
                            "and impacket spins on it; with suppress_ragged_eofs=False: ssl.SSLEOFError)",
                "windows clients": "WSAECONNRESET: the connection was reset"}
    analyzer = {"fails_at": "rpc-proxy", "reason": "rpc-channel-broken"}
    params = {"after_bytes": Param(int, 28, "OUT body bytes (RTS and RPC PDUs after the 200 header, chunk "
                                            "framing not counted) sent before the reset", minimum=0)}
    direction = OUT


@register
class InChannelReset(_CutChannel):
    name = "rpc.in-channel-reset"
    summary = "The IN channel is reset (TCP RST) once RPC traffic on it passes a given number of bytes."
    description = ("Something between client and proxy (an IPS, a proxy that does not stream request bodies) lets "
                   "the RTS handshake through, then kills the RPC_IN_DATA request once real traffic flows; the OUT "
                   "channel is reset with it. With the default of 0 the first bind is never answered.")
    symptoms = {"impacket": "bind() never gets an answer: the reset reads as EOF (Python ssl turns the RST into "
                            "b'' and impacket spins on it; with suppress_ragged_eofs=False: ssl.SSLEOFError)"}
    analyzer = {"fails_at": "nspi", "reason": "rpc-channel-broken"}
    params = {"after_bytes": Param(int, 0, "bytes of PDUs after CONN/B1 let through; the PDU that goes past them "
                                           "is not", minimum=0)}
    direction = IN


@register
class LegacyOutFraming(RpcScopedFault):
    name = "rpc.legacy-out-framing"
    summary = ("The OUT channel answers as the IIS rpcproxy of Exchange 2007/2010: `Content-Length: 1073741824` and "
               "raw PDUs instead of a chunked body.")
    description = ("Exchange 2013's front end streams RPC_OUT_DATA as `Transfer-Encoding: chunked`, one PDU per "
                   "chunk; an Exchange 2007/2010 CAS still in the path (coexistence, a legacy namespace) or a "
                   "reverse proxy that buffers and re-frames answers with the fixed 1 GiB body MS-RPCH 2.1.2.1.4 "
                   "describes. A client must read both.")
    symptoms = {"impacket": "nothing: it reads both shapes (it looks for `Transfer-Encoding: chunked` in the 200)",
                "clients that only de-chunk": "the first PDU is taken for a chunk size line; the handshake never "
                                              "completes"}
    persona = OutFraming(LEGACY)

    def on_rpc_out_framing(self, scope, server):
        return self.persona


@register
class ServerPing(RpcScopedFault):
    name = "rpc.server-ping"
    summary = "The OUT proxy sends Ping RTS PDUs as soon as the virtual connection opens."
    description = ("The outbound proxy keeps idle channels alive with Ping PDUs (every few minutes on IIS); a client "
                   "must skip them (and may ping back on IN). The pings follow CONN/C2 here so that even a short "
                   "session meets them.")
    symptoms = {"impacket": "logs 'Ping RTS PDU packet received. Is the RPC Server alive?', answers with two "
                            "pings on IN and carries on",
                "exchanger.py": "prints that error line and still completes the command"}
    params = {"count": Param(int, 1, "how many Ping PDUs follow CONN/C2", minimum=1)}

    def __init__(self, rng=None, **values):
        super().__init__(rng, **values)
        self.action = RtsAction("follow", then=(rts.ping(),) * self.values["count"])

    def on_rts(self, scope, direction, pdu_name):
        return self.action if pdu_name == "CONN/C2" else None


@register
class ChannelRecycle(RpcScopedFault):
    name = "rpc.channel-recycle"
    summary = "The OUT proxy asks the client to recycle its OUT channel (OUT_R1/A2) right after CONN/C2."
    description = ("An OUT channel whose lifetime is used up, or a proxy being drained, asks the client to open a "
                   "successor OUT channel (MS-RPCH 3.2.2.5.6). Windows clients do; impacket does not implement "
                   "recycling. The old channel keeps working here, so a client that ignores the request carries on.")
    symptoms = {"impacket": "RPCProxyClientException: The server requested recycling of a virtual OUT channel, "
                            "but this function is not supported!"}

    # MS-RPCH 2.2.4.24 OUT_R1/A2: RECYCLE_CHANNEL with Destination FDClient
    action = RtsAction("follow", then=(rts.RtsPdu(rts.FLAG_RECYCLE_CHANNEL, (rts.Destination(rts.FD_CLIENT),)),))

    def on_rts(self, scope, direction, pdu_name):
        return self.action if pdu_name == "CONN/C2" else None


U32_LIMIT = 1 << 32
# Commands an RTS answer may carry beyond its own (MS-RPCH 2.2.3.5), each with a plausible value; a client must skip
# or refuse what it does not expect there.
EXTRA_COMMANDS = {
    "Empty": rts.Empty(), "Padding": rts.Padding(8), "Version": rts.Version(1),
    "ConnectionTimeout": rts.ConnectionTimeout(CONNECTION_TIMEOUT_MS), "ReceiveWindowSize": rts.ReceiveWindowSize(
        IN_RECEIVE_WINDOW), "Cookie": rts.Cookie(bytes(range(16))), "ChannelLifetime": rts.ChannelLifetime(
        0x40000000), "ClientKeepalive": rts.ClientKeepalive(300000), "NegativeANCE": rts.NegativeANCE(),
    "ANCE": rts.ANCE(), "ClientAddress": rts.ClientAddress(ipaddress.IPv4Address("127.0.0.1")),
    "AssociationGroupId": rts.AssociationGroupId(bytes(range(16, 32))), "Destination": rts.Destination(rts.FD_CLIENT),
    "PingTrafficSentNotify": rts.PingTrafficSentNotify(0)}
MUTABLE_RTS = ("CONN/A3", "CONN/C2")


@register
class RtsMutate(RpcScopedFault):
    name = "rpc.rts-mutate"
    summary = "CONN/A3 or CONN/C2 goes out with other field values, flags or commands (dropped, added, reordered)."
    description = ("An RTS answer as a proxy from another vendor, an older IIS rpcproxy or a buggy load balancer "
                   "could send it: another Version, a receive window of 0 or 4 GiB, a connection timeout of 0, "
                   "unexpected flags, a command missing or one more (Padding, Empty, a Cookie...), the commands in "
                   "reverse order. The PDU stays well-formed RTS (MS-RPCH 2.2.3), so it reaches the client's "
                   "parser; the `mockex fuzz --layer rts` strategy draws these.")
    symptoms = {"impacket": "reads CONN/A3 and CONN/C2 by position and size: a missing or extra command may give "
                            "struct.error or an IndexError, a renamed PDU is accepted as long as the sizes fit"}
    params = {"pdu": Param(str, "CONN/C2", "the RTS PDU changed", MUTABLE_RTS),
              "flags": Param(int, None, "the RTS flags sent instead of 0 (a u16)", minimum=0, below=1 << 16),
              "version": Param(int, None, "CONN/C2's Version value instead of 1", minimum=0, below=U32_LIMIT),
              "receive_window": Param(int, None, "CONN/C2's ReceiveWindowSize instead of 65536", minimum=0,
                                      below=U32_LIMIT),
              "connection_timeout": Param(int, None, "the ConnectionTimeout in ms instead of 120000", minimum=0,
                                          below=U32_LIMIT),
              "drop": Param(list, None, "commands left out, by name (Version, ReceiveWindowSize, "
                                        "ConnectionTimeout)", items=str),
              "extra": Param(list, None, "commands appended, by name: " + ", ".join(EXTRA_COMMANDS), items=str),
              "reverse": Param(bool, False, "send the commands in reverse order")}

    @classmethod
    def validate(cls, values):
        result = super().validate(values)
        unknown = [name for name in result["extra"] or () if name not in EXTRA_COMMANDS]
        if unknown:
            raise FaultParamError("extra", f"unknown RTS command {unknown[0]!r}", "one of " + ", ".join(EXTRA_COMMANDS))
        return result

    def __init__(self, rng=None, **values):
        super().__init__(rng, **values)
        self.action = RtsAction("replace", then=(self.build(),))

    def build(self) -> rts.RtsPdu:
        v = self.values
        timeout = CONNECTION_TIMEOUT_MS if v["connection_timeout"] is None else v["connection_timeout"]
        if v["pdu"] == "CONN/A3":
            commands: List[rts.Command] = [rts.ConnectionTimeout(timeout)]
        else:
            window = IN_RECEIVE_WINDOW if v["receive_window"] is None else v["receive_window"]
            commands = [rts.Version(1 if v["version"] is None else v["version"]), rts.ReceiveWindowSize(window),
                        rts.ConnectionTimeout(timeout)]
        dropped = set(v["drop"] or ())
        commands = [c for c in commands if type(c).__name__ not in dropped]
        commands += [EXTRA_COMMANDS[name] for name in v["extra"] or ()]
        if v["reverse"]:
            commands.reverse()
        return rts.RtsPdu(rts.FLAG_NONE if v["flags"] is None else v["flags"], tuple(commands))

    def on_rts(self, scope, direction, pdu_name):
        return self.action if pdu_name == self.values["pdu"] else None


class _BindFault(RpcScopedFault):
    """Refuses binds to ``interface`` (every interface when not given)."""

    def applies(self, interface: str) -> bool:
        return self.values["interface"] in (None, interface)


@register
class BindRefused(_BindFault):
    name = "rpc.bind-nak"
    summary = "The DCE/RPC server answers the bind with bind_nak."
    description = ("The RPC server behind the proxy refuses the association: an interface that is not registered "
                   "(RPC Client Access or Address Book service stopped), too many associations, or a security "
                   "package it does not accept.")
    symptoms = {"impacket": "DCERPCException: Bind context rejected: reason_not_specified (from dce.bind())"}
    analyzer = {"fails_at": "nspi", "reason": "rpc-bind-failed"}
    params = {"interface": Param(str, None, "the interface refused (default: every interface)", INTERFACES),
              "reason": Param(int, NAK_NOT_SPECIFIED, "the bind_nak reason", tuple(NAK_NAMES))}

    def on_rpc_bind(self, scope, interface, auth_level):
        if self.applies(interface):
            return BindNak(self.values["reason"], f"{interface} refused by a fault")
        return None


@register
class AuthLevelRefused(_BindFault):
    name = "rpc.auth-level-refused"
    summary = "Binds below a minimum RPC authentication level are refused with bind_nak."
    description = ("The RPC server insists on authenticated, encrypted RPC (Outlook Anywhere uses packet privacy, "
                   "level 6) and refuses anonymous or merely signed binds, as Exchange does without RpcProxyShim. "
                   "Clients binding at the minimum or above are served normally.")
    symptoms = {"impacket": "DCERPCException: Bind context rejected: reason_not_specified, for "
                            "set_auth_level() below the minimum"}
    params = {"min_level": Param(int, RPC_C_AUTHN_LEVEL_PKT_PRIVACY, "the lowest RPC_C_AUTHN_LEVEL accepted",
                                 (2, 3, 4, 5, 6)),
              "interface": Param(str, None, "the interface refused (default: every interface)", INTERFACES)}

    def on_rpc_bind(self, scope, interface, auth_level):
        if self.applies(interface) and auth_level < self.values["min_level"]:
            return BindNak(NAK_NOT_SPECIFIED, f"auth level {auth_level} is below {self.values['min_level']}")
        return None


@register
class CallFails(RpcScopedFault):
    name = "rpc.call-fault"
    summary = "A call to an interface (and opnum) gets a DCE/RPC fault with a given status."
    description = ("The server stub fails the call: RPC_S_SERVER_UNAVAILABLE (0x6BA) when the address book or store "
                   "behind it is down, nca_s_fault_unspec (0x1C000012) for a crash in the handler, "
                   "rpc_s_access_denied (5). The association stays up. The step the analyzer reports follows the "
                   "interface: nspi, referral (rfr) or mailbox-logon (emsmdb).")
    symptoms = {"impacket": "DCERPCException from dce.request(): 'Unknown DCE RPC fault status code: 000006ba' (or "
                            "the status's name, e.g. rpc_s_access_denied)"}
    analyzer = {"fails_at": "nspi", "reason": "rpc-fault"}
    params = {"interface": Param(str, None, "the interface whose calls fail (default: every interface)",
                                 INTERFACES),
              "opnum": Param(int, None, "the operation that fails (default: every operation)"),
              "status": Param(int, RPC_S_SERVER_UNAVAILABLE, "the fault status")}

    def on_rpc_call(self, scope, interface, opnum):
        if self.values["interface"] in (None, interface) and self.values["opnum"] in (None, opnum):
            return CallFault(self.values["status"])
        return None


@register
class BindAckShape(_BindFault):
    name = "rpc.bind-ack"
    summary = ("The bind is accepted with an odd bind_ack (fragment sizes, secondary address, more results), and "
               "its responses come in small fragments or end in a fault PDU mid-call.")
    description = ("What another RPC server or a middlebox may send while still accepting the bind: a max_xmit_frag "
                   "or max_recv_frag below the 2048 of Windows or at 65535, a secondary address that is empty or "
                   "not the port asked for, provider_rejection results the bind did not ask for (after the "
                   "acceptance, or before it); then responses split into fragments of a few bytes, or cut after "
                   "some fragments by a fault PDU (status: nca_s_fault_unspec 0x1C000012 by default). The "
                   "`mockex fuzz --layer dcerpc` strategy draws these.")
    symptoms = {"impacket": "reassembles fragments by PFC_LAST_FRAG; a fault after some fragments surfaces as "
                            "DCERPCException from dce.request()"}
    params = {"interface": Param(str, None, "the interface whose bind_ack changes (default: every interface)",
                                 INTERFACES),
              "max_xmit": Param(int, None, "max_xmit_frag announced", minimum=0, below=1 << 16),
              "max_recv": Param(int, None, "max_recv_frag announced", minimum=0, below=1 << 16),
              "secondary_address": Param(str, None, "the secondary address announced instead of the port"),
              "extra_results": Param(list, None, "provider_rejection reasons of results added: "
                                     + ", ".join(f"{k} {v}" for k, v in REASON_NAMES.items()), items=int),
              "results_first": Param(bool, False, "the added results come before the real ones"),
              "fragment_size": Param(int, None, "responses in fragments of at most this many stub bytes", minimum=8,
                                     below=1 << 16),
              "fault_after": Param(int, None, "responses cut by a fault PDU after this many fragments", minimum=0),
              "fault_status": Param(int, 0x1C000012, "the status of that fault PDU", minimum=0, below=1 << 32)}

    @classmethod
    def validate(cls, values):
        result = super().validate(values)
        if any(not 0 <= reason <= 0xFFFF for reason in result["extra_results"] or ()):
            raise FaultParamError("extra_results", "a reason is a u16")
        if len((result["secondary_address"] or "").encode("utf-8")) > 0xFFFE:
            raise FaultParamError("secondary_address", "longer than a bind_ack holds")
        return result

    def __init__(self, rng=None, **values):
        super().__init__(rng, **values)
        v = self.values
        self.edit = BindAckEdit(v["max_xmit"], v["max_recv"], v["secondary_address"], tuple(v["extra_results"] or ()),
                                v["results_first"], v["fragment_size"], v["fault_after"], v["fault_status"])

    def on_rpc_bind_ack(self, scope, interface):
        return self.edit if self.applies(interface) else None
