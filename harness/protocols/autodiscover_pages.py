"""What clients meet on Autodiscover URLs instead of an Autodiscover answer, sans-IO: the error pages of the
Autodiscover application pool and of the proxies in front of it, and a company web site answering on the domain's
own name (the classic root-domain case of Autodiscover's first guess)."""
from __future__ import annotations

from email.utils import formatdate

from harness.protocols.http import HttpAnswer, HttpResponse

# status -> (reason, page): ASP.NET's runtime error (500), a reverse proxy that cannot reach the CAS (502, 504),
# HTTP.sys for a stopped application pool (503).
ERROR_PAGES = {
    500: ("Internal Server Error", b"<html><head><title>Runtime Error</title></head><body><h1>Server Error in "
                                   b"'/Autodiscover' Application.</h1><h2><i>Runtime Error</i></h2></body></html>"),
    502: ("Bad Gateway", b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 - Web server received "
                         b"an invalid response while acting as a gateway or proxy server.</h1></body></html>"),
    503: ("Service Unavailable", b"<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\"><HTML><HEAD><TITLE>Service "
                                 b"Unavailable</TITLE></HEAD><BODY><h2>Service Unavailable</h2><hr><p>HTTP Error "
                                 b"503. The service is unavailable.</p></BODY></HTML>"),
    504: ("Gateway Timeout", b"<html><head><title>504 Gateway Timeout</title></head><body><h1>504 - Gateway "
                             b"Timeout</h1></body></html>"),
}

# The company web site (Apache): its home page, login challenge and error pages.
WEB_SITE_PAGES = {
    200: b"<!DOCTYPE html><html><head><title>Contoso - Home</title></head><body><h1>Welcome to Contoso</h1>"
         b"<p>Our products and services.</p></body></html>",
    401: b"<!DOCTYPE html><html><head><title>401 Unauthorized</title></head><body><h1>Unauthorized</h1>"
         b"<p>This server could not verify that you are authorized to access the document requested.</p>"
         b"</body></html>",
    403: b"<!DOCTYPE html><html><head><title>403 Forbidden</title></head><body><h1>Forbidden</h1></body></html>",
    404: b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
         b"<p>The requested URL was not found on this server.</p></body></html>",
    500: b"<!DOCTYPE html><html><head><title>500 Internal Server Error</title></head><body><h1>Internal Server "
         b"Error</h1></body></html>",
}
WEB_SITE_REASONS = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error"}


def error_page(status: int) -> HttpAnswer:
    """The 5xx page sent in place of the Autodiscover answer (``status`` is one of ERROR_PAGES)."""
    reason, page = ERROR_PAGES[status]
    return HttpAnswer(status, page, reason=reason)


def web_site_response(status: int, host: str) -> HttpResponse:
    """The company web site's answer to any request (``status`` is one of WEB_SITE_PAGES); its 401 asks for Basic
    credentials of its own accounts, in a realm named after the host."""
    headers = [("Content-Type", "text/html; charset=UTF-8"), ("Server", "Apache/2.4.57 (Debian)"),
               ("Date", formatdate(usegmt=True))]
    if status == 401:
        headers.append(("WWW-Authenticate", f'Basic realm="{host or "intranet"}"'))
    return HttpResponse(status, WEB_SITE_REASONS[status], headers, WEB_SITE_PAGES[status])
