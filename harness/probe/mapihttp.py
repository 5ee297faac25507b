"""MAPI over HTTP for the probe ([MS-OXCMAPIHTTP] alone, nothing of the server): POSTs to the MailStore URL
Autodiscover's mapiHttp block gives, over the probe's own verified connection, with the request types Connect,
Execute and Disconnect, the MapiContext/MapiSequence cookies, and the chunked PROCESSING/PENDING/DONE answer. The
same session class carries the address book's requests to the AddressBook URL (harness.probe.nspihttp).
A transport failure (HTTP status, X-ResponseCode) becomes a StepFailed; the bodies' ErrorCodes go to the caller."""
from __future__ import annotations

import random
import struct
import uuid
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from harness.probe.hosts import Connector
from harness.probe.http import (
    Credentials,
    HttpConnection,
    Response,
    authenticated,
    basic_authorization,
    choose_scheme,
    offered_schemes,
)
from harness.probe.report import StepFailed
from harness.probe.rops import MAX_OUT, NO_COMPRESSION, NO_XOR_MAGIC, CallFailed, RopMalformed, unwrap, wrap

CONTENT_TYPE = "application/mapi-http"
CLIENT_APPLICATION = "Outlook/15.0.4569.1506"       # Outlook 2013 SP1, the first with MAPI over HTTP
ENDPOINT_DISABLED = 16
# X-ResponseCode values ([MS-OXCMAPIHTTP] 2.2.3.3.3)
RESPONSE_CODES = {1: "Unknown Failure", 2: "Invalid Verb", 3: "Invalid Path", 4: "Invalid Header",
                  5: "Invalid Request Type", 6: "Invalid Context Cookie", 7: "Missing Header",
                  8: "Anonymous Not Allowed", 9: "Too Large", 10: "Context Not Found", 11: "No Privilege",
                  12: "Invalid Request Body", 13: "Missing Cookie", 14: "Reserved", 15: "Invalid Sequence",
                  16: "Endpoint Disabled", 17: "Invalid Response", 18: "Endpoint Shutting Down"}


