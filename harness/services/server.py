"""One process, one reactor: the HTTPS site, the port-80 redirect vhost and DNS for one org."""
from __future__ import annotations

import ipaddress
import itertools
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Set

from twisted.internet.error import CannotListenError

from harness import pki as pkimod
from harness.faults.base import Fault
from harness.hooks import FaultSet
from harness.protocols.httpconn import ConnectionLimits
from harness.protocols.siteurls import SiteUrls
from harness.protocols.tls import EXCHANGE_2013_MAX_VERSION
from harness.services.dns import listen_dns
from harness.services.listeners import AddressPlan, ListenError, Listeners
from harness.services.rpccapture import RpcCapture
from harness.services.rpcproxy import RpcProxyService
from harness.services.site import ExchangeSite, RedirectSite
from harness.services.steps import StepRunner
from harness.services.tls import KeyLog, TlsContexts, TlsServerFactory
from harness.services.web import HttpFactory
from harness.transcript import DEFAULT_KEEP, Transcript

if TYPE_CHECKING:
    from harness.mailbox.store import MailboxStore
    from harness.protocols.dcerpc.interface import RpcInterface


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False



class StoreOnDemand:
    """The mailbox store, made and seeded when a request first reads it (EWS, MAPI, Outlook Anywhere): a server
    answering only Autodiscover never loads the mailbox code. It stands in for the store (attributes pass through).
    The seeded content is fixed (harness.mailbox.seed), so it is the same whenever it is made."""

    def __init__(self, org, mailbox_sizes: Dict[str, int], seed: int) -> None:
        self._org, self._sizes, self._seed = org, mailbox_sizes, seed
        self._store: Optional["MailboxStore"] = None

    def get(self) -> "MailboxStore":
        if self._store is None:
            from harness.mailbox.seed import default_seeder, utc_now
            from harness.mailbox.store import MailboxStore, accounts_of, sizes_by_email
            mailboxes = self._org.mailboxes
            self._store = MailboxStore(accounts_of(mailboxes), utc_now(),
                                       default_seeder(sizes_by_email(self._sizes, mailboxes), self._seed))
        return self._store

    def __getattr__(self, name: str):
        return getattr(self.get(), name)


class PushOnDemand:
    """The EWS push notifier, made with the first push subscription (its module loads the mailbox event code and,
    for its POSTs, twisted.web's client): a server nobody subscribes to never loads them."""

    def __init__(self, reactor, store: StoreOnDemand, record, exchange_version: str) -> None:
        self._args = (reactor, store, record, exchange_version)
        self._notifier = None

    def start(self, subscription) -> None:
        if self._notifier is None:
            from harness.services.ews_push import PushNotifier
            self._notifier = PushNotifier(*self._args)
        self._notifier.start(subscription)

    def stop(self) -> None:
        if self._notifier is not None:
            self._notifier.stop()


class InterfacesOnDemand(Sequence):
    """The RPC interfaces (EMSMDB's ROPs over the server's store), built when the RPC proxy first reads them: a
    server nobody asks for Outlook Anywhere never imports impacket."""

    def __init__(self, org, store: StoreOnDemand) -> None:
        self._org, self._store = org, store
        self._built: Optional[List["RpcInterface"]] = None

    def _interfaces(self) -> List["RpcInterface"]:
        if self._built is None:
            from harness.rpc import interfaces_for
            self._built = interfaces_for(self._org, self._store.get())
        return self._built

    def __getitem__(self, index):
        return self._interfaces()[index]

    def __len__(self) -> int:
        return len(self._interfaces())

