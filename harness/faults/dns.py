"""DNS faults: what the org's DNS answers for a name (scope `host` = the queried name)."""
from __future__ import annotations

import ipaddress

from harness.faults.base import REQUIRED, FaultParamError, HostScoped, Param, register
from harness.protocols.dns import DnsAnswer, DnsRecord

SRV_PREFIX = "_autodiscover._tcp."


def loopback_address(name: str, value: str, version: int = 0) -> str:
    """Addresses handed out must stay on loopback: a client must never be sent off the machine."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise FaultParamError(name, f"{value!r} is not an IP address") from None
    if not address.is_loopback:
        raise FaultParamError(name, f"{value} is not a loopback address", "use 127.0.0.0/8 or ::1")
    if version and address.version != version:
        raise FaultParamError(name, f"{value} is not an IPv{version} address")
    return value


class _RcodeFault(HostScoped):
    """Every query for the name (any type) gets ``rcode``; without `host`, every name of the zone does."""
    rcode = ""

    def on_dns_query(self, scope, name, qtype):
        return DnsAnswer(self.rcode)


@register
class Nxdomain(_RcodeFault):
    name = "dns.nxdomain"
    summary = "The name does not exist (NXDOMAIN)."
    description = ("The record was never published, or only in the internal half of a split-brain zone. Clients "
                   "skip that Autodiscover URL without sending a request.")
    symptoms = {"dnspython": "dns.resolver.NXDOMAIN: The DNS query name does not exist",
                "curl": "exit 6: Could not resolve host",
                "exchangelib": "skips the step ('has no DNS entry'); AutoDiscoverFailed when nothing else works"}
    analyzer = {"fails_at": "dns", "reason": "nxdomain"}
    rcode = "NXDOMAIN"


@register
class Servfail(_RcodeFault):
    name = "dns.servfail"
    summary = "The DNS server fails to answer for the name (SERVFAIL)."
    description = "A broken zone (expired DNSSEC signatures, a lame delegation) makes the resolver give up at once."
    symptoms = {"dnspython": "dns.resolver.NoNameservers: All nameservers failed to answer the query",
                "curl": "exit 6: Could not resolve host"}
    analyzer = {"fails_at": "dns", "reason": "servfail"}
    rcode = "SERVFAIL"


@register
class Timeout(_RcodeFault):
    name = "dns.timeout"
    summary = "The DNS server never answers for the name: the client's resolver times out."
    description = ("UDP/TCP 53 is filtered, or the server is overloaded. Each lookup costs the client its whole "
                   "resolver timeout before it moves on.")
    symptoms = {"dnspython": "dns.resolver.LifetimeTimeout: The resolution lifetime expired",
                "curl": "exit 6 (or 28) after the resolver's timeout"}
    analyzer = {"fails_at": "dns", "reason": "dns-timeout"}
    rcode = "NO-REPLY"


@register
class NoAddress(HostScoped):
    name = "dns.no-address"
    summary = "The name exists but has no A or AAAA record (NOERROR, empty answer)."
    description = "Typical of a bare domain (contoso.test) that only carries MX/TXT records and no web site."
    symptoms = {"dnspython": "dns.resolver.NoAnswer: The DNS response does not contain an answer to the question",
                "curl": "exit 6: Could not resolve host"}
    analyzer = {"fails_at": "dns", "reason": "no-a-record"}
    params = {"host": Param(str, REQUIRED, "the name left without addresses")}

    def on_dns_query(self, scope, name, qtype):
        return DnsAnswer("NOERROR", ())


@register
class WrongAddress(HostScoped):
    name = "dns.wrong-address"
    summary = "The name resolves to another (loopback) address where nothing listens."
    description = ("A stale A record after a move, or the internal address published outside. The client connects "
                   "to the wrong machine and is refused.")
    symptoms = {"python-socket": "ConnectionRefusedError: [Errno 111] Connection refused",
                "curl": "exit 7: Failed to connect ... Connection refused"}
    analyzer = {"fails_at": "port", "reason": "connection-refused"}
    params = {"host": Param(str, REQUIRED, "the name whose address is wrong"),
              "address": Param(str, "127.0.0.254", "the address answered (loopback only; IPv4 or IPv6)")}

    @classmethod
    def validate(cls, values):
        result = super().validate(values)
        loopback_address("address", result["address"])
        return result

    def on_dns_query(self, scope, name, qtype):
        version = ipaddress.ip_address(self.values["address"]).version
        return DnsAnswer("NOERROR", (DnsRecord("A" if version == 4 else "AAAA", self.values["address"]),))


@register
class AaaaOnly(HostScoped):
    name = "dns.aaaa-only"
    summary = "The name has only an AAAA (IPv6) record, no A record."
    description = ("An IPv6-only publication. IPv4-only clients cannot reach it, and exchangelib checks for an A "
                   "record before every Autodiscover URL, so it skips the host even when IPv6 would work.")
    symptoms = {"dnspython": "A query: dns.resolver.NoAnswer; AAAA query: the address",
                "exchangelib": "skips the URL ('has no DNS entry')"}
    analyzer = {"fails_at": "dns", "reason": "aaaa-only"}
    params = {"host": Param(str, REQUIRED, "the name published over IPv6 only"),
              "address": Param(str, "::1", "the IPv6 address answered (loopback only)")}

    @classmethod
    def validate(cls, values):
        result = super().validate(values)
        loopback_address("address", result["address"], version=6)
        return result

    def on_dns_query(self, scope, name, qtype):
        return DnsAnswer("NOERROR", (DnsRecord("AAAA", self.values["address"]),))


@register
class NoSrv(HostScoped):
    name = "dns.no-srv"
    summary = "No _autodiscover._tcp SRV record (NXDOMAIN for the SRV name)."
    description = ("Most organisations never publish the SRV record; a client must not need it when "
                   "autodiscover.<domain> works.")
    symptoms = {"dnspython": "SRV query: dns.resolver.NXDOMAIN",
                "exchangelib": "step 4 finds no record and fails only if steps 1-3 failed too"}

    def on_dns_query(self, scope, name, qtype):
        return DnsAnswer("NXDOMAIN") if name.startswith(SRV_PREFIX) else None


@register
class Srv(HostScoped):
    name = "dns.srv"
    summary = "The _autodiscover._tcp SRV record set is replaced by the given records."
    description = ("Each record is {target, priority, weight, port}; port defaults to the HTTPS port. Use it for a "
                   "target whose certificate does not match, several priorities (RFC 2782: the lowest wins; "
                   "exchangelib picks the highest), or a port other than 443 (exchangelib skips it).")
    symptoms = {"exchangelib": "uses the record with the numerically highest priority, port 443 only"}
    params = {"records": Param(list, REQUIRED, "list of {target, priority=0, weight=0, port=the HTTPS port}")}

    @classmethod
    def validate(cls, values):
        result = super().validate(values)
        if not result["records"]:
            raise FaultParamError("records", "at least one record is needed", "use dns.no-srv for none")
        for index, item in enumerate(result["records"]):
            cls._record(index, item)
        return result

    def __init__(self, rng=None, **values):
        super().__init__(rng, **values)
        self.records = tuple(self._record(index, item) for index, item in enumerate(self.values["records"]))

    @staticmethod
    def _record(index: int, item) -> DnsRecord:
        where = f"records[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("target"), str):
            raise FaultParamError(where, "a record is {target: host, priority: n, weight: n, port: n}")
        unknown = set(item) - {"target", "priority", "weight", "port"}
        if unknown:
            raise FaultParamError(where, f"unknown key {sorted(unknown)[0]!r}", "keys: target, priority, weight, port")
        numbers = {key: item.get(key, default) for key, default in (("priority", 0), ("weight", 0), ("port", None))}
        for key, value in numbers.items():
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 65536):
                raise FaultParamError(f"{where}.{key}", f"expected an integer 0..65535, got {value!r}")
        try:
            return DnsRecord("SRV", item["target"].lower().rstrip("."), **numbers)
        except ValueError as exc:    # a target no DNS name can be: refused at load, not when a query comes
            raise FaultParamError(f"{where}.target", str(exc)) from None

    def on_dns_query(self, scope, name, qtype):
        return DnsAnswer("NOERROR", self.records) if name.startswith(SRV_PREFIX) else None


@register
class ExtraHost(HostScoped):
    name = "dns.extra-host"
    summary = "A name outside the certificate resolves to the CAS (a leftover or hosting-provider name)."
    description = ("The name gets the CAS's own address, but the certificate does not cover it: a client "
                   "connecting by that name sees a name mismatch. Pair it with dns.srv to point the SRV record "
                   "at it.")
    symptoms = {"python-ssl": "CERTIFICATE_VERIFY_FAILED: Hostname mismatch, certificate is not valid for '<name>'",
                "curl": "exit 60: SSL: no alternative certificate subject name matches target host name"}
    analyzer = {"fails_at": "certificate", "reason": "name-mismatch"}
    params = {"host": Param(str, REQUIRED, "the extra name (inside the org's DNS domain)")}

    def on_dns_query(self, scope, name, qtype):
        return DnsAnswer("NOERROR", (DnsRecord("A"),))
