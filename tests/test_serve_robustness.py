"""Bad input gets the protocol's own error answer and a transcript line, and the server keeps serving."""
from __future__ import annotations

import socket
import ssl

import pytest
from lxml import etree

POX = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"


def https_exchange(server, raw: bytes, host: str = "autodiscover.contoso.test", read_all: bool = True) -> bytes:
    context = ssl.create_default_context(cafile=server.ca_file)
    with socket.create_connection((server.host, server.https_port), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname=host) as tls:
            tls.sendall(raw)
            chunks = []
            while True:
                try:
                    data = tls.recv(65536)
                except (ssl.SSLError, ConnectionResetError):
                    break
                if not data:
                    break
                chunks.append(data)
                if not read_all and b"\r\n\r\n" in b"".join(chunks):
                    break
            return b"".join(chunks)


def basic_post(server, body: bytes, path: str = "/autodiscover/autodiscover.xml", extra: bytes = b"") -> bytes:
    import base64
    alice = server.user("alice")
    token = base64.b64encode(f"alice@contoso.test:{alice['password']}".encode())
    head = (f"POST {path} HTTP/1.1\r\nHost: autodiscover.contoso.test\r\nContent-Type: text/xml\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n").encode()
    return https_exchange(server, head + b"Authorization: Basic " + token + b"\r\n" + extra + b"\r\n" + body)


def pox_error_code(response: bytes) -> str:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return etree.fromstring(body).findtext(f".//{{{POX}}}ErrorCode")


@pytest.mark.parametrize("body, code", [
    (b"<Autodiscover><Request>", "600"),                     # malformed XML
    (b"this is not xml at all \x00\xff", "600"),             # non-XML bytes
    (b"""<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
<Request><EMailAddress>nobody@contoso.test</EMailAddress><AcceptableResponseSchema>
http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
</Request></Autodiscover>""", "500"),                        # unknown user
])
def test_bad_pox_bodies_get_pox_errors(server, body, code):
    assert pox_error_code(basic_post(server, body)) == code
    assert server.wait_for(lambda e: e["kind"] == "autodiscover" and e["error_code"] == code)


def test_malformed_soap_gets_a_soap_fault(server):
    response = basic_post(server, b"<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><s:Body>",
                          path="/autodiscover/autodiscover.svc")
    assert response.startswith(b"HTTP/1.1 500"), response[:200]
    assert b"Fault" in response
    assert server.wait_for(lambda e: e["kind"] == "autodiscover" and e["outcome"] == "fault")


def test_oversized_body_gets_413_without_reading_it(server):
    head = (b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: autodiscover.contoso.test\r\n"
            b"Content-Length: 50000000\r\n\r\n")
    response = https_exchange(server, head + b"x" * 1000)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert server.wait_for(lambda e: e["kind"] == "http_error" and e["status"] == 413)


@pytest.mark.parametrize("garbage", [b"\x16\x03\x01 nonsense\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
                                     b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n"])
def test_garbage_http_gets_400_and_server_keeps_serving(server, garbage):
    response = https_exchange(server, garbage)
    assert response.startswith(b"HTTP/1.1 400"), response[:200]
    assert server.wait_for(lambda e: e["kind"] == "http_error" and e["status"] == 400)
    assert server.alive()
    valid = basic_post(server, b"")
    assert pox_error_code(valid) == "600"  # still answering: an empty POST is an Invalid Request


def test_tls_garbage_is_recorded_as_a_failed_handshake(server):
    with socket.create_connection((server.host, server.https_port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP to the TLS port
        sock.settimeout(5)
        try:
            sock.recv(100)
        except OSError:
            pass
    assert server.wait_for(lambda e: e["kind"] == "tls" and not e["ok"])
    assert server.alive()