@dataclass
class ServeOptions:
    state_dir: str
    listen: str = "127.0.0.1"
    https_port: int = 8443
    http_port: int = 8080
    dns_port: int = 5353
    seed: int = 0
    allow_remote: bool = False
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)   # timeouts and caps of every HTTP connection
    keylog: Optional[str] = None   # append every TLS session's secrets here (NSS key log format, for Wireshark)
    tls_max: str = EXCHANGE_2013_MAX_VERSION   # the highest TLS version served where no fault says otherwise
    transcript_max_bytes: Optional[int] = None   # rotate transcript.jsonl before it passes this size (None: never)
    transcript_keep: int = DEFAULT_KEEP          # rotated files kept (transcript.jsonl.1 ... .N)
    rpc_capture: bool = False    # record each RPC virtual connection's inner PDUs in state_dir/rpc (export pcap)
    mailbox_sizes: Dict[str, int] = field(default_factory=dict)   # generated Inbox messages by user name or address
    # The RPC_OUT_DATA body framing: "exchange2013" (chunked, one PDU per chunk) or "legacy" (IIS rpcproxy of
    # 2007/2010: Content-Length 1073741824, raw PDUs). Belongs per server in the org model (Outlook Anywhere).
    rpc_out_framing: str = "exchange2013"
    epm_port: Optional[int] = None   # the endpoint mapper's TCP port (135 where the mock has an address); None: off
    ews_schema_dir: Optional[str] = None   # serve Microsoft's EWS schema files from here at /EWS/; None: not served


def own_address_hosts(faults: Iterable[Fault], scenarios: list) -> Set[str]:
    """Hosts named by a fault that acts at TCP accept, from the start or after a step: they need their own address,
    since nothing else tells a connection's host apart before it is accepted."""
    later = [spec.build(random.Random(0)) for scenario in scenarios for step in scenario.steps for spec in step.apply]
    return {fault.host for fault in [*faults, *later] if fault.host and "accept" in fault.hooks()}


