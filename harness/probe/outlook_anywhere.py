"""The Outlook Anywhere phase, as ExRCA runs it: DNS, port and certificate of the RPC proxy host, the HTTP auth
methods on /rpc/rpcproxy.dll against the AuthPackage, the RPC proxy ping (RTS establishment), NSPI bind + Check
Name (6004), RFR referral (6002), EMSMDB connect + mailbox logon (6001), then on the same session the Inbox and a
message (harness.probe.mailbox, EcDoRpcExt2 carrying the probe's own ROP buffers). After the first failure the rest
is skipped."""
from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import replace
from typing import Callable, List, Optional

from impacket.dcerpc.v5 import nspi, oxabref
from impacket.dcerpc.v5.rpcrt import RPC_C_AUTHN_LEVEL_PKT_PRIVACY, DCERPC_v5, DCERPCException
from impacket.uuid import uuidtup_to_bin

from harness.probe import mailbox, pox, rops, tls
from harness.probe.hosts import Connector, ProbeContext, check_host
from harness.probe.http import authenticated, offered_schemes
from harness.probe.pox import OutlookSettings
from harness.probe.report import Step, StepFailed, Timed, TimeLimit, run_in_order, skip_steps
from harness.probe.rpchttp import CHANNEL_HEADERS, PROXY_PATH, RpcOverHttp, classify_refusal
from harness.rpc import emsmdb

NSPI_PORT, RFR_PORT, EMSMDB_PORT = 6004, 6002, 6001
EMSMDB_UUID = uuidtup_to_bin((emsmdb.Emsmdb.uuid.upper(), "%d.%d" % emsmdb.Emsmdb.version))
EC_DO_CONNECT_EX, EC_DO_RPC_EXT2, EC_DO_DISCONNECT = 10, 11, 1
RPC_S_SERVER_TOO_BUSY = emsmdb.RPC_S_SERVER_TOO_BUSY
PR_DISPLAY_NAME_W, PR_EMAIL_ADDRESS_W, PR_SMTP_ADDRESS_W = 0x3001001F, 0x3003001F, 0x39FE001F
STORE_ERRORS = {
    emsmdb.EC_WRONG_SERVER: "ec-wrong-server",
    emsmdb.EC_LOGIN_FAILURE: "ec-login-failure",
    emsmdb.EC_LOGIN_PERM: "ec-login-failure",
    emsmdb.EC_UNKNOWN_USER: "ec-unknown-user",
    emsmdb.EC_CLIENT_VER_DISALLOWED: "ec-client-ver-disallowed",
    emsmdb.EC_NOT_ENCRYPTED: "ec-not-encrypted",
    RPC_S_SERVER_TOO_BUSY: "ec-server-busy",
    emsmdb.EC_SERVER_BUSY: "ec-server-busy",   # RopBackoff after RopLogon (clients newer than 12.0.4228)
}
LATER_STEPS = tuple((f"outlook-anywhere.{step}", step, title) for step, title in (
    ("http-auth", "HTTP authentication"), ("rpc-proxy", "RPC proxy"), ("nspi", "Address book (NSPI)"),
    ("referral", "Referral (RFR)"), ("mailbox-logon", "Mailbox logon"), ("mailbox", "Inbox")))


def manual_settings(email: str, proxy_host: str, auth_package: str, rpc_server: str = "") -> OutlookSettings:
    """Settings given on the command line (--skip-autodiscover): the rest is learnt on the way."""
    return OutlookSettings(email=email, display_name="", legacy_dn="", rpc_server=rpc_server, server_dn="", mdb_dn="",
                           proxy_host=proxy_host, ssl=True, auth_package=auth_package, cert_principal_name="")


@contextmanager
def rpc_failures(default_reason: str):
    """impacket's exceptions as verdicts; StepFailed (from the transport) passes through."""
    try:
        yield
    except (StepFailed, TimeLimit):
        raise
    except DCERPCException as exc:
        code = exc.get_error_code()
        if code == RPC_S_SERVER_TOO_BUSY:
            raise StepFailed("ec-server-busy", f"the server is too busy (0x{code:x})", status=f"0x{code:x}")
        if code:
            raise StepFailed(default_reason, f"{exc}", status=f"0x{code:x}")
        raise StepFailed(default_reason, str(exc))
    except OSError as exc:
        raise StepFailed("connection-reset", f"the RPC connection failed: {exc}")
    except Exception as exc:  # noqa: BLE001 - impacket's NDR decoding of a server's answer fails in many ways
        raise StepFailed(default_reason, f"the server's answer could not be decoded: {exc!r}")


