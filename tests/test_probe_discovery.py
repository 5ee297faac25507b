"""Autodiscover in Outlook's order against a small loopback web server that answers per Host header: methods tried
in order, stop at the first settings, redirectUrl / redirectAddr / HTTP redirects followed with the https-only rule,
the 10-redirect limit and loop detection, and the phase verdict taken from the attempt that got furthest."""
import pytest
from OpenSSL import SSL

from harness.org import load_org
from harness.pki import PKI, server_context
from harness.probe import pox
from harness.probe.discovery import Discovery
from harness.probe.hosts import ProbeContext
from harness.probe.http import Credentials
from harness.probe.net import Budget, Resolution, SrvTarget
from harness.probe.report import StepFailed, verdict_of
from harness.protocols import autodiscover
from tests.support.servers import LoopbackListener, tls_accept

HOSTS = ["contoso.test", "autodiscover.contoso.test", "mail.contoso.test", "fabrikam.test",
         "autodiscover.fabrikam.test", "elsewhere.example"] + [f"hop{i}.contoso.test" for i in range(1, 13)]
PATH = "/autodiscover/autodiscover.xml"
HTML = [("Content-Type", "text/html")]
XML = [("Content-Type", "text/xml; charset=utf-8")]


class Resolver:
    def __init__(self, known, srv=None):
        self.known, self.srv_records = set(known), srv or {}

    def resolve(self, host, timeout):
        if host not in self.known:
            raise StepFailed("nxdomain", f"{host} does not exist in DNS (NXDOMAIN)")
        return Resolution(host, ("127.0.0.1",), "A", "test")

    def srv(self, name, timeout):
        if name not in self.srv_records:
            raise StepFailed("no-srv-record", f"{name} has no SRV record")
        return [SrvTarget(0, 0, 443, self.srv_records[name])]


class WebServer(LoopbackListener):
    """HTTP/1.1 on 127.0.0.1, one request per connection; ``routes[(host, method)](body) -> (status, headers,
    body)``, anything else 404. With a pyOpenSSL context it speaks TLS."""

    def __init__(self, routes, context=None):
        self.routes, self.context = routes, context
        self.requests = []
        super().__init__()

    def _serve(self, sock):
        conn = sock
        try:
            if self.context is not None:
                conn = tls_accept(self.context, sock)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ")[0]
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            while len(body) < int(headers.get("content-length", "0")):
                body += conn.recv(65536)
            host = headers.get("host", "").rsplit(":", 1)[0]
            self.requests.append((method, host, "authorization" in headers))
            handler = self.routes.get((host, method))
            status, extra, payload = handler(body) if handler else (404, HTML, b"<html>Not Found</html>")
            response = (f"HTTP/1.1 {status} X\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n"
                        + "".join(f"{k}: {v}\r\n" for k, v in extra) + "\r\n").encode() + payload
            conn.sendall(response)
        except (SSL.Error, OSError):
            pass
        finally:
            sock.close()


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory):
    pki = PKI(str(tmp_path_factory.mktemp("discovery-pki")))
    credential = pki.issue(HOSTS)
    return server_context({}, credential), pki.ca_file


@pytest.fixture(scope="module")
def settings_xml():
    org = load_org()
    alice = org.find("alice")
    return autodiscover.respond_pox(org, pox.request_body(alice.email), alice,
                                    autodiscover.SiteUrls.for_org(org, 443)).body


@pytest.fixture
def web(tls_context):
    servers = []

    def start(https_routes, http_routes=None):
        https = WebServer(https_routes, tls_context[0])
        http = WebServer(http_routes or {})
        servers.extend([https, http])
        return https, http
    yield start
    for server in servers:
        server.stop()


def discover(https, http, ca_file, known=HOSTS, srv=None, email="alice@contoso.test"):
    context = ProbeContext(email=email, credentials=Credentials("alice", "CONTOSO", "pw"),
                           resolver=Resolver(known, srv), budget=Budget(2.0, 30.0), ca_file=ca_file,
                           https_port=https.port, http_port=http.port)
    discovery = Discovery(context)
    settings = discovery.run()
    return discovery, settings, {node.id: node for node in discovery.phase.walk()}


