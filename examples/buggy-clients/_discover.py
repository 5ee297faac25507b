"""Shared plumbing of the example clients (stdlib only): POST a POX Autodiscover request with Basic auth to the
mock, whose names all live at one address (--host) and whose ports stand in for 443 (--https-port) and 80
(--http-port); verify TLS against --ca."""
from __future__ import annotations

import argparse
import base64
import http.client
import socket
import ssl
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

NS = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"
REQUEST = ('<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
           'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>{email}</EMailAddress>'
           '<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/'
           '2006a</AcceptableResponseSchema></Request></Autodiscover>')


class DiscoveryError(Exception):
    """A clean failure: the client reports it and exits 2."""


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    for name in ("--url", "--host", "--https-port", "--http-port", "--ca", "--email", "--password"):
        parser.add_argument(name, required=True)
    return parser.parse_args()


class _Pinned(http.client.HTTPSConnection):
    """HTTPS to ``address`` while SNI and the certificate check use the URL's host name."""

    def __init__(self, name: str, address: str, port: int, context: ssl.SSLContext):
        super().__init__(name, port, context=context, timeout=5)
        self.address = address

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def verifying_context(ca_file: str) -> ssl.SSLContext:
    """Chain and host name checked; a certificate without SANs is refused (no fall-back to the subject CN, as
    urllib3 2 and browsers do)."""
    context = ssl.create_default_context(cafile=ca_file)
    context.hostname_checks_common_name = False
    return context


def post(args: argparse.Namespace, url: str, context: ssl.SSLContext = None) -> http.client.HTTPResponse:
    """POST the request to ``url`` (https:// or http://), with Basic credentials; https verified with ``context``
    (default: ``verifying_context``)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        context = context or verifying_context(args.ca)
        conn: http.client.HTTPConnection = _Pinned(parts.hostname or "", args.host, int(args.https_port), context)
    else:
        conn = http.client.HTTPConnection(args.host, int(args.http_port), timeout=5)
    token = base64.b64encode(f"{args.email}:{args.password}".encode()).decode()
    body = REQUEST.format(email=args.email).encode()
    conn.request("POST", parts.path or "/", body, {"Content-Type": "text/xml", "Authorization": f"Basic {token}",
                                                   "Host": parts.hostname or ""})
    return conn.getresponse()


def answer(response: http.client.HTTPResponse) -> ET.Element:
    if response.status != 200:
        raise DiscoveryError(f"HTTP {response.status}")
    try:
        return ET.fromstring(response.read())
    except ET.ParseError as exc:
        raise DiscoveryError(f"not XML: {exc}") from None