class OutlookAnywhere:
    def __init__(self, context: ProbeContext, settings: OutlookSettings, rng: random.Random):
        self.context = context
        self.settings = settings
        self.rng = rng
        self.scheme = pox.auth_scheme_for(settings.auth_package)
        host = settings.proxy_host
        self.phase = Step("outlook-anywhere", f"Outlook Anywhere on {host}", None, host)
        self._connector: Optional[Connector] = None
        self._nspi_transport: Optional[RpcOverHttp] = None
        self._emsmdb: Optional[RpcOverHttp] = None      # the mail store session, open from the logon to the Inbox
        self._dce: Optional[DCERPC_v5] = None
        self._cxh = b""
        self._logon = None

    def run(self) -> Step:
        with Timed(self.phase):
            try:
                self._run()
            finally:
                for transport in (self._nspi_transport, self._emsmdb):
                    if transport is not None:
                        transport.disconnect()
                self._name_coexistence_failure()
            failing = next((c for c in self.phase.children if c.status == "fail"), None)
            if failing is not None:
                self.phase.fail(failing.reason, failing.message)
                self.phase.cause = failing.id
            else:
                self.phase.passed(f"mailbox {self.settings.email} reachable through {self.settings.proxy_host}")
        return self.phase

    def _run(self) -> None:
        host = self.settings.proxy_host
        self._connector = check_host(self.context, self.phase, host, self.context.https_port, secure=True)
        if self._connector is None:
            skip_steps(self.phase, host, LATER_STEPS)
            return
        if not self._principal_name_matches():
            skip_steps(self.phase, host, LATER_STEPS)
            return
        checks: List[Callable[[Step], None]] = [self._http_auth, self._rpc_proxy, self._nspi, self._referral,
                                                 self._mailbox_logon, self._mailbox]
        run_in_order(self.phase, host, LATER_STEPS, checks)

    def _name_coexistence_failure(self) -> None:
        """For an Exchange 2007/2010 mailbox, the failures each documented coexistence requirement produces are
        named after that requirement: what Outlook sees is generic (an unknown name, 503, 401 after a good logon),
        but the legacy ServerVersion from Autodiscover says the 2013 CAS proxies to a legacy CAS."""
        if not self.settings.legacy_homed:
            return
        failing = next((c for c in self.phase.children if c.status == "fail"), None)
        if failing is None:
            return
        release = {14: "Exchange 2010", 8: "Exchange 2007"}.get(self.settings.home_major or 0, "Exchange 2007/2010")
        renamed = {("dns", "nxdomain"): "legacy-external-hostname", ("dns", "no-a-record"): "legacy-external-hostname",
                   ("rpc-proxy", "rpc-proxy-503"): "legacy-oa-disabled",
                   ("rpc-proxy", "http-401"): "legacy-iis-without-ntlm"}.get((failing.step, failing.reason))
        if renamed is None:
            return
        what = {"legacy-external-hostname": f"the {release} Outlook Anywhere ExternalHostname "
                                            f"{self.settings.proxy_host} is not published",
                "legacy-oa-disabled": f"Outlook Anywhere is not enabled on the {release} Client Access server",
                "legacy-iis-without-ntlm": f"the {release} Client Access server's /rpc does not accept NTLM"}[renamed]
        failing.fail(renamed, f"{failing.message} ({what})", generic_reason=failing.reason,
                     home_server_version=self.settings.server_version)

    def _principal_name_matches(self) -> bool:
        """EXPR CertPrincipalName (msstd:<name>) must name the proxy's certificate, or Outlook refuses it."""
        wanted = pox.principal_host(self.settings.cert_principal_name)
        if wanted is None or tls.name_matches(self._connector.certificate, wanted):
            return True
        cert_step = next(c for c in self.phase.children if c.step == "certificate")
        cert_step.fail("cert-principal-mismatch", f"CertPrincipalName {self.settings.cert_principal_name} does not "
                                                  f"match the certificate", cert_principal_name=wanted)
        return False

    # ---- the checks ---------------------------------------------------------------------------------------
    def _http_auth(self, step: Step) -> None:
        target = f"{PROXY_PATH}?{self.settings.rpc_server or 'localhost'}:{RFR_PORT}"
        conn = self._connector.open()
        try:
            anonymous = conn.request("RPC_IN_DATA", target, CHANNEL_HEADERS)
            offered = offered_schemes(anonymous)
            step.evidence.update(offered=offered, auth_package=self.settings.auth_package, expected=self.scheme)
            if anonymous.status != 401:
                raise classify_refusal(anonymous, "RPC_IN_DATA")
            if self.scheme not in offered:
                raise StepFailed("auth-method-mismatch", f"AuthPackage {self.settings.auth_package} needs "
                                                         f"{self.scheme}, but {PROXY_PATH} offers "
                                                         f"{', '.join(offered) or 'nothing'}")
            response = authenticated(conn, "GET", PROXY_PATH, [], b"", self.context.credentials, self.scheme)
            if response.status == 401:
                raise StepFailed("http-401", f"401 Unauthorized with {self.scheme}: the proxy rejected the "
                                             f"credentials")
            if not self.settings.rpc_server:
                name = (conn.ntlm_target_info or {}).get("nb_computer")
                if not name:
                    raise StepFailed("unknown-rpc-server", "no RPC server name: give --rpc-server (Basic gives "
                                                           "no NTLM challenge to learn it from)")
                self.settings = replace(self.settings, rpc_server=name)
        finally:
            conn.close()
        step.passed(f"offers {', '.join(offered)}; {self.scheme} (AuthPackage {self.settings.auth_package}) "
                    f"accepted the credentials")

    def _transport(self, port: int) -> RpcOverHttp:
        return RpcOverHttp(self._connector, self.settings.rpc_server, port, self.context.credentials, self.scheme,
                           random.Random(self.rng.getrandbits(64)))

    def _rpc(self, transport: RpcOverHttp, interface: bytes) -> DCERPC_v5:
        dce = DCERPC_v5(transport)
        creds = self.context.credentials
        dce.set_credentials(creds.user, creds.password, creds.domain)
        dce.set_auth_level(RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
        with rpc_failures("rpc-bind-failed"):
            dce.bind(interface)
        return dce

    def _rpc_proxy(self, step: Step) -> None:
        transport = self._transport(NSPI_PORT)
        self._nspi_transport = transport
        transport.connect()
        step.passed(f"RPC_IN_DATA/RPC_OUT_DATA to {self.settings.rpc_server}:{NSPI_PORT} established "
                    f"({', '.join(transport.events)})", rpc_server=self.settings.rpc_server, port=NSPI_PORT)

    def _nspi(self, step: Step) -> None:
        dce = self._rpc(self._nspi_transport, nspi.MSRPC_UUID_NSPI)
        stat = nspi.STAT()
        stat["CodePage"] = nspi.CP_TELETEX
        with rpc_failures("nspi-bind-failed"):
            handle = nspi.hNspiBind(dce, stat)["contextHandle"]
        email = self.settings.email
        with rpc_failures("rpc-fault"):
            answer = nspi.hNspiResolveNamesW(dce, handle, pPropTags=[PR_DISPLAY_NAME_W, PR_EMAIL_ADDRESS_W,
                                                                     PR_SMTP_ADDRESS_W], paStr=[email])
            mids = [int(m["Data"]) if hasattr(m, "fields") else int(m) for m in answer["ppMIds"]["aulPropTag"]]
            rows = nspi.simplifyPropertyRowSet(answer["ppRows"]) if mids and mids[0] > nspi.MID_AMBIGUOUS else []
            nspi.hNspiUnbind(dce, handle)
        if not mids or mids[0] == nspi.MID_UNRESOLVED:
            raise StepFailed("name-not-found", f"Check Name found no entry for {email}", mids=mids)
        if mids[0] == nspi.MID_AMBIGUOUS:
            raise StepFailed("name-not-found", f"Check Name found several entries for {email}", mids=mids)
        row = rows[0] if rows else {}
        legacy_dn = str(row.get(PR_EMAIL_ADDRESS_W, "")).rstrip("\x00")
        if not self.settings.legacy_dn and legacy_dn:
            self.settings = replace(self.settings, legacy_dn=legacy_dn)
        step.passed(f"bound to the address book; Check Name resolved {email} → "
                    f"{str(row.get(PR_DISPLAY_NAME_W, '')).rstrip(chr(0)) or 'an entry'}",
                    mid=mids[0], legacy_dn=legacy_dn)

    def _referral(self, step: Step) -> None:
        transport = self._transport(RFR_PORT)
        try:
            transport.connect()
            dce = self._rpc(transport, oxabref.MSRPC_UUID_OXABREF)
            with rpc_failures("referral-failed"):
                server = oxabref.hRfrGetNewDSA(dce, self.settings.legacy_dn)["ppszServer"]
                server = str(server).rstrip("\x00") if server else ""
                fqdn = ""
                if self.settings.server_dn:
                    fqdn = oxabref.hRfrGetFQDNFromServerDN(dce, self.settings.server_dn)["ppszServerFQDN"]
                    fqdn = str(fqdn).rstrip("\x00")
        finally:
            transport.disconnect()
        if not server:
            raise StepFailed("referral-failed", "RfrGetNewDSA returned no address book server")
        step.passed(f"address book server {server}" + (f"; mailbox server {fqdn}" if fqdn else ""),
                    address_book_server=server, mailbox_server_fqdn=fqdn)

    def _mailbox_logon(self, step: Step) -> None:
        user_dn = self.settings.legacy_dn
        if not user_dn:
            raise StepFailed("ec-unknown-user", "no legacy DN for the mailbox (neither Autodiscover nor NSPI gave one)")
        transport = self._emsmdb = self._transport(EMSMDB_PORT)
        transport.connect()
        dce = self._dce = self._rpc(transport, EMSMDB_UUID)
        with rpc_failures("emsmdb-connect-failed"):
            dce.call(EC_DO_CONNECT_EX, emsmdb.build_connect_request(user_dn))
            connected = emsmdb.parse_connect_response(dce.recv())
        if connected.status:
            raise _store_failure(connected.status, "EcDoConnectEx", "emsmdb-connect-failed")
        # RopLogon with the probe's own ROP client, as over MAPI/HTTP: the same parser reads both transports' answers
        self._cxh = connected.cxh
        logon = self._logon = mailbox.logon(lambda payload: self._execute(payload, "mailbox-logon-failed"), user_dn)
        step.passed(f"connected as {connected.display_name or user_dn} (server "
                    f"{emsmdb.version_text(connected.server_version)}); logon succeeded, mailbox "
                    f"{logon.mailbox_guid}", mailbox_guid=str(logon.mailbox_guid),
                    server_version=emsmdb.version_text(connected.server_version))

    def _execute(self, payload: bytes, reason: str = "rpc-fault") -> bytes:
        """One ROP buffer through EcDoRpcExt2 on the logon's session (the stub built by the probe)."""
        with rpc_failures(reason):
            self._dce.call(EC_DO_RPC_EXT2, rops.ec_do_rpc_ext2_request(self._cxh, rops.wrap(payload)))
            stub = self._dce.recv()
        code, self._cxh, rgb_out = rops.ec_do_rpc_ext2_response(stub)
        if code:
            raise rops.CallFailed("EcDoRpcExt2", code)
        return rops.unwrap(rgb_out)[0]

    def _mailbox(self, step: Step) -> None:
        try:
            message, evidence = mailbox.read_inbox(self._execute, self._logon.handle, self._logon.folders["Inbox"])
            with rpc_failures("rpc-fault"):
                self._dce.call(EC_DO_DISCONNECT, emsmdb.build_disconnect_request(self._cxh))
                self._dce.recv()
        finally:
            self._emsmdb.disconnect()
            self._emsmdb = None
        step.passed(message, transport="rpc-http", **evidence)


def _store_failure(code: int, operation: str, default_reason: str) -> StepFailed:
    reason = STORE_ERRORS.get(code, default_reason)
    return StepFailed(reason, f"{operation} failed with 0x{code:08x} ({reason})", status=f"0x{code:08x}")
