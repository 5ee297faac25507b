"""A mailbox's automatic-reply (out of office) settings, as Get/SetUserOofSettings read and write them."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional

OOF_STATES = ("Disabled", "Enabled", "Scheduled")
EXTERNAL_AUDIENCES = ("None", "Known", "All")


@dataclass
class OofSettings:
    state: str = "Disabled"
    external_audience: str = "All"
    start: Optional[dt.datetime] = None     # the Scheduled window (kept whatever the state, as Exchange does)
    end: Optional[dt.datetime] = None
    internal_reply: str = ""
    external_reply: str = ""

    def active(self, now: dt.datetime) -> bool:
        """Whether automatic replies go out at `now`."""
        if self.state == "Scheduled":
            return self.start is not None and self.end is not None and self.start <= now < self.end
        return self.state == "Enabled"
