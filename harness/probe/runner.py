"""One probe run: Autodiscover (or the given settings), then the test - Outlook Anywhere (over MAPI over HTTP when
Autodiscover offers it or --transport mapi-http asks, else RPC over HTTP), or Exchange Web Services - inside the
total time limit."""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from typing import List, Optional, Tuple

from harness.probe.discovery import Discovery
from harness.probe.ews import EwsTest
from harness.probe.hosts import ProbeContext
from harness.probe.http import Credentials
from harness.probe.mapi_over_http import MapiOverHttp
from harness.probe.net import Budget, Resolver
from harness.probe.outlook_anywhere import OutlookAnywhere, manual_settings
from harness.probe.report import TIME_SPENT, Report, Step, TimeLimit


@dataclass(frozen=True)
class ProbeOptions:
    email: str
    password: str
    login: Optional[str] = None               # DOMAIN\\user or UPN; default the e-mail address
    dns: Optional[Tuple[str, int]] = None     # None: the system resolver
    ca_file: Optional[str] = None             # None: the system trust store
    https_port: int = 443
    http_port: int = 80
    step_timeout: float = 10.0
    total_timeout: float = 120.0
    skip_autodiscover: bool = False
    proxy: Optional[str] = None
    rpc_server: Optional[str] = None
    auth_package: str = "Ntlm"
    auth: Optional[str] = None                # the Autodiscover scheme to prefer (NTLM, Negotiate, Basic)
    seed: Optional[int] = None
    test: str = "outlook-anywhere"            # or "ews": what follows Autodiscover (TESTS)
    transport: str = "auto"                   # auto (what Autodiscover offers), rpc-http or mapi-http

    def public(self) -> dict:
        shown = {k: v for k, v in asdict(self).items() if k != "password"}
        shown["dns"] = f"{self.dns[0]}:{self.dns[1]}" if self.dns else None
        return shown


TESTS = {"outlook-anywhere": ("outlook-anywhere", "Outlook Anywhere"), "ews": ("ews", "Exchange Web Services")}


def probe(options: ProbeOptions) -> Report:
    started, clock = time.time(), time.monotonic()
    context = ProbeContext(email=options.email, credentials=Credentials.parse(options.login or options.email,
                                                                              options.password),
                           resolver=Resolver(options.dns), budget=Budget(options.step_timeout, options.total_timeout),
                           ca_file=options.ca_file, https_port=options.https_port, http_port=options.http_port)
    rng = random.Random(options.seed)
    phases: List[Step] = []
    token = TIME_SPENT.set(context.budget.spent)
    try:
        if options.skip_autodiscover:
            settings = manual_settings(options.email, options.proxy, options.auth_package, options.rpc_server or "")
            phases.append(Step("autodiscover", "Autodiscover", "autodiscover", status="skip",
                               message=f"skipped: using {options.proxy} (AuthPackage {options.auth_package})"))
        else:
            discovery = Discovery(context, options.auth, mapi_http=options.transport != "rpc-http")
            phases.append(discovery.phase)
            settings = discovery.run()
        if settings is None:
            phase_id, title = TESTS[options.test]
            phases.append(Step(phase_id, title, status="skip", message="skipped: Autodiscover gave no settings"))
        elif options.test == "ews":
            ews = EwsTest(context, settings, options.auth)
            phases.append(ews.phase)
            ews.run()
        elif options.transport == "mapi-http" or (options.transport == "auto" and settings.mapi_mailstore_url):
            mapi = MapiOverHttp(context, settings, rng, options.auth)
            phases.append(mapi.phase)
            mapi.run()
        else:
            oa = OutlookAnywhere(context, settings, rng)
            phases.append(oa.phase)
            oa.run()
    except TimeLimit:
        _point_at_time_limit(phases)
    finally:
        TIME_SPENT.reset(token)
    return Report(options.email, phases, started, (time.monotonic() - clock) * 1000, options.public())


def _point_at_time_limit(phases: List[Step]) -> None:
    """The phase that ran out of time blames the innermost step that was running."""
    for phase in phases:
        stopped = [node for node in phase.walk() if node.reason == "time-limit"]
        if stopped:
            phase.cause = stopped[-1].id
