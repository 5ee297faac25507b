"""The probe's stable verdict vocabulary: step ids and failure reason ids with the admin-facing remedy.

Scenario files name these in `expect: {analyzer: {fails_at: <step>, reason: <id>}}`; ids never change once
written (add new ones instead). REASONS gives each id its usual step; ALSO_AT lists the few ids that the probe
also reports at other steps (a 401 on /rpc, an RPC fault on any RPC interface). An unexpected HTTP status from
Autodiscover is reported as "http-<status>" (e.g. "http-404"), an id family rather than a REASONS key.
"""

# Reasons a client reaches by waiting out a timeout (a short step timeout suffices to see them; a slow machine only
# makes them come sooner).
TIMEOUT_REASONS = frozenset({"timeout", "rts-timeout", "connection-timeout", "no-response", "dns-timeout"})

STEPS = ("autodiscover", "dns", "port", "certificate", "http-auth", "rpc-proxy", "nspi", "referral", "mapi-http",
         "mailbox-logon", "mailbox", "ews-auth", "ews")

_RENEW = ("Renew the certificate and bind it to IIS (New-ExchangeCertificate / Import-ExchangeCertificate, then "
          "Enable-ExchangeCertificate -Services IIS); check the server clock.")
_REISSUE_NAMES = ("Reissue the certificate with Subject Alternative Names for autodiscover.<domain> and the Outlook "
                  "Anywhere/EWS host name, or publish Autodiscover through an SRV record or the HTTP redirect method.")
_PUBLIC_CA = ("Use a certificate from a public CA that clients trust (or deploy your private root to every client); "
              "send the full chain from the server.")
_AUTODISCOVER_POST = ("Check that the mailbox exists and that the Autodiscover virtual directory and the "
                      "MSExchangeAutodiscoverAppPool are healthy (Get-AutodiscoverVirtualDirectory, IIS logs).")
_VALID_PORTS = ("Check HKLM\\Software\\Microsoft\\Rpc\\RpcProxy\\ValidPorts on the CAS lists the NetBIOS and "
                "FQDN names "
                "of every mailbox server with ports 6001-6002 and 6004 (a stale value after a server rename is the "
                "classic cause); check name resolution and the firewall from the proxy to the mailbox server.")
_AUTH_METHODS = ("Align the /rpc IIS authentication methods with the Outlook Anywhere client method: "
                 "Set-OutlookAnywhere -IISAuthenticationMethods Basic,Ntlm,Negotiate "
                 "-ExternalClientAuthenticationMethod <Basic|Ntlm|Negotiate> (Basic for non-domain clients).")
# Exchange 2013 coexistence with 2007/2010 (the Exchange 2013 Outlook Anywhere documentation): the 2013 CAS proxies a
# legacy-homed mailbox's RPC over HTTP to a legacy CAS, which must have Outlook Anywhere enabled, NTLM in its IIS
# authentication methods, and the 2013 host name as its ExternalHostname.
_LEGACY_RPC = '"<legacy CAS>\\Rpc (Default Web Site)"'
_LEGACY_REQUIREMENTS = ("Exchange 2013 coexistence requires Outlook Anywhere on every Exchange 2007/2010 Client "
                        "Access server, with NTLM in its IISAuthenticationMethods and the Exchange 2013 host name as "
                        "its ExternalHostname.")
_MAILBOX = "Check the mailbox exists and has not moved, its database is mounted, and the user has logon rights."

