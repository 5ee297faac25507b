"""The hook kernel: declared hook points, provider checks at registration, typed answers, scope indexing."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional

import pytest

from harness import catalog_docs, hooks
from harness.faults.base import Fault, catalog, declared_hooks, register
from harness.hooks import FaultSet, HookError, Scope, check_provider, hookspec
from harness.protocols.connection import ConnectAction, accept_hook
from harness.protocols.dns import DnsAnswer, dns_query_hook
from harness.protocols.http import ConnectionInfo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every hook point and where it fires. A new hook must be added here, in its declaring core and in the docs table.
EXPECTED = {
    "accept": "services/listeners.py", "write": "services/web.py", "tls_profile": "services/tls.py",
    "dns_query": "services/dns.py", "http_request": "services/site.py", "auth_methods": "services/site.py",
    "auth_result": "services/site.py", "autodiscover": "services/site.py", "rpc_channel": "services/rpcproxy.py",
    "rpc_out_framing": "services/rpcproxy.py",
    "rts": "protocols/rpcout.py", "rpc_bind": "protocols/dcerpc/association.py",
    "rpc_bind_ack": "protocols/dcerpc/association.py",
    "ntlm_challenge": "protocols/httpauth.py, protocols/dcerpc/security.py", "nspi_rows": "rpc/nspi/server.py",
    "rpc_call": "protocols/dcerpc/association.py", "mailbox": "rpc/emsmdb, rpc/nspi",
    "ews": "services/site.py", "mapi_http": "rpc/mapihttp.py", "rop_answer": "rpc/emsmdb/server.py",
}


def test_every_hook_point_is_declared_once_with_where_it_fires() -> None:
    hooks = declared_hooks()
    assert {name: hook.fires_in for name, hook in hooks.items()} == EXPECTED
    for hook in hooks.values():
        assert hook.answer and hook.means and hook.declared_in.startswith("harness.")
        for place in hook.fires_in.split(", "):
            assert os.path.exists(os.path.join(REPO, "harness", place)) or \
                os.path.exists(os.path.join(REPO, "harness", place + ".py")), place


def test_every_fault_answers_only_declared_hooks_with_their_arity() -> None:
    hooks = declared_hooks()
    for cls in catalog().values():
        check_provider(cls, hooks)          # raises on a stray on_* or a wrong signature


def test_a_misspelled_hook_method_fails_at_registration_with_a_hint() -> None:
    class Misspelled(Fault):
        name = "dns.misspelled-for-test"
        summary = "never registered"

        def on_dns_querry(self, scope, name, qtype):
            return None

    with pytest.raises(HookError, match=r"on_dns_querry names no hook point \(did you mean on_dns_query\?\)"):
        register(Misspelled)


def test_a_hook_method_with_the_wrong_arguments_fails_at_registration() -> None:
    class WrongArity(Fault):
        name = "dns.wrong-arity-for-test"
        summary = "never registered"

        def on_dns_query(self, scope, name):
            return None

    with pytest.raises(HookError, match=r"takes \(scope, name\); the hook passes \(scope, name, qtype\)"):
        register(WrongArity)


def test_a_hook_stub_must_be_named_after_its_hook_and_declared_once() -> None:
    with pytest.raises(HookError, match="must be named <hook>_hook"):
        @hookspec(fires_in="nowhere", means="nothing")
        def badly_named(x: int) -> int: ...
    with pytest.raises(HookError, match="declared twice"):
        @hookspec(fires_in="nowhere", means="nothing")
        def dns_query_hook(name: str, qtype: str) -> DnsAnswer: ...


@dataclass
class Provider:
    name: str
    answer: object = None
    host: Optional[str] = None
    user: Optional[str] = None
    asked: int = 0

    def on_dns_query(self, scope: Scope, name: str, qtype: str) -> object:
        self.asked += 1
        return self.answer


def test_first_asks_in_order_only_providers_in_scope_and_records_the_firing() -> None:
    events: List[dict] = []
    silent = Provider("silent")
    other_host = Provider("other", DnsAnswer("REFUSED"), host="mail.contoso.test")
    answering = Provider("answering", DnsAnswer("NXDOMAIN"), host="autodiscover.contoso.test")
    later = Provider("later", DnsAnswer("SERVFAIL"))
    faults = FaultSet([silent, other_host, answering, later], record=lambda kind, **fields: events.append(fields))
    answer = faults.first(dns_query_hook, Scope(host="AUTODISCOVER.contoso.test"), "autodiscover.contoso.test", "A")
    assert answer == DnsAnswer("NXDOMAIN")
    assert (silent.asked, other_host.asked, answering.asked, later.asked) == (1, 0, 1, 0)
    assert events == [{"fault": "answering", "hook": "dns_query", "host": "AUTODISCOVER.contoso.test", "user": None,
                       "effect": "NXDOMAIN"}]
    assert faults.has(dns_query_hook) and not faults.has(accept_hook)
    assert faults.first(accept_hook, Scope(), ConnectionInfo(("127.0.0.1", 1), ("127.0.0.1", 443), True)) is None


def test_an_answer_of_the_wrong_type_is_refused_by_name() -> None:
    faults = FaultSet([Provider("wrong", ConnectAction("reset"))])
    with pytest.raises(HookError, match="Provider.on_dns_query answered ConnectAction; the 'dns_query' hook's "
                                        "answer is DnsAnswer"):
        faults.first(dns_query_hook, Scope(), "contoso.test", "A")


def test_remove_and_replace_reindex() -> None:
    faults = FaultSet([Provider("a", DnsAnswer("NXDOMAIN")), Provider("b", DnsAnswer("SERVFAIL"))])
    assert faults.remove("a") == 1 and len(faults) == 1
    assert faults.first(dns_query_hook, Scope(), "x", "A") == DnsAnswer("SERVFAIL")
    faults.replace([])
    assert not faults.has(dns_query_hook)


def test_the_providers_a_scope_meets_are_remembered_until_the_set_changes() -> None:
    for_mail = Provider("for-mail", DnsAnswer("REFUSED"), host="mail.contoso.test")
    faults = FaultSet([for_mail])
    mail, other = Scope(host="mail.contoso.test"), Scope(host="other.contoso.test")
    assert faults.first(dns_query_hook, other, "x", "A") is None
    assert faults.first(dns_query_hook, other, "x", "A") is None and for_mail.asked == 0
    assert faults.first(dns_query_hook, mail, "x", "A") == DnsAnswer("REFUSED")
    assert faults.concern(dns_query_hook, "MAIL.contoso.test") and not faults.concern(dns_query_hook, "other.x")
    assert not faults.concern(accept_hook, "mail.contoso.test")
    faults.add(Provider("everyone", DnsAnswer("SERVFAIL")))           # added after "other" met nobody
    assert faults.concern(dns_query_hook, "other.x", "anyone@contoso.test")
    assert faults.first(dns_query_hook, other, "x", "A") == DnsAnswer("SERVFAIL")
    assert [p.name for p in faults.candidates(dns_query_hook, mail)] == ["for-mail", "everyone"]
    faults.remove("for-mail")
    assert faults.first(dns_query_hook, mail, "x", "A") == DnsAnswer("SERVFAIL")
    for index in range(5000):   # client-chosen hosts: the memory of scopes stays bounded
        faults.first(dns_query_hook, Scope(host=f"h{index}.contoso.test"), "x", "A")
    assert len(faults._asked_memo) <= hooks.MAX_REMEMBERED_SCOPES


def test_a_firing_never_writes_the_repr_of_an_answer() -> None:
    """An answer without describe() is recorded by its type name: a repr could carry a credential."""
    events: List[dict] = []

    class Secretive:
        def __repr__(self) -> str:
            return "Secretive(password='P@ssw0rd-alice')"

    @dataclass
    class Answers:
        name: str = "secretive"
        host: Optional[str] = None
        user: Optional[str] = None

        def on_dns_query(self, scope: Scope, name: str, qtype: str) -> object:
            return Secretive()

    faults = FaultSet([Answers()], record=lambda kind, **fields: events.append(fields))
    with pytest.raises(HookError):
        faults.first(dns_query_hook, Scope(), "x", "A")
    from harness.hooks import describe_answer
    assert describe_answer(Secretive()) == "Secretive"


def test_the_architecture_hook_table_is_fresh() -> None:
    with open(os.path.join(REPO, "docs", "architecture.md"), encoding="utf-8") as handle:
        text = handle.read()
    assert catalog_docs.with_hook_table(text) == text, "stale hook table: run `python -m harness.catalog_docs`"
