"""The rest of the shared namespace, sans-IO: what Outlook Web App, the ECP, Exchange ActiveSync and the OAB virtual
directory answer on the Outlook Anywhere host names (Exchange 2013 SP1 on IIS 8.5), so that a client or an admin
checking "one namespace, one certificate" sees the services Exchange puts there.

OWA and the ECP use forms-based authentication: without the session cookie every page is a 302 to the logon page,
which renders. ActiveSync uses Basic; the OAB directory Windows authentication (Negotiate, NTLM)."""
from __future__ import annotations

import html
from typing import Tuple
from urllib.parse import quote

from harness.protocols.http import HttpAnswer, moved_page

LOGON_PATH = "/owa/auth/logon.aspx"
OWA_PREFIXES = ("/owa", "/ecp")
ACTIVESYNC_PATH = "/microsoft-server-activesync"
OAB_PATH = "/oab"

# Exchange 2013 SP1's ActiveSync OPTIONS answer: the protocol versions and commands it serves.
ACTIVESYNC_VERSIONS = "2.0,2.1,2.5,12.0,12.1,14.0,14.1"
ACTIVESYNC_COMMANDS = ("Sync,SendMail,SmartForward,SmartReply,GetAttachment,GetHierarchy,CreateCollection,"
                       "DeleteCollection,MoveCollection,FolderSync,FolderCreate,FolderDelete,FolderUpdate,MoveItems,"
                       "GetItemEstimate,MeetingResponse,Search,Settings,Ping,ItemOperations,Provision,"
                       "ResolveRecipients,ValidateCert")
ACTIVESYNC_OPTIONS_HEADERS: Tuple[Tuple[str, str], ...] = (
    ("Allow", "OPTIONS,POST"), ("MS-Server-ActiveSync", "15.0"), ("MS-ASProtocolVersions", ACTIVESYNC_VERSIONS),
    ("MS-ASProtocolCommands", ACTIVESYNC_COMMANDS), ("Public", "OPTIONS,POST"))
ACTIVESYNC_AUTH = ("Basic",)              # the Microsoft-Server-ActiveSync directory's default
OAB_AUTH = ("Negotiate", "NTLM")          # the OAB directory's default: Windows authentication
NO_CACHE: Tuple[Tuple[str, str], ...] = (("Cache-Control", "no-cache"), ("Pragma", "no-cache"))
UTF8_HTML = "text/html; charset=utf-8"


def is_forms_path(path: str) -> bool:
    """/owa and /ecp (any case, any depth): the forms-based-authentication directories."""
    path = path.lower()
    return any(path == prefix or path.startswith(prefix + "/") for prefix in OWA_PREFIXES)


def _url_encode(text: str) -> str:
    """ASP.NET's HttpUtility.UrlEncode: lower-case hex, as Exchange writes the url= of its logon redirect."""
    return "".join(ch if ch.isalnum() or ch in "-_.!*()" else "".join(f"%{b:02x}" for b in ch.encode())
                   for ch in text)


def logon_redirect(host: str, target: str) -> HttpAnswer:
    """The 302 an unauthenticated request to /owa or /ecp gets: to the logon page, carrying where it was going."""
    back = f"https://{host}{quote(target, safe='/-._~!$&()*+,;=:@?%')}"
    location = f"https://{host}{LOGON_PATH}?url={_url_encode(back)}&reason=0"
    return HttpAnswer(302, moved_page(location), headers=(("Location", location), *NO_CACHE), reason="Found")


def logon_page(destination: str = "") -> bytes:
    """Exchange 2013's forms-based logon page (Outlook Web App), posting to /owa/auth.owa."""
    destination = html.escape(destination, quote=True)
    return f"""<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01 Transitional//EN">
<html>
<head>
<meta http-equiv="Content-Type" content="text/html; CHARSET=utf-8">
<meta http-equiv="X-UA-Compatible" content="IE=10">
<meta name="robots" content="noindex, nofollow">
<title>Outlook Web App</title>
<style>
body {{ font-family: "Segoe UI", "Segoe", Tahoma, Helvetica, Arial, sans-serif; margin: 0; background: #fff; }}
.logonContainer {{ margin: 120px auto 0 auto; width: 360px; }}
.signInHeader {{ font-size: 42px; color: #0072c6; font-weight: 200; margin-bottom: 30px; }}
.signInInputText {{ width: 100%; height: 28px; margin-bottom: 14px; border: 1px solid #9b9b9b; padding: 2px 6px; }}
.signinbutton {{ color: #0072c6; font-size: 24px; cursor: pointer; }}
.signInInputLabel {{ color: #333; font-size: 13px; }}
</style>
</head>
<body class="signInBg">
<form action="/owa/auth.owa" method="POST" name="logonForm" enctype="application/x-www-form-urlencoded"
 autocomplete="off">
<input type="hidden" name="destination" value="{destination}">
<input type="hidden" name="flags" value="4">
<input type="hidden" name="forcedownlevel" value="0">
<div class="logonContainer">
<div class="signInHeader"><span class="owaLogo">Outlook</span> Web App</div>
<div class="signInInputLabel"><label for="username">Domain\\user name:</label></div>
<input id="username" name="username" type="text" class="signInInputText" placeholder="Domain\\user name">
<div class="signInInputLabel"><label for="password">Password:</label></div>
<input id="password" name="password" type="password" class="signInInputText" placeholder="Password">
<div><input id="chkPrvt" name="trusted" type="checkbox" value="0"><label for="chkPrvt"> This is a private
 computer</label></div>
<div class="signInEnter"><div class="signinbutton" role="button" tabindex="0"
 onclick="document.logonForm.submit()"><span class="signinTxt">sign in</span></div></div>
<input name="isUtf8" value="1" type="hidden">
</div>
</form>
</body>
</html>
""".encode()


def activesync_answer(method: str) -> HttpAnswer:
    """Microsoft-Server-ActiveSync once authenticated: OPTIONS lists versions and commands; a POST without the
    command parameters is a 400; anything else is refused as IIS refuses a verb the handler does not take."""
    method = method.upper()
    if method == "OPTIONS":
        return HttpAnswer(200, b"", content_type="application/vnd.ms-sync.wbxml",
                          headers=ACTIVESYNC_OPTIONS_HEADERS + NO_CACHE[:1])
    if method == "POST":
        return HttpAnswer(400, b"", reason="Bad Request")
    return HttpAnswer(501, b"", reason="Not Implemented")

