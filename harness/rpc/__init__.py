"""The RPC interfaces behind the proxy: NSPI, RFR and EMSMDB over impacket's NDR classes."""
from __future__ import annotations

from typing import List, Optional

from harness.mailbox.store import MailboxStore
from harness.org import Org
from harness.protocols.dcerpc.interface import RpcInterface
from harness.rpc.emsmdb import Emsmdb
from harness.rpc.emsmdb.asyncwait import AsyncEmsmdb
from harness.rpc.nspi import Nspi
from harness.rpc.rfr import Rfr


def interfaces_for(org: Org, store: Optional[MailboxStore] = None) -> List[RpcInterface]:
    """NSPI, RFR, EMSMDB (its ROPs over ``store``) and AsyncEMSMDB (waiting on that EMSMDB's sessions) instances
    over ``org``: the registry the DCE/RPC server uses."""
    emsmdb = Emsmdb(org, store=store)
    return [Nspi(org), Rfr(org), emsmdb, AsyncEmsmdb(emsmdb)]
