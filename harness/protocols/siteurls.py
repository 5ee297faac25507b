"""Where the CAS services of a site live (EWS, ECP, OAB, OWA, MAPI/HTTP, Autodiscover). Sans-IO, and apart from the
Autodiscover renderers that use it: `mockex serve` needs the URLs when it starts, the XML code only at the first
request."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from harness.org import Org


@dataclass(frozen=True)
class SiteUrls:
    """Where the CAS services live; ports vary because tests run on ephemeral ports."""
    ews_url: str
    ecp_url: str
    oab_url: str
    owa_url: str
    mapi_url: str          # base of /mapi/emsmdb and /mapi/nspi
    autodiscover_url: str  # the POX endpoint

    @classmethod
    def for_org(cls, org: Org, https_port: int = 443) -> "SiteUrls":
        port = "" if https_port == 443 else f":{https_port}"
        site = f"https://{org.mail_host}{port}"
        oab_guid = uuid.uuid5(uuid.NAMESPACE_URL, f"oab:{org.domain}")
        return cls(ews_url=f"{site}/EWS/Exchange.asmx", ecp_url=f"{site}/ecp/", oab_url=f"{site}/OAB/{oab_guid}/",
                   owa_url=f"{site}/owa/", mapi_url=f"{site}/mapi/",
                   autodiscover_url=f"https://{org.autodiscover_host}{port}/autodiscover/autodiscover.xml")

    @property
    def site_root(self) -> str:
        parts = urlsplit(self.ews_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def um_url(self) -> str:
        return self.ews_url.rsplit("/", 1)[0] + "/UM2007Legacy.asmx"

    @property
    def activesync_url(self) -> str:
        return f"{self.site_root}/Microsoft-Server-ActiveSync"
