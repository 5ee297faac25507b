"""The STAT: a client's position in an address-book table, as a plain-Python view of the wire structure, and how
calls read and move that position."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

from impacket.dcerpc.v5 import nspi as ndr

from harness.rpc.nspi.errors import NOT_FOUND, NspiError


@dataclass
class Stat:
    SortType: int = 0
    ContainerID: int = 0
    CurrentRec: int = 0
    Delta: int = 0
    NumPos: int = 0
    TotalRecs: int = 0
    CodePage: int = 0
    TemplateLocale: int = 0
    SortLocale: int = 0

    @classmethod
    def read(cls, stat: ndr.STAT) -> "Stat":
        return cls(**{f.name: stat[f.name] for f in fields(cls)})

    def write(self, stat: ndr.STAT) -> None:
        for f in fields(self):
            stat[f.name] = getattr(self, f.name)

    def start_row(self, members: Sequence[int]) -> int:
        """The row this STAT points at in ``members`` before Delta is applied (MS-OXNSPI 3.1.4.4.1)."""
        if self.CurrentRec == ndr.MID_BEGINNING_OF_TABLE:
            return 0
        if self.CurrentRec == ndr.MID_END_OF_TABLE:
            return len(members)
        if self.CurrentRec == ndr.MID_CURRENT:   # fractional position NumPos/TotalRecs
            return min(len(members), self.NumPos * len(members) // self.TotalRecs) if self.TotalRecs else 0
        if self.CurrentRec not in members:
            raise NspiError(NOT_FOUND)
        return members.index(self.CurrentRec)

    def move(self, members: Sequence[int], position: int) -> None:
        """Point this STAT at row ``position`` of ``members`` (past the end: MID_END_OF_TABLE)."""
        self.CurrentRec = members[position] if position < len(members) else ndr.MID_END_OF_TABLE
        self.NumPos = position
        self.TotalRecs = len(members)
        self.Delta = 0
