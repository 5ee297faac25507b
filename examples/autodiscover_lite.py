"""A tiny POX Autodiscover client (stdlib only) for the example clients: the mock's DNS, its ports, its CA, all
from the MOCKEX_* variables `mockex run` sets. Each example decides what to do with what this returns."""
from __future__ import annotations

import base64
import http.client
import os
import random
import re
import socket
import ssl
import struct
from typing import Dict, Optional, Tuple
from urllib.parse import urlsplit

ENV = os.environ
EMAIL, PASSWORD, DOMAIN = ENV["MOCKEX_EMAIL"], ENV["MOCKEX_PASSWORD"], ENV["MOCKEX_DOMAIN"]
REQUEST = ("<?xml version='1.0' encoding='utf-8'?><Autodiscover xmlns='http://schemas.microsoft.com/exchange/"
           "autodiscover/outlook/requestschema/2006'><Request><EMailAddress>{email}</EMailAddress>"
           "<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/"
           "2006a</AcceptableResponseSchema></Request></Autodiscover>")


def resolve(name: str) -> Optional[str]:
    """The A record of ``name`` from the mock's DNS server (None: no address)."""
    query = struct.pack(">HHHHHH", random.getrandbits(16), 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0" + b"\0\1\0\1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(query, (ENV["MOCKEX_DNS_HOST"], int(ENV["MOCKEX_DNS_PORT"])))
        try:
            reply = sock.recv(4096)
        except socket.timeout:
            return None
    if reply[3] & 0x0F or struct.unpack(">H", reply[6:8])[0] == 0:
        return None
    at = len(query)
    while at < len(reply):   # answers: name (a pointer), type, class, ttl, length, data
        at += 2 if reply[at] & 0xC0 else reply.index(b"\0", at) - at + 1
        kind, _, _, size = struct.unpack(">HHIH", reply[at:at + 10])
        if kind == 1 and size == 4:
            return socket.inet_ntoa(reply[at + 10:at + 14])
        at += 10 + size
    return None


def context(verify: bool = True) -> ssl.SSLContext:
    if not verify:
        unsafe = ssl.create_default_context()
        unsafe.check_hostname, unsafe.verify_mode = False, ssl.CERT_NONE
        return unsafe
    return ssl.create_default_context(cafile=ENV["MOCKEX_CA_FILE"])


def request(url: str, method: str = "POST", credentials: bool = True, verify: bool = True
            ) -> Tuple[int, Dict[str, str], str]:
    """One request; the host is looked up in the mock's DNS, a URL without a port goes to the port standing in
    for 443 (https) or 80 (http)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    address = resolve(host)
    if address is None:
        raise LookupError(f"{host}: no address")
    port = parts.port or int(ENV["MOCKEX_HTTPS_PORT" if parts.scheme == "https" else "MOCKEX_HTTP_PORT"])
    raw = socket.create_connection((address, port), timeout=10)
    conn = http.client.HTTPConnection(address, port, timeout=10)
    # the socket goes to the mock's address; TLS asks for (SNI) and checks the name in the URL
    conn.sock = context(verify).wrap_socket(raw, server_hostname=host) if parts.scheme == "https" else raw
    headers = {"Host": f"{host}:{port}", "Content-Type": "text/xml"}
    if credentials:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{EMAIL}:{PASSWORD}".encode()).decode()
    body = REQUEST.format(email=EMAIL) if method == "POST" else None
    try:
        conn.request(method, parts.path or "/", body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read().decode("utf-8", "replace")
    finally:
        conn.close()


def redirect_of(body: str) -> Tuple[str, str]:
    """("redirectUrl"|"redirectAddr", target) of a POX redirect answer, ("", "") otherwise."""
    match = re.search(r"<Action>(redirectUrl|redirectAddr)</Action>.*?<Redirect(?:Url|Addr)>([^<]+)<", body, re.S)
    return (match.group(1), match.group(2).strip()) if match else ("", "")


def settings_of(body: str) -> str:
    """The server of the first EXCH/EXPR protocol, "" when the answer has none."""
    match = re.search(r"<Type>(?:EXCH|EXPR)</Type>.*?<Server>([^<]+)</Server>", body, re.S)
    return match.group(1) if match else ""


def autodiscover_urls() -> list:
    return [f"https://{DOMAIN}/autodiscover/autodiscover.xml",
            f"https://autodiscover.{DOMAIN}/autodiscover/autodiscover.xml"]