REASONS = {
    # dns
    "nxdomain": ("dns", "Publish an A (or CNAME) record for this host in the DNS the clients use; split-brain zones "
                        "must publish it externally too (exchangelib needs an A record, AAAA alone is not enough)."),
    "servfail": ("dns", "The DNS server failed to answer (SERVFAIL): check the zone is loaded and its delegation and "
                        "DNSSEC signatures are valid."),
    "dns-refused": ("dns", "The DNS server refused the query (REFUSED): it does not serve this zone and does not "
                           "recurse for this client; publish the zone where clients look, or use a resolver that "
                           "does."),
    "dns-timeout": ("dns", "No DNS server answered in time: check the resolver address and that UDP/TCP 53 is open "
                           "between the client and the DNS server."),
    "no-a-record": ("dns", "The name exists but has no A/AAAA record: add an A record (and optionally AAAA) for it."),
    "aaaa-only": ("dns", "The host has only an AAAA record: add an A record, since IPv4-only clients and exchangelib "
                         "look up A records only."),
    "no-srv-record": ("dns", "Optional: publish _autodiscover._tcp.<domain> SRV pointing at a host whose certificate "
                             "matches that host name, port 443."),
    # port
    "connection-refused": ("port", "The host actively refused the connection (TCP RST): open or forward the port "
                                   "on the firewall/NAT to the Client Access server and check IIS is listening."),
    "connection-timeout": ("port", "The connection attempt timed out (packets silently dropped): a firewall drops "
                                   "this port; allow it inbound to the Client Access server or reverse proxy."),
    "connection-reset": ("port", "The connection was reset after it opened: check the reverse proxy / load balancer "
                                 "in front of the Client Access server and its TLS or idle settings."),
    "connection-closed": ("port", "The server closed the connection without answering: check the reverse proxy / "
                                  "load balancer and the IIS application pool."),
    "no-response": ("port", "The port accepts connections but the service never answers: check that IIS (not "
                            "another program or a stalled proxy) owns the port and that its application pools run."),
    "host-unreachable": ("port", "The host is unreachable (no route): check routing, the published address and "
                                 "the firewall in front of the Client Access server."),
    # certificate
    "certificate-expired": ("certificate", _RENEW),
    "certificate-not-yet-valid": ("certificate", _RENEW),
    "name-mismatch": ("certificate", _REISSUE_NAMES),
    "untrusted-root": ("certificate", _PUBLIC_CA),
    "self-signed": ("certificate", "The server presents a self-signed certificate: replace it with one issued by a "
                                   "trusted CA (Exchange's default self-signed certificate is not meant for clients)."),
    "missing-intermediate": ("certificate", "The server does not send the intermediate CA certificate: install the "
                                            "intermediate on the server so it is sent in the handshake (browsers often "
                                            "hide this by fetching it through AIA; Outlook and most clients do not)."),
    "weak-key": ("certificate", "The certificate key is too small: reissue it with an RSA key of at least 2048 bits."),
    "weak-signature": ("certificate", "The certificate is signed with SHA-1 (or weaker): reissue it signed with "
                                      "SHA-256 or better."),
    "tls-version": ("certificate", "The server offers only TLS versions clients refuse: enable TLS 1.2 (SCHANNEL "
                                   "registry settings; .NET SchUseStrongCrypto) on the Client Access server."),
    "client-certificate-required": ("certificate", "IIS requires client certificates: set SSL client certificates "
                                                   "to Ignore on /Autodiscover, /rpc and /EWS."),
    "tls-handshake-failed": ("certificate", "The TLS handshake failed: check the certificate binding in IIS "
                                            "(Enable-ExchangeCertificate -Services IIS) and the enabled protocols and "
                                            "cipher suites."),
    # autodiscover
    "http-401": ("autodiscover", "HTTP 401 Unauthorized: usually a wrong user name or password (try the UPN or the "
                                 "DOMAIN\\user form); also check that Basic or Windows authentication is enabled on "
                                 "the virtual directory and that the account is not locked or its password expired."),
    "autodiscover-error-500": ("autodiscover", "Autodiscover error 500 (e-mail address not found): check the address "
                                               "is a mailbox's primary or proxy SMTP address in this organisation."),
    "autodiscover-error-501": ("autodiscover", "Autodiscover error 501 (nothing to configure for this address): check "
                                               "the mailbox is enabled and the user may access it."),
    "autodiscover-error-600": ("autodiscover", "Autodiscover error 600 (invalid request): a proxy or the client "
                                               "altered the request; check reverse proxy rules for /Autodiscover."),
    "autodiscover-error-601": ("autodiscover", "Autodiscover error 601 (provider not available): the server has no "
                                               "Outlook provider; check Get-OutlookProvider and the Autodiscover "
                                               "virtual directory."),
    "autodiscover-error-602": ("autodiscover", "Autodiscover error 602 (configuration error for this address): check "
                                               "the mailbox's database and server objects."),
    "autodiscover-error-603": ("autodiscover", "Autodiscover error 603 (internal server error): check the "
                                               "MSExchangeAutodiscoverAppPool and the application event log."),
    "redirect-loop": ("autodiscover", "Autodiscover redirects in a loop: fix TargetAddress / RemoteRoutingAddress "
                                      "and the redirect rules so each redirect leads closer to the mailbox."),
    "too-many-redirects": ("autodiscover", "More than 10 Autodiscover redirects: shorten the redirect chain "
                                           "(TargetAddress / RemoteRoutingAddress, redirect rules)."),
    "insecure-redirect": ("autodiscover", "A redirect points at an http:// URL: clients only follow https "
                                          "redirects; make the redirect target https://<host>/autodiscover/"
                                          "autodiscover.xml."),
    "no-expr": ("autodiscover", "The Autodiscover reply has no EXPR (Outlook Anywhere) provider: enable Outlook "
                                "Anywhere and set its ExternalHostname (Set-OutlookAnywhere)."),
    "malformed-response": ("autodiscover", "The Autodiscover URL did not return Autodiscover XML (often a web site "
                                           "on the root domain): point autodiscover.<domain> at Exchange, or fix the "
                                           "reverse proxy rule for /Autodiscover."),
    "no-autodiscover-endpoint": ("autodiscover", "No Autodiscover method worked: publish autodiscover.<domain> "
                                                 "(A record, certificate name, port 443), or the HTTP redirect "
                                                 "method, or an _autodiscover._tcp SRV record."),
    "no-redirect": ("autodiscover", "The HTTP redirect method got no 301/302: make the http vhost on "
                                    "autodiscover.<domain> answer 302 to https://<host>/autodiscover/autodiscover.xml."),
    "timeout": ("autodiscover", "The server did not answer in time: check the Autodiscover application pool and the "
                                "load on the Client Access server."),
    "time-limit": ("autodiscover", "The probe ran out of its total time limit here: the server is very slow or "
                                   "drops traffic; rerun with a larger --total-timeout to see which step hangs."),
    "cert-principal-mismatch": ("certificate", "Outlook Anywhere's CertPrincipalName (msstd:<name>) does not match "
                                               "the certificate: set-OutlookProvider EXPR -CertPrincipalName "
                                               "msstd:<name on the certificate>, or reissue the certificate."),
    # http-auth on /rpc
    "auth-method-mismatch": ("http-auth", _AUTH_METHODS),
    # rpc-proxy
    "rpc-proxy-503": ("rpc-proxy", "The RPC proxy answered 503 RPC Error: " + _VALID_PORTS),
    "invalid-rpc-port": ("rpc-proxy", "The RPC proxy refused the RPC server port: " + _VALID_PORTS),
    "unknown-rpc-server": ("rpc-proxy", "The RPC proxy does not know the RPC server name (404): check the EXCH "
                                        "Server value from Autodiscover (mailbox GUID@domain) and that the "
                                        "mailbox's database is on a server the proxy can reach."),
    "rpc-channel-broken": ("rpc-proxy", "The RPC over HTTP channel broke: check the RPC over HTTP Proxy feature, the "
                                        "/rpc virtual directory and its app pool, and idle/size limits on any "
                                        "reverse proxy (it must pass RPC_IN_DATA/RPC_OUT_DATA with 1 GB bodies)."),
    "rts-timeout": ("rpc-proxy", "The RPC proxy did not complete the RTS handshake in time: check the RPC over HTTP "
                                 "Proxy feature and that a reverse proxy does not buffer RPC_OUT_DATA responses."),
    "rpc-proxy-http-error": ("rpc-proxy", "The RPC proxy answered an unexpected HTTP status: check the /rpc virtual "
                                          "directory, its app pool and the RPC over HTTP Proxy feature."),
    # coexistence with Exchange 2007/2010 (the mailbox's Autodiscover ServerVersion is a legacy build)
    "legacy-external-hostname": ("dns", "Autodiscover for this Exchange 2007/2010 mailbox names the legacy Client "
                                        "Access server's Outlook Anywhere ExternalHostname as the proxy, and that "
                                        "name is not published: point it at the Exchange 2013 host name "
                                        f"(Set-OutlookAnywhere -Identity {_LEGACY_RPC} -ExternalHostname "
                                        "<2013 host name>). " + _LEGACY_REQUIREMENTS),
    "legacy-oa-disabled": ("rpc-proxy", "Legacy Outlook Anywhere disabled: the Exchange 2013 Client Access server "
                                        "has no Exchange 2007/2010 RPC proxy to pass this mailbox's traffic to. "
                                        "Enable Outlook Anywhere on the legacy Client Access server with NTLM in "
                                        "IISAuthenticationMethods (Enable-OutlookAnywhere -Server <legacy CAS> "
                                        "-ExternalHostname <2013 host name> -ClientAuthenticationMethod Ntlm "
                                        "-IISAuthenticationMethods Basic,Ntlm -SSLOffloading $false; the RPC over "
                                        "HTTP Proxy feature must be installed there). " + _LEGACY_REQUIREMENTS),
    "legacy-iis-without-ntlm": ("rpc-proxy", "The legacy Client Access server's /rpc does not offer NTLM: the client's "
                                             "logon to Exchange 2013 succeeded, but the 2013 Client Access server "
                                             "authenticates to the Exchange 2007/2010 one with NTLM and gets 401. "
                                             f"Set-OutlookAnywhere -Identity {_LEGACY_RPC} -IISAuthenticationMethods "
                                             "Basic,Ntlm. " + _LEGACY_REQUIREMENTS),
    # nspi / referral
    "nspi-bind-failed": ("nspi", "The address book (NSPI) bind over RPC over HTTP failed: check the Microsoft "
                                 "Exchange Address Book service, global catalog reachability and " + _VALID_PORTS),
    "mapi-nspi-bind-failed": ("nspi", "The address book Bind over MAPI over HTTP (/mapi/nspi) failed (the ErrorCode "
                                      "is in the message): check the Microsoft Exchange Address Book service, the "
                                      "MSExchangeMapiAddressBookAppPool and the /mapi virtual directory "
                                      "(Get-MapiVirtualDirectory), that the user's account is enabled, and global "
                                      "catalog reachability from the Client Access server."),
    "name-not-found": ("nspi", "Check Name did not find the user in the address book: check the mailbox is not "
                               "hidden from address lists and the GAL and address list membership is up to date."),
    "rpc-fault": ("nspi", "The RPC call failed with a fault: check the Exchange services on the mailbox server and "
                          "the application event log."),
    "rpc-bind-failed": ("nspi", "The DCE/RPC bind was rejected: check the RPC authentication settings "
                                "(Outlook Anywhere requires NTLM/Negotiate at packet privacy) and " + _VALID_PORTS),
    "nspi-error": ("nspi", "The address book answered Check Name with an error (the ErrorCode is in the message): "
                           "check the Microsoft Exchange Address Book service (over MAPI over HTTP also the "
                           "MSExchangeMapiAddressBookAppPool), global catalog reachability and the application event "
                           "log."),
    "nspi-response-malformed": ("nspi", "The address book's answer could not be read as [MS-OXNSPI] / "
                                        "[MS-OXCMAPIHTTP] define it: something between the client and the Client "
                                        "Access server (a proxy, a filter) altered the body, or the server is not "
                                        "Exchange."),
    "referral-failed": ("referral", "The referral service (RFR) did not return an address book server: check the "
                                    "Microsoft Exchange RPC Client Access and Address Book services."),
    # mailbox-logon
    "ec-wrong-server": ("mailbox-logon", "The mailbox is on another server (ecWrongServer): rerun Autodiscover; if "
                                         "it persists, the mailbox move has not finished or Autodiscover returns a "
                                         "stale server."),
    "ec-login-failure": ("mailbox-logon", "Mailbox logon failed (ecLoginFailure): " + _MAILBOX),
    "ec-unknown-user": ("mailbox-logon", "The store does not know this user (ecUnknownUser): " + _MAILBOX),
    "ec-client-ver-disallowed": ("mailbox-logon", "The server blocks this client version (ecClientVerDisallowed): "
                                                  "check Set-RpcClientAccess -BlockedClientVersions."),
    "ec-server-busy": ("mailbox-logon", "The server is too busy (ecServerBusy): check load and throttling policies "
                                        "on the mailbox server; clients retry after the back-off time."),
    "ec-not-encrypted": ("mailbox-logon", "The server requires RPC encryption (ecNotEncrypted): enable encryption "
                                          "in the client or Set-RpcClientAccess -EncryptionRequired."),
    "mailbox-logon-failed": ("mailbox-logon", "Mailbox logon failed with another error: " + _MAILBOX),
    "emsmdb-connect-failed": ("mailbox-logon", "The mail store endpoint (EMSMDB, 6001) refused the connection: "
                                               + _VALID_PORTS),
    # ews (mockex probe --test ews)
    "ews-auth-methods": ("ews-auth", "EWS (/EWS/Exchange.asmx) offers no authentication method the client can use: "
                                     "enable Windows (NTLM/Negotiate) or Basic authentication on the EWS virtual "
                                     "directory (Set-WebServicesVirtualDirectory -WindowsAuthentication $true, "
                                     "-BasicAuthentication $true)."),
    "no-ews-url": ("ews", "Autodiscover gave no https EWS URL: set the EWS virtual directory's ExternalUrl and "
                          "InternalUrl (Set-WebServicesVirtualDirectory -ExternalUrl https://<host>/EWS/Exchange.asmx)."),
    "ews-server-busy": ("ews", "EWS throttled the request (ErrorServerBusy, with BackOffMilliseconds): check the "
                               "server's load and the throttling policy that applies to the user "
                               "(Get-ThrottlingPolicy: EwsMaxConcurrency, EwsMaxBurst, EwsRechargeRate, "
                               "EwsCutoffBalance); clients must wait the back-off before retrying."),
    "ews-mailbox-store-unavailable": ("ews", "The mailbox database is unavailable (ErrorMailboxStoreUnavailable): "
                                             "check the database is mounted and healthy "
                                             "(Get-MailboxDatabaseCopyStatus), the Microsoft Exchange Information "
                                             "Store service runs, and no failover is in progress."),
    "ews-mailbox-move-in-progress": ("ews", "The mailbox is being moved (ErrorMailboxMoveInProgress): wait for the "
                                            "move to complete (Get-MoveRequest / Get-MoveRequestStatistics), or "
                                            "resume a suspended or failed move."),
    "ews-error": ("ews", "EWS answered with an error response code (named in the message): check the mailbox, the "
                         "EWS virtual directory and the MSExchangeServicesAppPool, and the Application event log on "
                         "the server for that code."),
    "ews-http-error": ("ews", "EWS answered an unexpected HTTP status: check the EWS virtual directory "
                              "(Get-WebServicesVirtualDirectory), the MSExchangeServicesAppPool and any reverse proxy "
                              "in front of /EWS."),
    "ews-malformed-response": ("ews", "The EWS URL did not answer EWS SOAP (often a web page of a reverse proxy or "
                                      "another site): check the URL Autodiscover gives and what serves /EWS."),
    # mapi-http (/mapi/emsmdb, when Autodiscover offers MAPI over HTTP or --transport mapi-http asks for it)
    "mapi-http-disabled": ("mapi-http", "MAPI over HTTP is disabled (X-ResponseCode 16, Endpoint Disabled): "
                                        "Set-OrganizationConfig -MapiHttpEnabled $true and recycle the "
                                        "MSExchangeMapiFrontEndAppPool, or let clients use Outlook Anywhere (they do "
                                        "when Autodiscover gives no mapiHttp block)."),
    "mapi-http-error": ("mapi-http", "The MAPI over HTTP endpoint answered a transport error (an HTTP status or a "
                                     "non-zero X-ResponseCode): check the /mapi virtual directory "
                                     "(Get-MapiVirtualDirectory, its IISAuthenticationMethods), the "
                                     "MSExchangeMapiFrontEndAppPool, MSExchangeMapiMailboxAppPool and (for "
                                     "/mapi/nspi) MSExchangeMapiAddressBookAppPool, and that a reverse proxy passes "
                                     "/mapi with its cookies."),
    # mailbox: the Inbox and a message, by ROPs after the logon
    "inbox-open-failed": ("mailbox", "RopOpenFolder on the Inbox failed: " + _MAILBOX + " A damaged folder is "
                                     "repaired with New-MailboxRepairRequest -CorruptionType FolderView."),
    "inbox-list-failed": ("mailbox", "Listing the Inbox (RopGetContentsTable, RopSetColumns, RopQueryRows) failed: "
                                     "check the mailbox database's health and the store's event log; "
                                     "New-MailboxRepairRequest repairs damaged views."),
    "message-read-failed": ("mailbox", "Reading a message of the Inbox (RopOpenMessage, RopGetPropertiesSpecific) "
                                       "failed: check the mailbox database's health and the store's event log."),
    "rop-response-malformed": ("mailbox", "The server's ROP response could not be read as [MS-OXCROPS] defines it: "
                                          "something between the client and the mailbox server (a proxy, a "
                                          "filter) altered the RPC or MAPI/HTTP body, or the server is not "
                                          "Exchange."),
}

