"""NSPI (MS-OXNSPI, address book, port 6004) over the org's address book, sans-IO: request stub in, response stub out.

One module per concern:
* ``errors``: the NSPI return values, NspiError, and how a call's outcome becomes its response.
* ``idl``: request/response layouts impacket lacks or lays out differently from the IDL, and small NDR helpers.
* ``stat``: the STAT, a client's position in a table, and how calls move it.
* ``values``: property values and rows in the type and code page the client asks for, as cells.
* ``wire``: hand-packed NDR for the calls clients repeat (impacket's bytes, without its cost).
* ``restrictions``: NspiGetMatches filters, parsed and compiled into predicates over address-book objects.
* ``server``: the ``Nspi`` RpcInterface and its handlers.
"""
from harness.rpc.nspi.errors import ERRORS_RETURNED, LOGON_FAILED, NOT_FOUND, TABLE_TOO_BIG, UNBIND_SUCCESS
from harness.rpc.nspi.idl import (
                                  NspiGetMatches,
                                  NspiGetMatchesResponse,
                                  NspiGetPropsIdl,
                                  NspiGetSpecialTableIdl,
                                  NspiResortRestriction,
                                  NspiResortRestrictionResponse,
                                  NspiSeekEntriesIdl,
)
from harness.rpc.nspi.idl import tag_array as _tag_array  # the name tests/test_rpc_nspi.py uses
from harness.rpc.nspi.restrictions import FL_SUBSTRING, RELOP_EQ, restriction_matcher, restriction_tree
from harness.rpc.nspi.server import Nspi
from harness.rpc.nspi.stat import Stat
from harness.rpc.nspi.values import client_tag, convert, encode_value, error_value

# What other modules and tests import from ``harness.rpc.nspi``, plus the module's public API before the split.
__all__ = ["Nspi", "NspiGetMatches", "NspiGetMatchesResponse", "NspiResortRestriction",
           "NspiResortRestrictionResponse", "NspiSeekEntriesIdl", "NspiGetPropsIdl", "NspiGetSpecialTableIdl",
           "Stat", "encode_value", "error_value", "convert", "client_tag", "restriction_tree", "restriction_matcher",
           "ERRORS_RETURNED", "LOGON_FAILED", "NOT_FOUND", "TABLE_TOO_BIG", "UNBIND_SUCCESS",
           "FL_SUBSTRING", "RELOP_EQ", "_tag_array"]
