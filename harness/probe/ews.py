"""The EWS phase (`mockex probe --test ews`), as the Remote Connectivity Analyzer's Exchange Web Services test runs
it after Autodiscover: the EWS URL from the EXPR settings, DNS, port and certificate of its host, the HTTP
authentication methods of /EWS/Exchange.asmx and a logon with one of them, GetFolder on the Inbox and a FindItem of
a few of its items. A failure names the step, a reason id (an Exchange error code has its own where it names a
cause an admin can act on) and the Exchange response code as evidence. After the first failure the rest is skipped.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

from harness.probe.hosts import Connector, ProbeContext, check_host
from harness.probe.http import HttpConnection, Response, authenticated, choose_scheme, offered_schemes
from harness.probe.pox import OutlookSettings
from harness.probe.report import Step, StepFailed, Timed, run_in_order, skip_steps
from harness.protocols.autodiscover_answer import parse_untrusted_xml
from harness.protocols.ews_xml import ERRORS_NS, MESSAGES_NS, TYPES_NS

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
EWS_PATH = "/EWS/Exchange.asmx"
FIND_ITEMS = 5    # "a few items": the analyzer lists some, it does not page the folder
HEADERS = [("Content-Type", "text/xml; charset=utf-8")]
# Exchange response codes with a cause of their own; any other error code is "ews-error", with the code as evidence.
EWS_REASONS = {"ErrorServerBusy": "ews-server-busy", "ErrorMailboxStoreUnavailable": "ews-mailbox-store-unavailable",
               "ErrorMailboxMoveInProgress": "ews-mailbox-move-in-progress"}
LATER_STEPS = (("ews.auth", "ews-auth", "HTTP authentication"), ("ews.get-folder", "ews", "GetFolder (Inbox)"),
               ("ews.find-item", "ews", f"FindItem (first {FIND_ITEMS} items of the Inbox)"))


def envelope(body: str) -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<s:Envelope xmlns:s="{SOAP_NS}" xmlns:m="{MESSAGES_NS}" '
            f'xmlns:t="{TYPES_NS}"><s:Header><t:RequestServerVersion Version="Exchange2013_SP1"/></s:Header>'
            f"<s:Body>{body}</s:Body></s:Envelope>").encode()


def get_folder_request(email: str) -> bytes:
    return envelope('<m:GetFolder><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape><m:FolderIds>'
                    f'<t:DistinguishedFolderId Id="inbox"><t:Mailbox><t:EmailAddress>{escape(email)}'
                    "</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId></m:FolderIds></m:GetFolder>")


def find_item_request(email: str) -> bytes:
    return envelope('<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>'
                    '<t:AdditionalProperties><t:FieldURI FieldURI="item:Subject"/></t:AdditionalProperties>'
                    f'</m:ItemShape><m:IndexedPageItemView MaxEntriesReturned="{FIND_ITEMS}" Offset="0" '
                    'BasePoint="Beginning"/><m:ParentFolderIds><t:DistinguishedFolderId Id="inbox"><t:Mailbox>'
                    f"<t:EmailAddress>{escape(email)}</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId>"
                    "</m:ParentFolderIds></m:FindItem>")


def ews_url_of(settings: OutlookSettings) -> str:
    """EXPR's EwsUrl (what Outlook and the analyzer use from outside), else the RPC proxy host's /EWS."""
    return settings.ews_url or f"https://{settings.proxy_host}{EWS_PATH}"


def parse_answer(response: Response, operation: str) -> Any:
    """The m:<operation>ResponseMessage of a success, or StepFailed with the Exchange code (a SOAP fault's, or an
    error response message's) or what else is wrong with the answer."""
    root = parse_untrusted_xml(response.body) if response.body else None
    if root is None or root.tag != f"{{{SOAP_NS}}}Envelope":
        if response.status != 200:
            raise StepFailed("ews-http-error", f"{operation}: HTTP {response.status} {response.reason}",
                             http_status=response.status)
        raise StepFailed("ews-malformed-response", f"{operation}: the answer is not a SOAP envelope",
                         http_status=response.status)
    version = root.find(f"{{{SOAP_NS}}}Header/{{{TYPES_NS}}}ServerVersionInfo")
    evidence: Dict[str, Any] = {"http_status": response.status}
    if version is not None:
        evidence["server_version"] = ".".join(version.get(k, "?") for k in (
            "MajorVersion", "MinorVersion", "MajorBuildNumber", "MinorBuildNumber"))
    fault = root.find(f"{{{SOAP_NS}}}Body/{{{SOAP_NS}}}Fault")
    if fault is not None:
        code = fault.findtext(f"detail/{{{ERRORS_NS}}}ResponseCode") or (fault.findtext("faultcode") or "")
        code = code.rsplit(":", 1)[-1]
        text = fault.findtext("faultstring") or ""
        back_off = fault.findtext(f"detail/{{{TYPES_NS}}}MessageXml/{{{TYPES_NS}}}Value[@Name='BackOffMilliseconds']")
        if back_off:
            evidence["back_off_ms"] = int(back_off) if back_off.isdigit() else back_off
        raise _exchange_error(operation, code, text, evidence)
    message = root.find(f".//{{{MESSAGES_NS}}}{operation}ResponseMessage")
    if message is None:
        raise StepFailed("ews-malformed-response", f"{operation}: the answer has no {operation}ResponseMessage",
                         **evidence)
    if message.get("ResponseClass") != "Success":
        code = message.findtext(f"{{{MESSAGES_NS}}}ResponseCode") or ""
        raise _exchange_error(operation, code, message.findtext(f"{{{MESSAGES_NS}}}MessageText") or "", evidence)
    return message, evidence


def _exchange_error(operation: str, code: str, text: str, evidence: Dict[str, Any]) -> StepFailed:
    message = f"{operation} failed: {code}" + (f" ({text})" if text else "")
    return StepFailed(EWS_REASONS.get(code, "ews-error"), message, error_code=code, **evidence)


class EwsTest:
    def __init__(self, context: ProbeContext, settings: OutlookSettings, preferred_scheme: Optional[str] = None):
        self.context, self.settings, self.preferred = context, settings, preferred_scheme
        self.url = ews_url_of(settings)
        parts = urlsplit(self.url)
        self.host, self.path = (parts.hostname or ""), (parts.path or EWS_PATH)
        self.port = parts.port or context.https_port   # the URL's own port, else what stands in for 443
        self.phase = Step("ews", f"Exchange Web Services on {self.host or self.url}", None, self.host or None)
        self.phase.evidence["ews_url"] = self.url
        self._connector: Optional[Connector] = None
        self._conn: Optional[HttpConnection] = None
        self.scheme: Optional[str] = None

    def run(self) -> Step:
        with Timed(self.phase):
            try:
                self._run()
            finally:
                if self._conn is not None:
                    self._conn.close()
            failing = next((c for c in self.phase.children if c.status == "fail"), None)
            if failing is not None:
                self.phase.fail(failing.reason or "ews-error", failing.message)
                self.phase.cause = failing.id
            else:
                self.phase.passed(f"EWS at {self.url} answers for {self.settings.email}")
        return self.phase

    def _run(self) -> None:
        if urlsplit(self.url).scheme != "https" or not self.host:
            step = self.phase.add(Step("ews.url", "EWS URL", "ews", self.host or None))
            step.fail("no-ews-url", f"no usable https EWS URL from Autodiscover ({self.url!r})", ews_url=self.url)
            skip_steps(self.phase, self.host or None, LATER_STEPS)
            return
        self._connector = check_host(self.context, self.phase, self.host, self.port, secure=True)
        if self._connector is None:
            skip_steps(self.phase, self.host or None, LATER_STEPS)
            return
        checks = [self._authenticate, self._get_folder, self._find_item]
        run_in_order(self.phase, self.host or None, LATER_STEPS, checks)

    # ---- the checks ---------------------------------------------------------------------------------------
    def _authenticate(self, step: Step) -> None:
        assert self._connector is not None
        self._conn = conn = self._connector.open()
        anonymous = conn.request("POST", self.path, HEADERS, get_folder_request(self.settings.email))
        offered = offered_schemes(anonymous)
        step.evidence.update(offered=offered, status_without_credentials=anonymous.status)
        if anonymous.status != 401:
            raise StepFailed("ews-http-error", f"POST {self.path} without credentials answered HTTP "
                                               f"{anonymous.status} {anonymous.reason}, not 401",
                             http_status=anonymous.status)
        self.scheme = choose_scheme(offered, self.preferred)
        if self.scheme is None:
            raise StepFailed("ews-auth-methods", f"{self.path} offers {', '.join(offered) or 'no scheme'}: none the "
                                                 f"client can use")
        self._answer = self._call(get_folder_request(self.settings.email))
        if self._answer.status == 401:
            raise StepFailed("http-401", f"401 Unauthorized with {self.scheme}: EWS rejected the credentials",
                             scheme=self.scheme)
        step.passed(f"offers {', '.join(offered)}; {self.scheme} accepted the credentials", scheme=self.scheme)

    def _call(self, body: bytes) -> Response:
        """One EWS request on the authenticated connection (Basic authenticates each request; NTLM the
        connection, so a 401 means it must be done again)."""
        assert self._conn is not None and self.scheme is not None
        if self.scheme == "Basic":
            return authenticated(self._conn, "POST", self.path, HEADERS, body, self.context.credentials, "Basic")
        response = self._conn.request("POST", self.path, HEADERS, body)
        if response.status == 401:
            response = authenticated(self._conn, "POST", self.path, HEADERS, body, self.context.credentials,
                                     self.scheme)
        return response

    def _get_folder(self, step: Step) -> None:
        message, evidence = parse_answer(self._answer, "GetFolder")
        folder = message.find(f"{{{MESSAGES_NS}}}Folders/{{{TYPES_NS}}}Folder")
        total = folder.findtext(f"{{{TYPES_NS}}}TotalCount") if folder is not None else None
        unread = folder.findtext(f"{{{TYPES_NS}}}UnreadCount") if folder is not None else None
        name = folder.findtext(f"{{{TYPES_NS}}}DisplayName") if folder is not None else None
        step.passed(f"{name or 'Inbox'}: {total or '?'} items, {unread or '?'} unread", display_name=name,
                    total_count=_int(total), unread_count=_int(unread), **evidence)

    def _find_item(self, step: Step) -> None:
        message, evidence = parse_answer(self._call(find_item_request(self.settings.email)), "FindItem")
        root = message.find(f"{{{MESSAGES_NS}}}RootFolder")
        items: List[Tuple[str, str]] = []
        if root is not None:
            for item in root.iterfind(f"{{{TYPES_NS}}}Items/*"):
                item_id = item.find(f"{{{TYPES_NS}}}ItemId")
                items.append((item.findtext(f"{{{TYPES_NS}}}Subject") or "",
                              item_id.get("Id", "") if item_id is not None else ""))
        total = root.get("TotalItemsInView") if root is not None else None
        step.passed(f"{len(items)} of {total or '?'} items" + (f": {', '.join(s for s, _ in items)}" if items else ""),
                    subjects=[s for s, _ in items], total_items_in_view=_int(total), **evidence)


def _int(text: Optional[str]) -> Optional[int]:
    return int(text) if text and text.isdigit() else None