def answer(xml):
    return lambda body: (200, XML, xml)


def redirect_url(target):
    return answer(autodiscover.pox_redirect_url(target).body)


def test_root_domain_web_site_is_skipped_and_autodiscover_domain_answers(web, tls_context, settings_xml):
    https, http = web({("contoso.test", "POST"): lambda body: (200, HTML, b"<html>Welcome</html>"),
                       ("autodiscover.contoso.test", "POST"): answer(settings_xml)})
    discovery, settings, nodes = discover(https, http, tls_context[1])
    assert settings.proxy_host == "mail.contoso.test"
    assert discovery.phase.status == "pass"
    assert nodes["autodiscover.root-domain"].reason == "malformed-response"
    assert nodes["autodiscover.autodiscover-domain.post"].status == "pass"
    assert "autodiscover.http-redirect" not in nodes and "autodiscover.srv" not in nodes
    assert not any(sent_credentials for _m, _h, sent_credentials in https.requests)   # anonymous 200s


def test_redirect_url_chain_is_followed(web, tls_context, settings_xml):
    routes = {("contoso.test", "POST"): redirect_url(f"https://hop1.contoso.test{PATH}"),
              ("hop1.contoso.test", "POST"): redirect_url(f"https://hop2.contoso.test{PATH}"),
              ("hop2.contoso.test", "POST"): answer(settings_xml)}
    https, http = web(routes)
    discovery, settings, nodes = discover(https, http, tls_context[1])
    assert settings is not None and discovery.hops == 2
    assert nodes["autodiscover.root-domain"].status == "info"
    assert nodes["autodiscover.redirect-url"].status == "info"
    assert nodes["autodiscover.redirect-url#2"].status == "pass"


@pytest.mark.parametrize("hops, passes", [(10, True), (11, False)])
def test_at_most_ten_redirects(web, tls_context, settings_xml, hops, passes):
    hosts = ["contoso.test"] + [f"hop{i}.contoso.test" for i in range(1, hops + 1)]
    routes = {(host, "POST"): redirect_url(f"https://{nxt}{PATH}") for host, nxt in zip(hosts, hosts[1:])}
    routes[(hosts[-1], "POST")] = answer(settings_xml)
    https, http = web(routes)
    discovery, settings, nodes = discover(https, http, tls_context[1], known=hosts)
    assert (settings is not None) == passes
    if not passes:
        verdict = verdict_of([discovery.phase])
        assert (verdict.fails_at, verdict.reason) == ("autodiscover", "too-many-redirects")
        assert verdict.host == "hop10.contoso.test"


def test_redirect_loop_and_http_redirect_targets_fail(web, tls_context):
    routes = {("contoso.test", "POST"): redirect_url(f"https://hop1.contoso.test{PATH}"),
              ("hop1.contoso.test", "POST"): redirect_url(f"https://contoso.test{PATH}"),
              ("autodiscover.contoso.test", "POST"): redirect_url(f"http://hop2.contoso.test{PATH}")}
    https, http = web(routes)
    discovery, settings, nodes = discover(https, http, tls_context[1])
    assert settings is None
    assert nodes["autodiscover.redirect-url"].reason == "redirect-loop"
    assert nodes["autodiscover.autodiscover-domain"].reason == "insecure-redirect"
    verdict = verdict_of([discovery.phase])
    assert (verdict.fails_at, verdict.reason, verdict.host) == ("autodiscover", "redirect-loop", "hop1.contoso.test")