@dataclass
class MockExchange:
    org: object
    options: ServeOptions
    transcript: Optional[Transcript] = None
    scenarios: list = field(default_factory=list)
    endpoints: dict = field(default_factory=dict)
    keylog: Optional[KeyLog] = None
    rpc_capture: Optional[RpcCapture] = None
    # The control plane (harness.control), started once the server runs and before endpoints.json is written: it
    # has ``start(reactor, server) -> dict`` (added to endpoints.json as "control") and ``stop()``.
    control: Optional[object] = None

    def start(self, reactor) -> dict:
        opts = self.options
        if self.scenarios:   # a scenario's `config:` changes the org's settings for the whole run (site and proxy)
            from harness.scenario import configured_org
            self.org = configured_org(self.org, self.scenarios)
        if not is_loopback(opts.listen) and not opts.allow_remote:
            raise ValueError(f"--listen {opts.listen} is not a loopback address; add --allow-remote to serve it")
        # read before anything is created or listens: a directory lacking a file fails the start
        schema_files = None
        if opts.ews_schema_dir:
            from harness.protocols import ews_schema  # lxml and the EWS code: only with --ews-schema-dir
            schema_files = ews_schema.SchemaFiles(opts.ews_schema_dir)
        created = not os.path.isdir(opts.state_dir)
        os.makedirs(opts.state_dir, exist_ok=True)
        endpoints_path = os.path.join(opts.state_dir, "endpoints.json")
        if os.path.exists(endpoints_path):   # a previous run's: a supervisor must not take it for this one's
            os.remove(endpoints_path)
        if self.transcript is None:
            self.transcript = Transcript(os.path.join(opts.state_dir, "transcript.jsonl"),
                                         max_bytes=opts.transcript_max_bytes, keep=opts.transcript_keep)
        rng = random.Random(opts.seed)
        self.transcript.record("start", seed=opts.seed, org=self.org.domain, listen=opts.listen,
                               scenarios=[s.name for s in self.scenarios])
        self.faults = FaultSet([f for s in self.scenarios for f in s.build_faults(opts.seed)],
                               record=self.transcript.record)
        self.steps = StepRunner(self.scenarios, self.faults, self.transcript, reactor, opts.seed)
        self.pki = pkimod.PKI(opts.state_dir, rng=random.Random(opts.seed))
        self.plan = AddressPlan(opts.listen, own_address_hosts(self.faults, self.scenarios))
        hosts = self.plan.hosts_by_address()
        self.keylog = KeyLog(opts.keylog) if opts.keylog else None
        contexts = TlsContexts(self.pki, self.org.hostnames, ips=self.plan.addresses, keylog=self.keylog,
                              max_version=opts.tls_max)
        conn_ids = itertools.count(1)   # one numbering for both listeners: a transcript's conn id names one connection
        https_app = HttpFactory(None, tls=True, clock=reactor, faults=self.faults, hosts_by_address=hosts,
                                conn_ids=conn_ids)
        http_app = HttpFactory(None, tls=False, clock=reactor, faults=self.faults, hosts_by_address=hosts,
                               conn_ids=conn_ids)
        https_app.limits = http_app.limits = opts.limits
        tls = TlsServerFactory(contexts, self.faults, https_app, hosts_by_address=hosts, clock=reactor)
        # The HTTPS port must be known before the URLs (and the redirect/DNS answers) are rendered.
        self.listeners = Listeners(reactor, self.faults, self.plan, {"https": tls, "http": http_app},
                                   {"https": opts.https_port, "http": opts.http_port}, self.transcript.record)
        try:
            self.listeners.start()
        except ListenError as exc:
            self._abandon(str(exc), created)
            raise
        self.transcript.listeners.append(self._on_event)
        https_port = self.listeners.port("https")
        urls = SiteUrls.for_org(self.org, https_port)
        self.rpc_capture = RpcCapture(opts.state_dir) if opts.rpc_capture else None
        store = StoreOnDemand(self.org, opts.mailbox_sizes, opts.seed)
        if opts.mailbox_sizes:   # generating them is what --mailbox-size asks for: at start, not in a first request
            store.get()
        proxy = RpcProxyService(self.org, self.transcript, random.Random(rng.getrandbits(64)), faults=self.faults,
                                tap=self.rpc_capture, interfaces=InterfacesOnDemand(self.org, store),
                                out_framing=opts.rpc_out_framing)
        self.push = PushOnDemand(reactor, store, self.transcript.record, self.org.exchange_version)
        site = ExchangeSite(self.org, self.transcript, random.Random(rng.getrandbits(64)), urls, rpc_proxy=proxy,
                            faults=self.faults, store=store, ews_schema_files=schema_files, push=self.push)
        https_app.app = site
        http_app.app = RedirectSite(self.org, self.transcript, https_port, faults=self.faults, rpc_site=site)
        try:
            self._dns = listen_dns(reactor, self.org, opts.listen, opts.dns_port, https_port, self.transcript,
                                   faults=self.faults, address_of=self.plan.address_of)
        except CannotListenError as exc:
            error = exc.socketError
            reason = getattr(error, "strerror", None) or error
            failure = ListenError(getattr(error, "errno", None), f"cannot listen on {exc.interface}:{exc.port} (DNS): "
                                                                 f"{reason}")
            self.transcript.listeners.remove(self._on_event)
            self._abandon(str(failure), created)
            raise failure from exc
        self._epm = None
        if opts.epm_port is not None:
            from harness.services.epm import listen_epm  # only then: it loads the DCE/RPC code and impacket
            try:
                self._epm = listen_epm(reactor, self.org, opts.listen, opts.epm_port, self.transcript,
                                       random.Random(rng.getrandbits(64)))
            except CannotListenError as exc:
                self.transcript.listeners.remove(self._on_event)
                for port in self._dns:
                    port.stopListening()
                self._abandon(f"cannot listen on {exc.interface}:{exc.port} (endpoint mapper): {exc.socketError}",
                              created)
                raise ListenError(getattr(exc.socketError, "errno", None),
                                  f"cannot listen on {exc.interface}:{exc.port} (endpoint mapper)") from exc
        self.site, self.urls = site, urls
        self.endpoints = self._describe(https_port)
        if self.control is not None:
            try:
                self.endpoints["control"] = self.control.start(reactor, self)  # type: ignore[attr-defined]
            except (OSError, ValueError) as exc:
                self.transcript.listeners.remove(self._on_event)
                for port in self._dns:
                    port.stopListening()
                self._abandon(f"control: {exc}", created)
                raise
        path = os.path.join(opts.state_dir, "endpoints.json")
        # 0600: it lists every user's password
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self.endpoints, handle, indent=2)
        os.replace(path + ".tmp", path)  # readers polling for the file never see it half written
        self.transcript.record("listening", **{k: self.endpoints[k] for k in ("https", "http", "dns", "addresses")})
        return self.endpoints

    def _abandon(self, reason: str, created: bool) -> None:
        """A start that failed: give every port back, say why, and leave no state dir it made itself."""
        self.listeners.stop()
        self.transcript.record("start_failed", reason=reason)
        self.transcript.close()
        if created:
            shutil.rmtree(self.options.state_dir, ignore_errors=True)

    def _on_event(self, event: dict) -> None:
        if event["kind"] in ("step", "reset", "control"):  # the active faults changed: so may the listeners' states
            self.listeners.reconcile()

    def _describe(self, https_port: int) -> dict:
        org, opts = self.org, self.options
        host = f"[{opts.listen}]" if ":" in opts.listen else opts.listen
        port_suffix = "" if https_port == 443 else f":{https_port}"
        http_port = self.listeners.port("http")
        named = org.hostnames + sorted(set(self.plan.dedicated) - set(org.hostnames))
        return {
            "domain": org.domain,
            "https": {"host": opts.listen, "port": https_port},
            "http": {"host": opts.listen, "port": http_port},
            "dns": {"host": opts.listen, "port": self._dns[0].getHost().port},
            "epm": {"host": opts.listen, "port": self._epm.getHost().port} if self._epm is not None else None,
            "addresses": {name: self.plan.address_of(name) for name in named},
            "listeners": self.listeners.states(),
            "ca_file": self.pki.ca_file,
            "transcript": self.transcript.path,
            "keylog": opts.keylog,
            "seed": opts.seed,
            "scenarios": [s.name for s in self.scenarios],
            "faults": [f.describe() for f in self.faults],
            "hostnames": org.hostnames,
            "autodiscover_urls": [f"https://{org.domain}{port_suffix}/autodiscover/autodiscover.xml",
                                  f"https://{org.autodiscover_host}{port_suffix}/autodiscover/autodiscover.xml",
                                  f"https://{org.autodiscover_host}{port_suffix}/autodiscover/autodiscover.svc"],
            "direct_url": f"https://{host}:{https_port}/autodiscover/autodiscover.xml",
            "http_redirect_url": f"http://{org.autodiscover_host}/autodiscover/autodiscover.xml",
            "rpc_proxy_url": f"https://{org.mail_host}{port_suffix}/rpc/rpcproxy.dll",
            "ews_url": self.urls.ews_url,
            "users": [{"email": m.email, "username": m.username, "domain": org.netbios_domain,
                       "upn": f"{m.username}@{org.ad_domain}", "password": m.password,
                       "display_name": m.display_name, "server": m.server,
                       "rpc_server": org.personal_server(m), "legacy_dn": org.legacy_dn(m)}
                      for m in org.mailboxes],
        }

    def stop(self):
        from twisted.internet import defer
        # Nothing may move the listeners once they are closing: no pending step, no reconcile on a late event.
        self.steps.stop()
        if getattr(self, "push", None) is not None:
            self.push.stop()
        if self.control is not None:
            self.control.stop()  # type: ignore[attr-defined]
        if self._on_event in self.transcript.listeners:
            self.transcript.listeners.remove(self._on_event)
        waits = [self.listeners.stop()] + [p.stopListening() for p in self._dns]
        if getattr(self, "_epm", None) is not None:
            waits.append(self._epm.stopListening())
        self.transcript.record("stop")
        if self.keylog is not None:
            self.keylog.close()
        if self.rpc_capture is not None:
            self.rpc_capture.close()
        return defer.gatherResults([d for d in waits if d is not None])
