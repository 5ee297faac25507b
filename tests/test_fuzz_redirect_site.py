"""Fuzz target "redirect_site": the port-80 vhost (services/site.py RedirectSite.handle) with arbitrary paths and
headers, each request parsed by the sans-IO HTTP core as the edge does.

Whatever the path (percent-encoded anything: a euro sign, CR/LF, NUL, a '?'), the answer is a 302 whose headers
can be sent (Latin-1, no CR or LF: the core frames it), whose Location names the same path on the HTTPS
Autodiscover host (or the default Autodiscover path), and credentials that came along leave no password in the
transcript."""
from __future__ import annotations

import base64
import json
from typing import List, Optional, Tuple
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from harness.org import load_org
from harness.protocols.http import ConnectionInfo, HttpRequest
from harness.protocols.httpconn import Deliver, HttpConnection, Send
from harness.services.site import RedirectSite
from harness.transcript import Transcript
from tests.support import corpus
from tests.support.fuzz import scaled

ORG = load_org()
BASE = "https://autodiscover.contoso.test:8443"
PASSWORDS = [mailbox.password for mailbox in ORG.mailboxes]

PATH_PIECES = ["autodiscover", "Autodiscover", "AUTODISCOVER", "autodiscover.xml", "autodiscover.svc", "x", "",
               "%E2%82%AC", "%0d%0a", "%0D", "%0a", "%00", "%ff", "%C3%A9", "%25", "%2F", "%20", "%22", "%3F",
               "%23", "..", ".", "~", "a:b", "@", ";", "alice@contoso.test", "%E2%80%A8", "%7F", "%09"]
paths = st.builds(lambda prefix, pieces: prefix + "/".join(pieces),
                  st.sampled_from(["/autodiscover/", "/Autodiscover/", "/"]),   # the vhost keeps only /autodiscover/...
                  st.lists(st.sampled_from(PATH_PIECES) | st.from_regex(r"[A-Za-z0-9%._~-]{0,12}", fullmatch=True),
                           max_size=4))
queries = st.sampled_from(["", "?", "?a=1", "?%0d%0a", "?x=%E2%82%AC"])
credentials = st.builds(
    lambda login, password, encoding: base64.b64encode(f"{login}:{password}".encode(encoding, "replace")).decode(),
    st.sampled_from(["alice", "CONTOSO\\alice", "alice@contoso.test", "bob", "mallory", ""]),
    st.sampled_from(PASSWORDS) | st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=20),
    st.sampled_from(["utf-8", "latin-1"]))
header_values = st.one_of(
    st.builds("Basic {}".format, credentials), credentials, st.sampled_from(["Basic", "Basic !!!", "NTLM xx", ""]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF), max_size=30))
headers = st.lists(st.tuples(st.sampled_from(["Authorization", "X-Forwarded-For", "Cookie", "Referer", "Accept"]),
                             header_values), max_size=3)


def parsed(method: str, target: str, host: str, extra: List[Tuple[str, str]]) -> Optional[HttpRequest]:
    """The request the edge would hand the site for this head, or None when the core refuses it."""
    core = HttpConnection(ConnectionInfo(peer=("127.0.0.1", 50000), local=("127.0.0.1", 80), tls=False, conn_id=1),
                          tls=False)
    core.start()
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in extra) + "\r\n"
    delivered = [action for action in core.receive(head.encode("latin-1")) if isinstance(action, Deliver)]
    return delivered[0].request if delivered else None


def check_redirect(request: HttpRequest) -> None:
    transcript = Transcript()
    response = RedirectSite(ORG, transcript, 8443).handle(request)
    for name, value in response.headers:
        name.encode("latin-1"), value.encode("latin-1")
        assert not any(ch in name + value for ch in "\r\n"), (name, value)
    assert response.status == 302
    [location] = [value for name, value in response.headers if name == "Location"]
    wanted = request.path if request.path.lower().startswith("/autodiscover/") else "/autodiscover/autodiscover.xml"
    assert location.startswith(BASE + "/") and unquote(urlsplit(location).path) == wanted
    core = HttpConnection(tls=False)
    core.start()
    core.receive(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert isinstance(core.respond(response)[0], Send), "the 302 cannot be sent"
    recorded = json.dumps(transcript.events, default=str)
    assert not any(password in recorded for password in PASSWORDS)
    assert [event["kind"] for event in transcript.events] == (["auth"] if request.header("authorization") else [])


@settings(max_examples=scaled(200), deadline=None)
@given(st.sampled_from(["GET", "POST", "HEAD", "PROPFIND"]), paths, queries,
       st.sampled_from(["autodiscover.contoso.test", "contoso.test", "", "[::1]:80"]), headers)
def test_any_path_and_headers_get_a_sendable_302_to_the_same_path(method, path, query, host, extra):
    request = parsed(method, path + query, host, extra)
    assume(request is not None)
    check_redirect(request)


@pytest.mark.parametrize("entry", corpus.entries("redirect_site"))
def test_redirect_site_corpus(entry):
    request = parsed(entry["method"], entry["target"], entry["host"], [tuple(pair) for pair in entry["headers"]])
    assert request is not None
    check_redirect(request)
