"""The sites (services/site.py) called directly with HttpRequest objects: routing as IIS does it (paths, case,
methods), IIS's 404/405 pages, the port-80 redirect vhost, and the authentication schemes offered."""
from __future__ import annotations

import base64
import random
from typing import List, Optional, Tuple

import pytest
from impacket import ntlm

from harness.faults.base import Fault
from harness.hooks import FaultSet, Scope
from harness.org import load_org
from harness.protocols.autodiscover import SiteUrls
from harness.protocols.http import AuthOffer, ConnectionInfo, HttpAnswer, HttpRequest, HttpResponse
from harness.protocols.httpauth import AuthOutcome
from harness.protocols.rpcproxy import HttpError
from harness.services.site import ExchangeSite, RedirectSite
from harness.transcript import Transcript

ORG = load_org()
ALICE = ORG.mailboxes[0]
assert ALICE.username == "alice"
POX_REQUEST = (b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
               b'<Request><EMailAddress>alice@contoso.test</EMailAddress><AcceptableResponseSchema>'
               b'http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a'
               b'</AcceptableResponseSchema></Request></Autodiscover>')


def basic(user: str, password: str) -> Tuple[str, str]:
    return ("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())


ALICE_BASIC = basic("alice@contoso.test", ALICE.password)


def request(method: str, target: str, *headers: Tuple[str, str], body: bytes = b"", tls: bool = True,
            host: str = "mail.contoso.test", conn: Optional[ConnectionInfo] = None) -> HttpRequest:
    """A request as services/web.py builds it."""
    path, _, query = target.partition("?")
    return HttpRequest(method=method, target=target, path=path, query=query,
                       headers=[("Host", host), *headers], body=body,
                       scheme="https" if tls else "http",
                       conn=conn or ConnectionInfo(peer=("127.0.0.1", 50000), local=("127.0.0.1", 8443), tls=tls,
                                                   conn_id=7))


def header_values(response: HttpResponse, name: str) -> List[str]:
    return [value for key, value in response.headers if key.lower() == name.lower()]


def exchange_site(*faults: Fault, rpc_proxy: object = None) -> Tuple[ExchangeSite, Transcript]:
    transcript = Transcript()
    site = ExchangeSite(ORG, transcript, random.Random(1), SiteUrls.for_org(ORG, 8443), rpc_proxy=rpc_proxy,
                        faults=FaultSet(faults))
    return site, transcript


# ---- routing ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [
    "/autodiscover/autodiscover.xml", "/AutoDiscover/AutoDiscover.XML", "/AUTODISCOVER/AUTODISCOVER.SVC",
    "/autodiscover/alice@contoso.test/autodiscover.xml", "/Autodiscover/x/y/Autodiscover.svc",
    "/EWS/Exchange.asmx", "/ews/exchange.asmx", "/rpc/rpcproxy.dll", "/RPC/RpcProxy.dll",
])
def test_protected_routes_in_any_case_ask_for_credentials(path):
    site, _ = exchange_site()
    response = site.handle(request("POST", path))
    assert response.status == 401
    assert header_values(response, "WWW-Authenticate") == ["Negotiate", "NTLM", 'Basic realm="mail.contoso.test"']


def test_autodiscover_401s_carry_the_autodiscover_headers_and_others_do_not():
    site, _ = exchange_site()
    assert header_values(site.handle(request("POST", "/autodiscover/autodiscover.xml")), "X-SOAP-Enabled") == ["True"]
    assert header_values(site.handle(request("POST", "/ews/exchange.asmx")), "X-SOAP-Enabled") == []


@pytest.mark.parametrize("path", ["/", "/owa2/", "/autodiscover/autodiscover.xmlx", "/autodiscover/",
                                  "/autodiscover/autodiscover.xml.bak", "/ecpx/default.aspx", "/exchange/"])