_AFTER_CONNECT = ("autodiscover", "http-auth", "rpc-proxy", "nspi", "referral", "mapi-http", "mailbox-logon",
                  "mailbox", "ews-auth", "ews")
ALSO_AT = {
    "http-401": ("http-auth", "rpc-proxy", "mapi-http", "nspi", "ews-auth"),
    "mapi-http-disabled": ("nspi",),
    "mapi-http-error": ("nspi", "mailbox-logon", "mailbox"),
    "rop-response-malformed": ("mailbox-logon",),
    "ec-server-busy": ("mailbox",),
    "rpc-fault": ("referral", "mailbox-logon", "mailbox"),
    "rpc-bind-failed": ("referral", "mailbox-logon"),
    "timeout": _AFTER_CONNECT[1:],
    "connection-reset": _AFTER_CONNECT,
    "connection-closed": _AFTER_CONNECT,
    "malformed-response": ("http-auth", "rpc-proxy", "mapi-http"),
    "time-limit": tuple(step for step in STEPS if step != "autodiscover"),
}

_UNEXPECTED_HTTP_STATUS = "Autodiscover answered an unexpected HTTP status: " + _AUTODISCOVER_POST

assert all(step in STEPS for step, _ in REASONS.values())
assert all(reason in REASONS and set(steps) <= set(STEPS) for reason, steps in ALSO_AT.items())


def is_http_status_reason(reason):
    """True for the "http-<status>" family (any status but 401, which has its own entry)."""
    return reason.startswith("http-") and reason[5:].isdigit() and reason not in REASONS


def http_status_reason(status):
    """The reason id for an unexpected HTTP status from an Autodiscover URL."""
    return "http-%d" % status


def remedy_for(reason):
    """The admin-facing remedy for a reason id."""
    if is_http_status_reason(reason):
        return _UNEXPECTED_HTTP_STATUS
    return REASONS[reason][1]


def steps_of(reason):
    """Every step at which the probe may report this reason id, its usual step first."""
    if is_http_status_reason(reason):
        return ("autodiscover",)
    return (REASONS[reason][0],) + ALSO_AT.get(reason, ())
