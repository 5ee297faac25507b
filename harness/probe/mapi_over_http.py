"""The MAPI over HTTP phase, as Test-OutlookConnectivity's MAPI/HTTP probe runs it, when Autodiscover offers the
mapiHttp block (or --transport mapi-http asks for it): DNS, port and certificate of the MailStore URL's host,
Connect to /mapi/emsmdb (authentication, X-ResponseCode), then, as Outlook right after its Connect, the address book
at the AddressBook URL (/mapi/nspi: Bind, Check Name, Unbind; harness.probe.nspihttp), the mailbox logon (Connect's
ErrorCode, then Execute carrying RopLogon), the Inbox and a message (harness.probe.mailbox, the same ROP buffers as
over RPC/HTTP), then Disconnect. After the first failure the rest is skipped."""
from __future__ import annotations

import random
from typing import Callable, List, Optional
from urllib.parse import urlsplit

from harness.probe import mailbox, nspihttp
from harness.probe.hosts import Connector, ProbeContext, check_host
from harness.probe.mapihttp import Connected, MapiHttpSession
from harness.probe.pox import OutlookSettings
from harness.probe.report import Step, StepFailed, Timed, run_in_order, skip_steps

LATER_STEPS = (("mapi-http.connect", "mapi-http", "MAPI/HTTP Connect"),
               ("mapi-http.address-book", "nspi", "Address book (NSPI)"),
               ("mapi-http.mailbox-logon", "mailbox-logon", "Mailbox logon"), ("mapi-http.mailbox", "mailbox", "Inbox"))


def mailstore_url(settings: OutlookSettings) -> str:
    """The MailStore URL Autodiscover gave, else the one Exchange 2013 SP1 would give: the Outlook Anywhere host,
    /mapi/emsmdb/, the EXCH Server (mailbox GUID@domain) as MailboxId."""
    if settings.mapi_mailstore_url:
        return settings.mapi_mailstore_url
    return f"https://{settings.proxy_host}/mapi/emsmdb/?MailboxId={settings.rpc_server}"


class MapiOverHttp:
    def __init__(self, context: ProbeContext, settings: OutlookSettings, rng: random.Random,
                 preferred_scheme: Optional[str] = None):
        self.context, self.settings, self.rng, self.preferred_scheme = context, settings, rng, preferred_scheme
        self.url = mailstore_url(settings)
        parts = urlsplit(self.url)
        self.host = parts.hostname or settings.proxy_host
        self.port = parts.port or context.https_port
        self.target = (parts.path or "/mapi/emsmdb/") + (f"?{parts.query}" if parts.query else "")
        self.phase = Step("mapi-http", f"MAPI over HTTP on {self.host}", None, self.host)
        self.session: Optional[MapiHttpSession] = None
        self.connector: Optional[Connector] = None
        self.address_book: Optional[MapiHttpSession] = None
        self._connected: Optional[Connected] = None
        self._logon: Optional[mailbox.Logon] = None

    def run(self) -> Step:
        with Timed(self.phase):
            try:
                self._run()
            finally:
                for session, goodbye in ((self.address_book, "Unbind"), (self.session, "Disconnect")):
                    if session is not None:
                        try:
                            session.disconnect(goodbye)
                        except StepFailed:
                            pass      # the verdict is already made; a failed goodbye changes nothing
            failing = next((c for c in self.phase.children if c.status == "fail"), None)
            if failing is not None and failing.reason:
                self.phase.fail(failing.reason, failing.message)
                self.phase.cause = failing.id
            else:
                self.phase.passed(f"mailbox {self.settings.email} reachable through {self.url}")
        return self.phase

    def _run(self) -> None:
        connector = self.connector = check_host(self.context, self.phase, self.host, self.port, secure=True)
        if connector is None:
            skip_steps(self.phase, self.host, LATER_STEPS)
            return
        self.session = MapiHttpSession(connector, self.target, self.context.credentials, self.preferred_scheme,
                                       random.Random(self.rng.getrandbits(64)))
        checks: List[Callable[[Step], None]] = [self._connect, self._address_book, self._mailbox_logon,
                                                 self._mailbox]
        run_in_order(self.phase, self.host, LATER_STEPS, checks)

    # ---- the checks ---------------------------------------------------------------------------------------
    def _connect(self, step: Step) -> None:
        if not self.settings.legacy_dn:
            raise StepFailed("ec-unknown-user", "no legacy DN for the mailbox (Autodiscover gave none)")
        session = self.session
        assert session is not None
        step.evidence.update(url=self.url, offered_by_autodiscover=bool(self.settings.mapi_mailstore_url))
        try:
            self._connected = session.connect(self.settings.legacy_dn)
        finally:
            step.evidence.update(offered=session.offered, scheme=session.scheme,
                                 server_application=session.server_application)
        step.passed(f"Connect to {self.target.split('?', 1)[0]} answered X-ResponseCode 0 "
                    f"({session.server_application or 'no X-ServerApplication'}; "
                    f"{session.scheme or 'anonymous'})")

    def _address_book(self, step: Step) -> None:
        """Bind to /mapi/nspi, Check Name (ResolveNames) of the user's own address, Unbind; on its own session (the
        address book's cookies are its own), over a connection to the AddressBook URL's host."""
        url = nspihttp.address_book_url(self.url, self.settings.mapi_addressbook_url)
        parts = urlsplit(url)
        host, port = parts.hostname or self.host, parts.port or self.context.https_port
        step.evidence.update(url=url, offered_by_autodiscover=bool(self.settings.mapi_addressbook_url))
        connector = self.connector
        if (host.lower(), port) != (self.host.lower(), self.port):
            connector = check_host(self.context, step, host, port, secure=True)
            if connector is None:
                return
        assert connector is not None
        target = (parts.path or "/mapi/nspi/") + (f"?{parts.query}" if parts.query else "")
        book = self.address_book = MapiHttpSession(connector, target, self.context.credentials,
                                                   self.preferred_scheme, random.Random(self.rng.getrandbits(64)))
        found = nspihttp.check_name(book, self.settings.email)
        step.passed(f"bound to the address book; Check Name resolved {self.settings.email} → "
                    f"{found.display_name or 'an entry'}", display_name=found.display_name,
                    legacy_dn=found.legacy_dn, smtp_address=found.smtp_address, mid=found.mid,
                    server_guid=found.server_guid, scheme=book.scheme)

    def _mailbox_logon(self, step: Step) -> None:
        connected, session = self._connected, self.session
        assert connected is not None and session is not None
        if connected.error_code:
            raise mailbox.store_failure(connected.error_code, "Connect", "mailbox-logon-failed")
        self._logon = mailbox.logon(session.execute, self.settings.legacy_dn)
        step.passed(f"connected as {connected.display_name or self.settings.legacy_dn}; logon succeeded, mailbox "
                    f"{self._logon.mailbox_guid}", mailbox_guid=self._logon.mailbox_guid,
                    server_application=connected.server_application)

    def _mailbox(self, step: Step) -> None:
        session, logged_on = self.session, self._logon
        assert session is not None and logged_on is not None
        message, evidence = mailbox.read_inbox(session.execute, logged_on.handle, logged_on.folders["Inbox"])
        step.passed(message, transport="mapi-http", **evidence)
