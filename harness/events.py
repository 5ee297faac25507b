"""Every kind of transcript event, declared: its fields, their JSON types, which are required, what each means.

``Transcript.record(kind, **fields)`` stays the call everywhere (events are plain dicts on the hot path); this table
is what the transcript promises. docs/transcript.schema.json and docs/transcript.md are generated from it
(``python -m harness.catalog_docs``), and the test suite validates every transcript line it writes against that
schema, so a kind or a field recorded but not declared here fails the suite.

Events recorded by a DCE/RPC association that runs behind the RPC proxy also carry ``vc`` (the virtual
connection's label): the proxy adds it to everything the association records.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class Field:
    types: Tuple[str, ...]     # JSON types: string integer number boolean array object null
    meaning: str
    required: bool = True
    items: str = ""            # the JSON type of an array's items ("pair": a [name, value] pair of strings)
    enum: Tuple[Any, ...] = ()


@dataclass(frozen=True)
class EventKind:
    name: str
    meaning: str
    fields: Dict[str, Field]
    file_only: bool = False    # written to the file only (not in Transcript.events, not passed to listeners)


def f(types: str, meaning: str, *, required: bool = True, items: str = "", enum: Tuple[Any, ...] = ()) -> Field:
    """A field; ``types`` is e.g. "string" or "string|null"."""
    return Field(tuple(types.split("|")), meaning, required, items, enum)


def optional(types: str, meaning: str, **more: Any) -> Field:
    return f(types, meaning, required=False, **more)


COMMON: Dict[str, Field] = {
    "seq": f("integer", "the event's number in this transcript, from 1, one more for every event"),
    "time": f("number", "when it was recorded: Unix time in seconds, to the microsecond"),
    "kind": f("string", "what happened: one of the kinds below"),
}

CONN = f("integer", "the TCP connection (numbered from 1 per server) the event belongs to")
CHANNEL_CONN = f("integer|null", "the TCP connection the RPC-over-HTTP channel rides on (None: not known)")
PEER = f("string", "the client's address, host:port")
VC = optional("string|null", "the RPC-over-HTTP virtual connection (its cookie's label)")
RESULT_HEX = f("string", "the status returned, as 0x%08x")


def _rpc(fields: Dict[str, Field]) -> Dict[str, Field]:
    """Fields of an event an association records, plus the ``vc`` the RPC proxy adds."""
    return {**fields, "vc": VC}


_KINDS: List[EventKind] = [
    # ---- the server's life ------------------------------------------------------------------------------------
    EventKind("start", "the server starts: what it serves", {
        "seed": f("integer|null", "the seed of every random choice (None: the scenario's own)"),
        "org": f("string", "the org's domain"),
        "listen": f("string", "the address it listens on"),
        "scenarios": f("array", "the scenarios loaded, by name", items="string"),
    }),
    EventKind("listening", "every listener is up: the endpoints clients use", {
        "https": f("object", "the HTTPS endpoint: host and port"),
        "http": f("object", "the plain-HTTP endpoint: host and port (port None while closed)"),
        "dns": f("object", "the DNS endpoint: host and port"),
        "addresses": f("object", "host name -> the address it resolves to"),
    }),
    EventKind("start_failed", "the server could not start; it gave every port back", {
        "reason": f("string", "why"),
    }),
    EventKind("stop", "the server stops", {}),
    EventKind("listener", "a listener (address, role, port) opened, closed or changed state", {
        "address": f("string", "the address it binds"),
        "role": f("string", "what it serves: https, http, dns, ..."),
        "port": f("integer|null", "the port"),
        "state": f("string", "its new state: open, closed, refusing, ..."),
        "was": f("string|null", "its state before (None when first set)"),
        "fault": f("string|null", "the fault that made the change"),
        "error": optional("string", "why it could not be opened"),
    }),
    EventKind("step", "a scenario step fired: faults applied and removed", {
        "scenario": f("string", "the scenario"),
        "step": f("integer", "the step's index in the scenario"),
        "trigger": f("string", "what made it fire (time, a count of events)"),
        "applied": f("array", "the faults it added, described", items="string"),
        "removed": f("array", "the faults it removed, by name", items="string"),
    }),
    EventKind("reset", "the steps were reset: back to the initial faults", {
        "faults": f("array", "the faults active again, described", items="string"),
    }),
    EventKind("control", "the control API changed the faults", {
        "action": f("string", "apply or clear", enum=("apply", "clear")),
        "id": optional("string", "the id of what was applied"),
        "applied": optional("array", "the faults applied, described", items="string"),
        "ids": optional("array", "the ids cleared", items="string"),
        "removed": f("array", "the faults removed, described", items="string"),
    }),
    EventKind("fault", "a fault answered a hook instead of the normal behaviour", {
        "fault": f("string", "the fault's name"),
        "hook": f("string", "the hook it answered"),
        "host": f("string|null", "the host name the request was for"),
        "user": f("string|null", "the mailbox (e-mail address) the request was for"),
        "effect": f("string", "what the answer does, described"),
    }),
    # ---- connections and HTTP -------------------------------------------------------------------------------------
    EventKind("connect", "a TCP connection was accepted", {
        "listener": f("string", "https or http", enum=("https", "http")),
        "conn": CONN, "peer": PEER,
        "local": f("string", "the server's address, host:port"),
    }),
    EventKind("tls", "a TLS handshake ended", {
        "conn": CONN,
        "ok": f("boolean", "whether it completed"),
        "sni": f("string|null", "the server name the client asked for"),
        "version": f("string|null", "the TLS version agreed"),
        "profile": f("string|null", "the shape of the certificate served (valid certificate, expired, ...)"),
        "reason": f("string", "why it failed (empty when it did not)"),
    }),
    EventKind("disconnect", "a TCP connection ended", {
        "conn": CONN, "reason": f("string", "how it ended"),
    }),
    EventKind("limit", "a connection limit (timeout, cap) ended a connection", {
        "conn": CONN, "limit": f("string", "the limit"), "reason": f("string", "what exceeded it"), "peer": PEER,
    }),
    EventKind("http", "an HTTP request was answered", {
        "conn": CONN,
        "method": f("string", "the request method"),
        "path": f("string", "the request target as sent"),
        "host": f("string|null", "the Host header"),
        "status": f("integer", "the status answered"),
        "request_headers": f("array", "the request's headers, credentials masked", items="pair"),
        "response_headers": f("array", "the response's headers, credentials masked", items="pair"),
        "request_bytes": f("integer", "the request body's size"),
        "response_bytes": f("integer", "the response body's size"),
        "sni": f("string|null", "the TLS server name of the connection (None on plain HTTP)"),
        "ms": f("number", "milliseconds from the request's arrival to the answer"),
    }),
    EventKind("http_error", "bytes that are not an acceptable request, answered as http.sys / IIS does", {
        "conn": CONN,
        "status": f("integer", "the status answered"),
        "reason": f("string", "what was wrong"),
        "limit": optional("string", "the size limit exceeded"),
        "path": optional("string", "the request target"),
    }),
    EventKind("auth", "a client sent credentials (an Authorization header)", {
        "conn": CONN,
        "scheme": f("string", "Basic, NTLM, Negotiate, ... (unknown: a header without a known scheme)"),
        "user": f("string", "the mailbox's e-mail address when the login names one, else the login as typed"),
        "login": f("string", "the login as the client typed it (DOMAIN\\user, a UPN, a bare name; empty if none)"),
        "domain": optional("string", "the domain part of a DOMAIN\\user login"),
        "result": f("string", "continue, success, failure, or \"sent in clear\" (plain HTTP: not checked)"),
        "reason": f("string", "why it failed (empty otherwise)"),
        "password_valid": optional("boolean|null", "over plain HTTP: whether a Basic password was right"),
        "tls": f("boolean", "whether the connection was TLS"),
        "path": f("string", "the request target"),
    }),
    EventKind("autodiscover", "an Autodiscover request was answered", {
        "conn": CONN,
        "path": f("string", "the request path"),
        "outcome": f("string", "what the answer is"),
        "error_code": f("string", "the Autodiscover error code (empty when none)"),
        "detail": f("string", "more about the answer"),
        "mailbox": f("string|null", "the mailbox answered for"),
    }),
    EventKind("ews", "an EWS request was answered", {
        "conn": CONN,
        "outcome": f("string", "what the answer is"),
        "error_code": f("string", "the EWS response code (empty when none)"),
        "detail": f("string", "more about the answer"),
        "mailbox": f("string|null", "the authenticated mailbox"),
        "back_off_ms": optional("integer", "the BackOffMilliseconds a throttling answer asked the client to wait"),
    }),
    EventKind("ews_stream", "a GetStreamingEvents connection opened, sent a notification or closed", {
        "conn": CONN,
        "mailbox": f("string", "the mailbox whose subscriptions it streams"),
        "state": f("string", "what happened", enum=("open", "notify", "close")),
        "notifications": f("integer", "notification envelopes sent on it so far"),
        "keep_alives": f("integer", "ConnectionStatus OK keep-alives sent on it so far"),
        "timeout_s": optional("number", "open: the ConnectionTimeout, in seconds"),
        "subscriptions": optional("integer", "open: how many subscriptions it streams"),
        "reason": optional("string", "close: ConnectionTimeout elapsed, or how the client left"),
    }),
    EventKind("ews_push", "an EWS push subscription began serving, POSTed a notification, will retry one, or "
                          "ended", {
        "mailbox": f("string", "the mailbox the subscription watches"),
        "url": f("string", "where its notifications are POSTed (a loopback URL)"),
        "state": f("string", "what happened", enum=("subscribe", "notify", "retry", "end")),
        "posts": f("integer", "SendNotification POSTs made for it so far"),
        "events": optional("integer", "notify: the events the POST carried (0: a StatusEvent)"),
        "status": optional("string", "notify: the client's SubscriptionStatus", enum=("OK", "Unsubscribe")),
        "delay_s": optional("number", "retry: seconds until the next attempt"),
        "reason": optional("string", "retry: why the POST failed; end: why the subscription ended"),
    }),
    EventKind("mapi_http", "a MAPI over HTTP request was answered", {
        "conn": CONN,
        "endpoint": f("string", "the MAPI/HTTP endpoint", enum=("emsmdb", "nspi")),
        "request_type": f("string", "the X-RequestType (Connect, Execute, Disconnect, PING, ...)"),
        "response_code": f("integer", "the X-ResponseCode sent (0: success)"),
        "status": RESULT_HEX,
        "mailbox": f("string|null", "the authenticated mailbox"),
        "held": optional("string", "the DONE comes later (PENDING meta-tags meanwhile): when, as described"),
        "http_status": optional("integer", "401: the request was refused with a fresh challenge instead"),
    }),
    EventKind("mapi_http_done", "a held MAPI over HTTP response got its DONE (or its connection ended first)", {
        "conn": CONN,
        "endpoint": f("string", "the MAPI/HTTP endpoint", enum=("emsmdb", "nspi")),
        "request_type": f("string", "the X-RequestType"),
        "ended": f("string", "what ended the wait", enum=("event", "max-wait", "periods", "disconnect")),
        "pending": f("integer", "PENDING meta-tags sent before it"),
        "mailbox": f("string|null", "the authenticated mailbox"),
    }),
    # ---- DNS --------------------------------------------------------------------------------------------------
    EventKind("dns", "a DNS query was answered (or deliberately not)", {
        "name": f("string|null", "the name asked for"),
        "type": f("string|null", "the record type asked for"),
        "rcode": f("string", "the response code sent (NO-REPLY: none sent)"),
        "answers": f("array", "the answers sent (the first 8)", items="string"),
        "peer": PEER,
        "transport": f("string", "udp or tcp", enum=("udp", "tcp")),
        "reason": optional("string", "why it was refused"),
    }),
    EventKind("dns_error", "a DNS message refused before parsing, or a DNS TCP connection dropped", {
        "peer": PEER,
        "bytes": f("integer", "the message's size"),
        "reason": f("string", "what was wrong"),
        "rcode": f("string|null", "the response code sent (None: no answer)"),
        "transport": f("string", "udp or tcp", enum=("udp", "tcp")),
    }),
    # ---- RPC over HTTP ------------------------------------------------------------------------------------------
    EventKind("rpc_proxy_refused", "a request to the RPC proxy refused before any channel", {
        "conn": CONN,
        "target": f("string", "the query (server:port) asked for"),
        "status": f("integer", "the status answered"),
        "reason": f("string", "why"),
    }),
    EventKind("rpc_channel", "an RPC-over-HTTP IN or OUT channel was opened (status 100) or refused", {
        "channel": f("string", "in or out", enum=("in", "out")),
        "conn": CHANNEL_CONN,
        "status": f("integer", "100 when opened, else the status answered"),
        "query": optional("string", "the query (server:port) asked for, when refused"),
        "reason": optional("string", "why it was refused"),
        "target": optional("string", "the server the channel goes to"),
        "port": optional("integer", "the RPC port on that server"),
        "user": optional("string|null", "the authenticated mailbox"),
        "peer": optional("string", "the client's address, host:port"),
        "proxied_to": optional("string", "legacy: the channel was for a mailbox on an Exchange 2007/2010 server "
                                         "and the 2013 front end refused to proxy it", enum=("legacy",)),
        "framing": optional("string", "how an OUT channel's body is framed: exchange2013 (chunked, one PDU per "
                                      "chunk) or legacy (Content-Length 1 GiB, raw PDUs)",
                            enum=("exchange2013", "legacy")),
    }),
    EventKind("rpc_channel_closed", "an RPC-over-HTTP channel closed", {
        "channel": f("string", "in or out", enum=("in", "out")), "conn": CHANNEL_CONN,
        "reason": f("string", "why"), "vc": f("string|null", "its virtual connection"),
    }),
    EventKind("rpc_channel_mismatch", "the IN and OUT channels of a virtual connection go to different servers", {
        "vc": f("string", "the virtual connection"),
        "in": f("string", "the IN channel's target"), "out": f("string", "the OUT channel's target"),
    }),
    EventKind("rts", "an RTS PDU received (sent false) or sent (sent true)", {
        "channel": f("string", "in or out", enum=("in", "out")),
        "sent": f("boolean", "whether the server sent it"),
        "pdu": f("string", "the RTS PDU's name"),
        "conn": CHANNEL_CONN,
        "vc": f("string|null", "the virtual connection"),
    }),
    EventKind("rts_ignored", "an RTS PDU ignored", {
        "vc": f("string", "the virtual connection"), "reason": f("string", "why"),
    }),
    EventKind("rpc_flow_control", "the OUT channel's window is full: PDUs are held", {
        "vc": f("string", "the virtual connection"),
        "held": f("integer", "PDUs held"),
        "in_flight": f("integer", "bytes sent and not acknowledged"),
        "window": f("integer", "the client's receive window"),
    }),
    EventKind("rpc_proxy_error", "a protocol error on an RPC-over-HTTP channel; it is closed", {
        "channel": f("string", "in or out", enum=("in", "out")), "conn": CHANNEL_CONN,
        "reason": f("string", "what was wrong"), "vc": f("string|null", "the virtual connection"),
    }),
    EventKind("rpc_vc_closed", "an RPC-over-HTTP virtual connection closed", {
        "vc": f("string", "the virtual connection"), "reason": f("string", "why"),
        "calls_held": f("integer", "PDUs that were still held"),
    }),
    # ---- DCE/RPC ------------------------------------------------------------------------------------------------
    EventKind("rpc_bind", "a bind or alter_context: one line per presentation context (or the bind_nak)", _rpc({
        "pdu": f("string", "bind or alter_context"),
        "call_id": f("integer", "the PDU's call id"),
        "result": f("string", "acceptance, a provider rejection, or nak: <reason>"),
        "reason": optional("string", "why it was refused"),
        "context_id": optional("integer", "the presentation context"),
        "interface": optional("string", "the interface asked for"),
        "auth_level": optional("integer|null", "the authentication level asked for"),
    })),
    EventKind("rpc_auth", "an NTLM authentication of a DCE/RPC security context ended", _rpc({
        "auth_context": f("integer", "the security context id"),
        "auth_level": f("integer", "the authentication level"),
        "ok": f("boolean", "whether it succeeded"),
        "user": f("string", "the user name as sent"),
        "domain": f("string", "the domain as sent"),
        "reason": f("string", "why it failed (empty otherwise)"),
        "mailbox": f("string|null", "the mailbox authenticated"),
    })),
    EventKind("rpc_call", "an RPC call was dispatched to an interface", _rpc({
        "interface": f("string", "the interface"),
        "opnum": f("integer", "the operation number"),
        "op": f("string|null", "the operation's name (None: no such opnum)"),
        "status": f("string", "the status returned or faulted with, as 0x%08x"),
        "fault": optional("string", "the fault's message"),
    })),
    EventKind("rpc_fault", "a fault PDU sent", _rpc({
        "call_id": f("integer", "the call"),
        "interface": optional("string", "the interface called"),
        "opnum": optional("integer", "the operation number called"),
        "status": f("string", "the fault status, as 0x%08x"),
        "name": f("string|null", "the status's name"),
        "reason": f("string", "why"),
        "where": optional("string", "the end of the traceback (an internal error)"),
        "close": f("boolean", "whether the association is closed after it"),
    })),
    EventKind("rpc_call_held", "a call whose answer waits (EcDoAsyncWaitEx): no response PDU yet", _rpc({
        "call_id": f("integer", "the call"),
        "interface": f("string", "the interface"),
        "opnum": f("integer", "the operation number"),
        "until": f("string", "what ends the wait"),
    })),
    EventKind("rpc_call_completed", "a held call was answered, or dropped with its connection", _rpc({
        "call_id": f("integer", "the call"),
        "interface": f("string", "the interface"),
        "opnum": f("integer", "the operation number"),
        "how": f("string", "what ended the wait: event, max-wait, or dropped (no answer sent)"),
        "status": f("string|null", "the operation's return value, as 0x%08x (None: dropped)"),
        "reason": optional("string", "why it was dropped"),
    })),
    EventKind("rpc_close", "the association closed", _rpc({"reason": f("string", "why")})),
    EventKind("rpc_internal_error", "a bug in the server's DCE/RPC code; the association closed", _rpc({
        "error": f("string", "the exception"), "where": f("string", "the end of the traceback"),
    })),
    EventKind("rpc_pdu_ignored", "a co_cancel or orphaned PDU, ignored", _rpc({
        "pdu": f("string", "the PDU's type"), "call_id": f("integer", "its call id"),
    })),
    EventKind("nspi_bind", "NspiBind", _rpc({
        "user": f("string|null", "the authenticated mailbox's user name"),
        "codepage": f("integer", "the code page asked for"),
        "result": RESULT_HEX,
    })),
    EventKind("nspi_resolve", "NspiResolveNames / NspiResolveNamesW", _rpc({
        "names": f("array", "the names asked for", items="string"),
        "mids": f("array", "the minimal entry ids answered (0: not found)", items="integer"),
    })),
    EventKind("rfr_new_dsa", "RfrGetNewDSA", _rpc({
        "user_dn": f("string", "the user's legacy DN as sent"),
        "server": f("string|null", "the server answered (None: not asked for)"),
    })),
    EventKind("rfr_fqdn", "RfrGetFQDNFromServerDN", _rpc({
        "server_dn": f("string", "the server DN as sent"), "fqdn": f("string|null", "the name answered"),
    })),
    EventKind("epm_connection", "a TCP connection to the endpoint mapper (serve --epm-port)", {
        "peer": PEER, "address": f("string", "the address it reached"),
    }),
    EventKind("epm_lookup", "ept_lookup on the endpoint mapper", _rpc({
        "inquiry_type": f("integer", "RPC_C_EP_* as sent"), "entries": f("integer", "how many entries answered"),
    })),
    EventKind("epm_map", "ept_map on the endpoint mapper", _rpc({
        "interface": f("string", "the interface UUID asked for"), "found": f("boolean", "whether it is registered"),
    })),
    EventKind("emsmdb_connect", "EcDoConnectEx", _rpc({
        "user_dn": f("string", "the user's legacy DN as sent"),
        "client_version": f("string", "the client's version"),
        "result": RESULT_HEX,
        "session": optional("string|null", "the session opened, as emsmdb_execute names it (None: refused)"),
    })),
    EventKind("emsmdb_execute", "EcDoRpcExt2 (RPC over HTTP) or Execute (MAPI over HTTP): a ROP buffer answered",
              _rpc({
                  "session": f("string", "the session (rpc-N or mapi-N, as emsmdb_connect named it)"),
                  "mailbox": f("string", "the session's mailbox (user name)"),
                  "rops": f("array", "the RopIds run, in order", items="integer"),
                  "result": RESULT_HEX,
                  "backoff_ms": optional("integer", "the answer carries a RopBackoff: its Duration (the longest)"),
                  "backoff_rops": optional("array", "the RopIds a RopBackoff in the answer delays", items="integer"),
              })),
    EventKind("emsmdb_rop_format", "an EcDoRpcExt2 request buffer that could not be parsed", _rpc({
        "error": f("string", "what was wrong"),
    })),
    EventKind("emsmdb_logon", "RopLogon", _rpc({
        "essdn": f("string", "the mailbox's legacy DN as sent"),
        "mailbox": f("string|null", "the mailbox's user name"),
        "result": RESULT_HEX,
        "server_dn": optional("string|null", "the server to go to instead (ecWrongServer)"),
        "backoff_ms": optional("integer", "how long RopBackoff tells the client to wait"),
    })),
    # ---- the file itself -------------------------------------------------------------------------------------
    EventKind("transcript_rotated", "this file continues a rotated one (first line of a fresh file)", {
        "continues_from": f("integer|null", "the seq of the last event in the previous file"),
        "previous": f("string", "the previous file's name"),
    }, file_only=True),
    EventKind("transcript_gap", "events were lost to failed writes before this line", {
        "lost": f("integer", "how many"),
    }, file_only=True),
]

KINDS: Dict[str, EventKind] = {kind.name: kind for kind in _KINDS}


def _field_schema(field: Field) -> Dict[str, Any]:
    schema: Dict[str, Any] = {"type": field.types[0] if len(field.types) == 1 else list(field.types),
                              "description": field.meaning}
    if field.items == "pair":
        schema["items"] = {"type": "array", "prefixItems": [{"type": "string"}, {"type": "string"}],
                           "minItems": 2, "maxItems": 2}
    elif field.items:
        schema["items"] = {"type": field.items}
    if field.enum:
        schema["enum"] = list(field.enum) + ([None] if "null" in field.types else [])
    return schema


def kind_schema(kind: EventKind) -> Dict[str, Any]:
    fields = {**COMMON, **kind.fields}
    properties = {name: _field_schema(field) for name, field in fields.items()}
    properties["kind"] = {"const": kind.name, "description": kind.meaning}
    return {"type": "object", "properties": properties,
            "required": [name for name, field in fields.items() if field.required],
            "additionalProperties": False}


def schema() -> Dict[str, Any]:
    """JSON Schema of one transcript line: the common fields, then one definition per kind chosen by ``kind``."""
    return {
        "$schema": SCHEMA_DRAFT,
        "$id": "https://mockex.invalid/transcript.schema.json",
        "title": "mockex transcript line",
        "description": "One line of transcript.jsonl: an event with seq, time and kind (generated from "
                       "harness/events.py; do not edit).",
        "type": "object",
        "required": list(COMMON),
        "properties": {"kind": {"enum": list(KINDS)}},
        "allOf": [{"if": {"properties": {"kind": {"const": name}}},
                   "then": {"$ref": f"#/$defs/{name}"}} for name in KINDS],
        "$defs": {name: kind_schema(kind) for name, kind in KINDS.items()},
    }


def markdown() -> str:
    """docs/transcript.md: every kind and its fields."""
    lines = ["# The transcript (`transcript.jsonl`)", "",
             "<!-- generated by `python -m harness.catalog_docs` from harness/events.py; do not edit -->", "",
             "One JSON object a line, in the order things happened. Every line has these fields:", "",
             "| field | type | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | {' or '.join(field.types)} | {field.meaning} |" for name, field in COMMON.items()]
    lines += ["", "A line holds exactly the fields listed for its kind (optional ones may be missing); "
              "docs/transcript.schema.json says the same as JSON Schema. Events recorded by a DCE/RPC association "
              "behind the RPC proxy also carry `vc`.", "", "## Kinds", ""]
    lines += [f"- [`{name}`](#{name}): {kind.meaning}" for name, kind in KINDS.items()]
    for name, kind in KINDS.items():
        lines += ["", f"## {name}", "", kind.meaning + (" (file only: not in memory, not passed to listeners)"
                                                        if kind.file_only else "") + "."]
        if not kind.fields:
            continue
        lines += ["", "| field | type | required | meaning |", "|---|---|---|---|"]
        for field_name, field in kind.fields.items():
            types = " or ".join(field.types) + (f" of {field.items}" if field.items else "")
            if field.enum:
                types += ": " + ", ".join(f"`{value}`" for value in field.enum)
            meaning = field.meaning.replace("|", "\\|")
            lines.append(f"| `{field_name}` | {types} | {'yes' if field.required else 'no'} | {meaning} |")
    return "\n".join(lines) + "\n"