def test_unknown_paths_get_iis_404_without_asking_for_credentials(path):
    site, _ = exchange_site()
    response = site.handle(request("GET", path))
    assert response.status == 404 and response.reason == "Not Found"
    assert b"404 - File or directory not found." in response.body
    assert header_values(response, "Server") == ["Microsoft-IIS/8.5"]
    assert header_values(response, "WWW-Authenticate") == []


def test_a_sub_path_of_a_route_is_that_route():
    site, _ = exchange_site()
    assert site.handle(request("GET", "/EWS/Exchange.asmx/wssecurity")).status == 401


def test_autodiscover_json_is_anonymous_and_case_blind():
    site, transcript = exchange_site()
    response = site.handle(request("GET", "/AutoDiscover/AutoDiscover.json/v1.0/alice@contoso.test?Protocol=EWS"))
    assert response.status == 200 and b"/EWS/Exchange.asmx" in response.body
    (event,) = transcript.of_kind("autodiscover")
    assert event["mailbox"] == "alice@contoso.test"


def test_pox_autodiscover_with_basic_credentials_answers_the_settings():
    site, transcript = exchange_site()
    response = site.handle(request("POST", "/autodiscover/autodiscover.xml", ALICE_BASIC, body=POX_REQUEST))
    assert response.status == 200 and ALICE.display_name.encode() in response.body
    assert header_values(response, "X-SOAP-Enabled") == ["True"]
    assert [(e["scheme"], e["result"]) for e in transcript.of_kind("auth")] == [("Basic", "success")]