class ResponseBody:
    """Reads a binary response body; RopMalformed when it ends early."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise RopMalformed("the response body ends early")
        self.pos += 4
        return struct.unpack_from("<L", self.data, self.pos - 4)[0]

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise RopMalformed("the response body ends early")
        self.pos += size
        return self.data[self.pos - size:self.pos]

    def until(self, terminator: bytes, step: int) -> bytes:
        end = self.pos
        while self.data[end:end + step] != terminator:
            if end + step > len(self.data):
                raise RopMalformed("an unterminated string in the response body")
            end += step
        text = self.data[self.pos:end]
        self.pos = end + step
        return text


@dataclass(frozen=True)
class Connected:
    error_code: int
    dn_prefix: str
    display_name: str
    server_application: str


def split_meta_tags(data: bytes) -> Tuple[Dict[str, str], bytes]:
    """(the DONE block's headers, the binary body) of a success: PROCESSING, any PENDING, DONE (2.2.7)."""
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise RopMalformed("no DONE meta-tag in the answer")
        tag = data[pos:end]
        pos = end + 2
        if tag == b"DONE":
            break
        if tag not in (b"PROCESSING", b"PENDING"):
            raise RopMalformed(f"unknown meta-tag {tag[:40]!r}")
    end = data.find(b"\r\n\r\n", pos - 2)
    if end < 0:
        raise RopMalformed("the DONE headers never end")
    headers = dict(line.split(": ", 1) for line in data[pos:end].decode("latin-1").split("\r\n")
                   if ": " in line)
    return headers, data[end + 4:]


class MapiHttpSession:
    """One session (EMSMDB, or the address book's) on one keep-alive connection: NTLM/Negotiate authenticate it on
    the first request (Connect, Bind), Basic goes with every request."""

    def __init__(self, connector: Connector, target: str, credentials: Credentials, preferred: Optional[str],
                 rng: random.Random):
        self.connector, self.target, self.credentials, self.preferred = connector, target, credentials, preferred
        self.request_id = "{%s}" % uuid.UUID(int=rng.getrandbits(128), version=4)
        self.client_info = "{%s}" % uuid.UUID(int=rng.getrandbits(128), version=4)
        self.cookies: Dict[str, str] = {}
        self.scheme: Optional[str] = None
        self.offered: List[str] = []
        self.server_application = ""
        self.requests = 0
        self._conn: Optional[HttpConnection] = None

    @property
    def path(self) -> str:
        """The endpoint's path, as failures name it (/mapi/emsmdb/, /mapi/nspi/)."""
        return self.target.split("?", 1)[0]

    def _headers(self, request_type: str) -> List[Tuple[str, str]]:
        self.requests += 1
        headers = [("Content-Type", CONTENT_TYPE), ("X-RequestType", request_type),
                   ("X-RequestId", f"{self.request_id}:{self.requests}"), ("X-ClientInfo", f"{self.client_info}-1"),
                   ("X-ClientApplication", CLIENT_APPLICATION), ("Accept", CONTENT_TYPE)]
        if self.cookies:
            headers.append(("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())))
        return headers

    def post(self, request_type: str, body: bytes) -> bytes:
        """The binary response body of a successful request; a StepFailed for any transport failure."""
        headers = self._headers(request_type)
        if self._conn is None:
            self._conn = self.connector.open()
            anonymous = self._conn.request("POST", self.target, headers, body)
            self.offered = offered_schemes(anonymous)
            if anonymous.status == 401:
                self.scheme = choose_scheme(self.offered, self.preferred)
                if self.scheme is None:
                    raise StepFailed("http-401", f"{self.path} offers no scheme the client speaks "
                                                 f"({', '.join(self.offered) or 'none'})", offered=self.offered)
                response = authenticated(self._conn, "POST", self.target, headers, body, self.credentials,
                                         self.scheme)
            else:
                response = anonymous
        elif self.scheme == "Basic":
            response = self._conn.request("POST", self.target,
                                          headers + [("Authorization", basic_authorization(self.credentials))], body)
        else:
            response = self._conn.request("POST", self.target, headers, body)
        return self._success(request_type, response)

    def _success(self, request_type: str, response: Response) -> bytes:
        self.server_application = response.header("X-ServerApplication") or self.server_application
        for value in response.headers_named("Set-Cookie"):
            name, _, rest = value.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        if response.status == 401:
            raise StepFailed("http-401", f"401 Unauthorized with {self.scheme}: {self.path} rejected the "
                                         f"credentials", status=401, offered=self.offered)
        sent = f"{request_type} to {self.path}"
        if response.status != 200:
            raise StepFailed("mapi-http-error", f"{sent} answered HTTP {response.status} {response.reason}",
                             status=response.status)
        code_text = response.header("X-ResponseCode")
        if code_text is None or not code_text.strip().isdigit():
            raise StepFailed("mapi-http-error", f"{sent} answered without an X-ResponseCode",
                             content_type=response.header("Content-Type"))
        code = int(code_text)
        if code:
            what = RESPONSE_CODES.get(code, "unknown")
            raise StepFailed("mapi-http-disabled" if code == ENDPOINT_DISABLED else "mapi-http-error",
                             f"{sent} answered X-ResponseCode {code} ({what})", response_code=code,
                             request_type=request_type)
        try:
            _done, body = split_meta_tags(response.body)
        except RopMalformed as exc:
            raise StepFailed("mapi-http-error", f"{sent}: {exc}")
        return body

    # ---- the request types ----------------------------------------------------------------------------------
    def connect(self, user_dn: str) -> Connected:
        body = user_dn.encode("ascii") + b"\x00" + struct.pack("<LLLLL", 0, 1252, 0x409, 0x409, 0)
        reader = ResponseBody(self.post("Connect", body))
        try:
            _status, error_code = reader.u32(), reader.u32()
            if error_code:
                return Connected(error_code, "", "", self.server_application)
            reader.take(12)                          # MaxPollingInterval, MaxRetryCount, RetryDelay
            prefix = reader.until(b"\x00", 1).decode("latin-1")
            name = reader.until(b"\x00\x00", 2).decode("utf-16-le", "replace")
        except RopMalformed as exc:
            raise StepFailed("mapi-http-error", f"Connect: {exc}")
        return Connected(error_code, prefix, name, self.server_application)

    def execute(self, payload: bytes) -> bytes:
        """One ROP buffer in, the ROP response buffer out (the mailbox checks' Execute)."""
        rgb_in = wrap(payload)
        body = (struct.pack("<LL", NO_COMPRESSION | NO_XOR_MAGIC, len(rgb_in)) + rgb_in
                + struct.pack("<LL", MAX_OUT, 0))
        reader = ResponseBody(self.post("Execute", body))
        _status, error_code, _flags = reader.u32(), reader.u32(), reader.u32()
        if error_code:
            raise CallFailed("Execute", error_code)
        payloads = unwrap(reader.take(reader.u32()))
        return payloads[0]

    @property
    def has_context(self) -> bool:
        """A session context is open (the MapiContext cookie is set and not yet expired)."""
        return self._conn is not None and bool(self.cookies.get("MapiContext"))

    def disconnect(self, request_type: str = "Disconnect") -> None:
        """End the session with ``request_type`` (Disconnect, the address book's Unbind) when it has a context;
        the connection is closed in any case."""
        if self._conn is None:
            return
        try:
            if self.has_context:
                self.post(request_type, struct.pack("<LL", 0, 0) if request_type == "Unbind"
                          else struct.pack("<L", 0))
        finally:
            self._conn.close()
            self._conn = None