def test_redirect_addr_restarts_with_the_new_domain(web, tls_context, settings_xml):
    routes = {("contoso.test", "POST"): answer(autodiscover.pox_redirect_addr("alice@fabrikam.test").body),
              ("fabrikam.test", "POST"): answer(settings_xml)}
    https, http = web(routes)
    discovery, settings, nodes = discover(https, http, tls_context[1])
    assert settings is not None
    assert nodes["autodiscover.root-domain"].message == "redirectAddr → alice@fabrikam.test"
    assert nodes["autodiscover.root-domain#2"].host == "fabrikam.test"


def test_redirect_addr_back_to_the_same_address_is_a_loop(web, tls_context):
    https, http = web({("contoso.test", "POST"): answer(autodiscover.pox_redirect_addr("alice@contoso.test").body)})
    discovery, settings, nodes = discover(https, http, tls_context[1])
    assert settings is None and nodes["autodiscover.root-domain"].reason == "redirect-loop"


def test_http_redirect_method_and_302_on_the_post(web, tls_context, settings_xml):
    https_routes = {("mail.contoso.test", "POST"): lambda body: (302, [("Location", f"https://hop1.contoso.test{PATH}")],
                                                                  b""),
                    ("hop1.contoso.test", "POST"): answer(settings_xml)}
    https, http = web(https_routes, {})
    http.routes[("autodiscover.contoso.test", "GET")] = lambda body: (
        302, [("Location", f"https://mail.contoso.test:{https.port}{PATH}")], b"")
    discovery, settings, nodes = discover(https, http, tls_context[1])
    assert settings is not None
    assert nodes["autodiscover.root-domain"].reason == "http-404"
    assert nodes["autodiscover.http-redirect.redirect"].status == "pass"
    assert nodes["autodiscover.http-redirect.target"].status == "info"
    assert nodes["autodiscover.redirect-url"].status == "pass" and discovery.hops == 1
    assert not any(sent_credentials for _m, _h, sent_credentials in http.requests)


def test_insecure_http_redirect_then_srv_with_a_foreign_target(web, tls_context, settings_xml):
    https, http = web({("elsewhere.example", "POST"): answer(settings_xml)},
                      {("autodiscover.contoso.test", "GET"): lambda body: (
                          302, [("Location", f"http://mail.contoso.test{PATH}")], b"")})
    discovery, settings, nodes = discover(https, http, tls_context[1],
                                          srv={"_autodiscover._tcp.contoso.test": "elsewhere.example"})
    assert settings is not None
    assert nodes["autodiscover.http-redirect"].reason == "insecure-redirect"
    assert nodes["autodiscover.srv.dns"].status == "warn"
    assert nodes["autodiscover.srv.target.post"].status == "pass"


def test_when_everything_fails_the_furthest_attempt_decides(web, tls_context):
    https, http = web({("autodiscover.contoso.test", "POST"): answer(autodiscover.pox_error(500).body)})
    discovery, settings, nodes = discover(https, http, tls_context[1], known=["autodiscover.contoso.test"])
    assert settings is None
    assert nodes["autodiscover.root-domain"].reason == "nxdomain"
    assert nodes["autodiscover.srv"].reason == "no-srv-record"
    verdict = verdict_of([discovery.phase])
    assert (verdict.fails_at, verdict.reason, verdict.host) == (
        "autodiscover", "autodiscover-error-500", "autodiscover.contoso.test")


def test_nothing_published_is_no_autodiscover_endpoint(web, tls_context):
    """A root web site, no autodiscover host, port 80 answering 404, no SRV: each only says the method is not set
    up, so none of them is blamed."""
    https, http = web({("contoso.test", "POST"): lambda body: (200, HTML, b"<html>Welcome</html>")})
    discovery, settings, nodes = discover(https, http, tls_context[1], known=["contoso.test"])
    assert settings is None
    verdict = verdict_of([discovery.phase])
    assert (verdict.fails_at, verdict.reason, verdict.step_id) == ("autodiscover", "no-autodiscover-endpoint",
                                                                   "autodiscover")
    assert "contoso.test: malformed-response" in verdict.message
    assert nodes["autodiscover.srv"].reason == "no-srv-record"