@pytest.mark.parametrize("path", ["/autodiscover/autodiscover.svc", "/EWS/Exchange.asmx"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_get_on_a_soap_service_gets_the_service_page(path, method):
    site, _ = exchange_site()
    response = site.handle(request(method, path, ALICE_BASIC))
    assert response.status == 200 and b"You have created a service." in response.body


def test_a_get_on_pox_autodiscover_is_an_autodiscover_error_not_a_405():
    site, transcript = exchange_site()
    response = site.handle(request("GET", "/autodiscover/autodiscover.xml", ALICE_BASIC, body=POX_REQUEST))
    assert response.status == 200 and b"<ErrorCode>600</ErrorCode>" in response.body
    assert transcript.of_kind("autodiscover")[0]["error_code"] == "600"


def test_a_fault_answer_is_rendered_as_iis_would_with_the_reason_of_its_status():
    class MethodNotAllowed(Fault):
        name = "autodiscover.test-405"

        def on_http_request(self, scope: Scope, request: HttpRequest) -> HttpAnswer:
            return HttpAnswer(405, b"<h2>405</h2>", headers=(("Allow", "POST"),))

    site, _ = exchange_site(MethodNotAllowed())
    response = site.handle(request("GET", "/owa/"))
    assert (response.status, response.reason, response.body) == (405, "Method Not Allowed", b"<h2>405</h2>")
    assert header_values(response, "Allow") == ["POST"] and header_values(response, "Server") == ["Microsoft-IIS/8.5"]


# ---- tunnels ----------------------------------------------------------------------------------------------------
class RefusingProxy:
    """An RPC proxy that refuses every channel with the proxy core's error."""

    def __init__(self, error: HttpError):
        self.error = error
        self.opened: List[Tuple[str, str]] = []

    def open_channel(self, request: HttpRequest, mailbox: object, io: object) -> HttpError:
        self.opened.append((request.method, request.query))
        return self.error


def test_a_tunnel_outside_the_rpc_proxy_path_is_a_404():
    site, _ = exchange_site(rpc_proxy=RefusingProxy(HttpError(503, "Invalid RPC Port")))
    assert site.open_tunnel(request("RPC_IN_DATA", "/ews/exchange.asmx", ALICE_BASIC), io=None).status == 404


def test_an_unauthenticated_tunnel_is_challenged_before_the_proxy_sees_it():
    proxy = RefusingProxy(HttpError(503, "Invalid RPC Port"))
    site, _ = exchange_site(rpc_proxy=proxy)
    assert site.open_tunnel(request("RPC_IN_DATA", "/rpc/rpcproxy.dll?ex01:6001"), io=None).status == 401
    assert proxy.opened == []


@pytest.mark.parametrize("error, page", [(HttpError(405, "Method Not Allowed"), b"405 - Method Not Allowed"),
                                         (HttpError(503, "Invalid RPC Port"), b"503 - Invalid RPC Port")])
def test_a_refused_tunnel_gets_the_iis_page_of_the_proxy_error(error, page):
    proxy = RefusingProxy(error)
    site, transcript = exchange_site(rpc_proxy=proxy)
    response = site.open_tunnel(request("RPC_OUT_DATA", "/RPC/rpcproxy.dll?ex01:6001", ALICE_BASIC), io=None)
    assert (response.status, response.reason) == (error.status, error.reason) and page in response.body
    assert proxy.opened == [("RPC_OUT_DATA", "ex01:6001")]
    (event,) = transcript.of_kind("rpc_proxy_refused")
    assert (event["status"], event["target"]) == (error.status, "ex01:6001")


def test_without_an_rpc_proxy_a_tunnel_is_unavailable():
    site, _ = exchange_site()
    assert site.open_tunnel(request("RPC_IN_DATA", "/rpc/rpcproxy.dll?ex01:6001", ALICE_BASIC), io=None).status == 503


# ---- auth offers ------------------------------------------------------------------------------------------------
class Offer(Fault):
    name = "auth.test-offer"
    offer = AuthOffer(("Basic",))

    def on_auth_methods(self, scope: Scope, request: HttpRequest) -> AuthOffer:
        return self.offer


def offering(methods: Tuple[str, ...], combined: bool = False) -> Offer:
    fault = Offer()
    fault.offer = AuthOffer(methods, combined_challenge=combined)
    return fault


def test_the_auth_methods_hook_decides_the_schemes_offered():
    site, _ = exchange_site(offering(("NTLM",)))
    assert header_values(site.handle(request("POST", "/ews/exchange.asmx")), "WWW-Authenticate") == ["NTLM"]


def test_a_scheme_not_offered_fails_even_with_good_credentials():
    site, transcript = exchange_site(offering(("NTLM", "Negotiate")))
    assert site.handle(request("GET", "/ews/exchange.asmx", ALICE_BASIC)).status == 401
    (event,) = transcript.of_kind("auth")
    assert (event["scheme"], event["result"], event["reason"]) == ("Basic", "failure", "scheme not offered")


def test_a_combined_challenge_names_the_other_windows_scheme_on_the_token_line():
    site, _ = exchange_site(offering(("NTLM", "Negotiate"), combined=True))
    type1 = base64.b64encode(ntlm.getNTLMSSPType1("", "").getData()).decode()
    response = site.handle(request("POST", "/ews/exchange.asmx", ("Authorization", f"NTLM {type1}")))
    (line,) = header_values(response, "WWW-Authenticate")
    assert response.status == 401 and line.startswith("NTLM ") and line.endswith(", Negotiate")


def test_an_auth_result_refusal_re_challenges():
    class Refuse(Fault):
        name = "auth.test-refuse"

        def on_auth_result(self, scope: Scope, request: HttpRequest, outcome: AuthOutcome) -> AuthOutcome:
            return AuthOutcome("failure", scheme=outcome.scheme, user=outcome.user, reason="account disabled")

    site, transcript = exchange_site(Refuse(user="alice@contoso.test"))
    response = site.handle(request("GET", "/ews/exchange.asmx", ALICE_BASIC))
    assert response.status == 401 and len(header_values(response, "WWW-Authenticate")) == 3
    assert transcript.of_kind("auth")[0]["reason"] == "account disabled"
    bob = ORG.mailboxes[1]
    assert site.handle(request("GET", "/ews/exchange.asmx", basic(bob.email, bob.password))).status == 200


def test_the_http_transcript_line_masks_credentials():
    site, transcript = exchange_site()
    req = request("GET", "/ews/exchange.asmx", ALICE_BASIC)
    site.response_sent(req, site.handle(req), 0.0015)
    (event,) = transcript.of_kind("http")
    assert (event["status"], event["conn"], event["ms"]) == (200, 7, 1.5)
    assert ALICE.password not in str(event) and ALICE_BASIC[1] not in str(event)
    assert ["Authorization", f"Basic ***({len(ALICE_BASIC[1]) - len('Basic ')} chars)"] in event["request_headers"]


# ---- the port-80 redirect vhost ---------------------------------------------------------------------------------
def redirect_site(https_port: int = 8443, *faults: Fault) -> Tuple[RedirectSite, Transcript]:
    transcript = Transcript()
    return RedirectSite(ORG, transcript, https_port, faults=FaultSet(faults)), transcript


@pytest.mark.parametrize("path, location", [
    ("/", "https://autodiscover.contoso.test:8443/autodiscover/autodiscover.xml"),
    ("/owa/", "https://autodiscover.contoso.test:8443/autodiscover/autodiscover.xml"),
    ("/autodiscover/autodiscover.xml", "https://autodiscover.contoso.test:8443/autodiscover/autodiscover.xml"),
    ("/Autodiscover/Autodiscover.xml", "https://autodiscover.contoso.test:8443/Autodiscover/Autodiscover.xml"),
    ("/autodiscover/autodiscover.svc", "https://autodiscover.contoso.test:8443/autodiscover/autodiscover.svc"),
])
def test_the_redirect_vhost_sends_every_path_to_https_autodiscover(path, location):
    site, _ = redirect_site()
    response = site.handle(request("GET", path, tls=False))
    assert (response.status, response.reason) == (302, "Found")
    assert header_values(response, "Location") == [location] and location.encode() in response.body


def test_the_redirect_on_443_names_no_port():
    site, _ = redirect_site(443)
    location = header_values(site.handle(request("GET", "/", tls=False)), "Location")
    assert location == ["https://autodiscover.contoso.test/autodiscover/autodiscover.xml"]


@pytest.mark.parametrize("method", ["POST", "PUT", "RPC_IN_DATA"])
def test_every_method_and_every_refusal_path_redirects(method):
    site, _ = redirect_site()
    req = request(method, "/autodiscover/autodiscover.xml", tls=False)
    assert site.handle(req).status == 302
    assert site.too_large(req, 1 << 30).status == 302
    assert site.open_tunnel(req, io=None).status == 302


@pytest.mark.parametrize("password, valid", [(ALICE.password, True), ("wrong", False)])
def test_credentials_sent_to_the_redirect_vhost_are_recorded_never_their_password(password, valid):
    site, transcript = redirect_site()
    site.handle(request("GET", "/", basic("alice@contoso.test", password), tls=False))
    (event,) = transcript.of_kind("auth")
    assert (event["user"], event["password_valid"], event["result"], event["tls"]) == (
        "alice@contoso.test", valid, "sent in clear", False)
    assert password not in str(event)


def test_an_http_request_fault_answers_on_the_redirect_vhost_instead():
    class DemandBasic(Fault):
        name = "auth.test-basic-over-http"

        def on_http_request(self, scope: Scope, request: HttpRequest) -> HttpAnswer:
            return HttpAnswer(401, b"", headers=(("WWW-Authenticate", 'Basic realm="x"'),))

    site, _ = redirect_site(8443, DemandBasic(host="autodiscover.contoso.test"))
    assert site.handle(request("GET", "/", tls=False)).status == 302   # scoped to another host
    response = site.handle(request("GET", "/", host="autodiscover.contoso.test", tls=False))
    assert response.status == 401 and header_values(response, "WWW-Authenticate") == ['Basic realm="x"']
