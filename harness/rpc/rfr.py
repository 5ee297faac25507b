"""RFR (MS-OXABREF, address book referral, port 6002): which server a client should use for NSPI, and the
FQDN behind a mailbox server DN. Sans-IO over the org; NDR via impacket's oxabref classes.

impacket's RfrGetNewDSAResponse omits the trailing return value (impacket checks the last four stub bytes
itself), so the response here is the same layout plus ErrorCode, as the MS-OXABREF IDL has it.
"""
from __future__ import annotations

from typing import Optional

from impacket.dcerpc.v5 import oxabref
from impacket.dcerpc.v5.dtypes import NULL, ULONG
from impacket.dcerpc.v5.ndr import NDRCALL

from harness.org import Org
from harness.rpc.base import CallContext, RpcInterface, decoding, is_null, marshal, ndr_text

SUCCESS = 0
MAPI_E_NOT_FOUND = 0x8004010F
MDB_SUFFIX = "/cn=microsoft private mdb"


class RfrGetNewDSAResponse(NDRCALL):
    structure = (("ppszUnused", oxabref.PPUCHAR_ARRAY), ("ppszServer", oxabref.PPUCHAR_ARRAY), ("ErrorCode", ULONG))


class Rfr(RpcInterface):
    name = "rfr"
    uuid = "1544f5e0-613c-11d1-93df-00c04fd7bd09"
    version = (1, 0)
    opnums = {0: "RfrGetNewDSA", 1: "RfrGetFQDNFromServerDN"}

    def __init__(self, org: Org):
        self.org = org

    def fqdn_for(self, server_dn: str) -> Optional[str]:
        """The host behind a server DN (or a database DN below one): back-end server DNs give the server's FQDN,
        Exchange 2013 per-mailbox server DNs give the mailbox's '<guid>@<domain>' RPC server name."""
        dn = server_dn.lower()
        if dn.endswith(MDB_SUFFIX):
            dn = dn[:-len(MDB_SUFFIX)]
        for server in self.org.servers:
            if self.org.backend_server_dn(server).lower() == dn:
                return server.fqdn
        for mailbox in self.org.mailboxes:
            if self.org.server_dn(mailbox).lower() == dn:
                return self.org.personal_server(mailbox)
        return None

    def RfrGetNewDSA(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("RfrGetNewDSA"):
            request = oxabref.RfrGetNewDSA(stub)
            user_dn = ndr_text(request["pUserDN"])
            wants_server = not is_null(request.fields["ppszServer"])
        response = RfrGetNewDSAResponse()
        response["ppszUnused"] = NULL
        server = self.org.cas.fqdn
        response["ppszServer"] = server + "\x00" if wants_server else NULL
        ctx.record("rfr_new_dsa", user_dn=user_dn, server=server if wants_server else None)
        response["ErrorCode"] = SUCCESS
        return marshal(response)

    def RfrGetFQDNFromServerDN(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("RfrGetFQDNFromServerDN"):
            request = oxabref.RfrGetFQDNFromServerDN(stub)
            server_dn = ndr_text(request["szMailboxServerDN"])
        fqdn = self.fqdn_for(server_dn)
        response = oxabref.RfrGetFQDNFromServerDNResponse()
        response["ppszServerFQDN"] = fqdn + "\x00" if fqdn else NULL
        response["ErrorCode"] = SUCCESS if fqdn else MAPI_E_NOT_FOUND
        ctx.record("rfr_fqdn", server_dn=server_dn, fqdn=fqdn)
        return marshal(response)
