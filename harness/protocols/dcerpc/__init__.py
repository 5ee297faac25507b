"""Connection-oriented DCE/RPC, server side (C706 chapter 12, MS-RPCE 2.2.2), sans-IO.

- ``pdus``: the PDU constants, the framer (``PduFramer``), parsers and builders.
- ``interface``: the contract with the interfaces behind the server (``RpcInterface``, ``CallContext``,
  ``RpcFault`` and the fault statuses); harness/rpc implements it.
- ``security``: the NTLM security contexts (AUTH3, verifying, signing and sealing).
- ``binding``: bind and alter_context (presentation contexts, fragment size, the ``rpc_bind`` answer ``BindNak``).
- ``association``: ``DceRpcAssociation``, which routes PDUs, reassembles requests and runs the calls (the
  ``rpc_call`` answer ``CallFault``).

This package re-exports the names its users import from ``harness.protocols.dcerpc``.
"""
from harness.protocols.dcerpc.association import CallFault, DceRpcAssociation
from harness.protocols.dcerpc.binding import BindNak
from harness.protocols.dcerpc.interface import NCA_S_PROTO_ERROR, NCA_S_UNK_IF, RPC_S_ACCESS_DENIED
from harness.protocols.dcerpc.pdus import (
                                           ALTER_CONTEXT,
                                           ALTER_CONTEXT_RESP,
                                           AUTH3,
                                           AUTHN_WINNT,
                                           BIND,
                                           BIND_ACK,
                                           BIND_NAK,
                                           COMMON,
                                           FAULT,
                                           NAK_NAMES,
                                           NAK_NOT_SPECIFIED,
                                           NDR_SYNTAX,
                                           PFC_DID_NOT_EXECUTE,
                                           PFC_FIRST_FRAG,
                                           PFC_LAST_FRAG,
                                           REQUEST,
                                           REQUEST_FIELDS,
                                           RESPONSE,
                                           SEC_TRAILER,
                                           FramingError,
                                           PduFramer,
)

__all__ = ["ALTER_CONTEXT", "ALTER_CONTEXT_RESP", "AUTH3", "AUTHN_WINNT", "BIND", "BIND_ACK", "BIND_NAK", "COMMON",
           "FAULT", "NAK_NAMES", "NAK_NOT_SPECIFIED", "NCA_S_PROTO_ERROR", "NCA_S_UNK_IF", "NDR_SYNTAX",
           "PFC_DID_NOT_EXECUTE", "PFC_FIRST_FRAG", "PFC_LAST_FRAG", "REQUEST", "REQUEST_FIELDS", "RESPONSE",
           "RPC_S_ACCESS_DENIED", "SEC_TRAILER", "BindNak", "CallFault", "DceRpcAssociation", "FramingError",
           "PduFramer"]
