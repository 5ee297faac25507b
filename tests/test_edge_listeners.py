"""The TCP listeners (services/listeners.py) against a MemoryReactorClock: which address and port each role is
served on, the ports that network faults refuse or black-hole, the ``accept`` hook per connection, and moving
between states when the faults change. Ports are really bound on loopback (that is how a refused port is kept);
only the serving is in memory."""
from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from twisted.internet import defer, protocol
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from harness.faults.network import Blackhole, Refused, Reset, Stall
from harness.hooks import FaultSet
from harness.services.listeners import AddressPlan, Listeners


@dataclass
class ServedPort:
    """One listening socket handed to the reactor: where it was bound, who serves it, whether it was stopped.
    Twisted closes a port on a later reactor turn; here at once, or when the test fires ``closing``."""
    address: str
    port: int
    factory: Any
    close_later: bool = False
    closing: Optional[defer.Deferred] = None

    def stopListening(self) -> defer.Deferred:
        self.closing = defer.Deferred()
        if not self.close_later:
            self.closing.callback(None)
        return self.closing

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", self.address, self.port)


class ListeningReactor(MemoryReactorClock):
    """Remembers the address of every adopted listening socket."""

    def __init__(self, close_later: bool = False):
        super().__init__()
        self.close_later = close_later
        self.served: List[ServedPort] = []

    def adoptStreamPort(self, fileno: int, addressFamily: int, factory: Any) -> ServedPort:
        with socket.fromfd(fileno, addressFamily, socket.SOCK_STREAM) as sock:
            address, port = sock.getsockname()[:2]
        self.served.append(ServedPort(address, port, factory, self.close_later))
        return self.served[-1]


@dataclass
class Role(protocol.Protocol):
    """What a role's own factory builds: tells the test which factory a gate handed the connection to."""
    name: str


@dataclass
class RoleFactory(protocol.Factory):
    name: str

    def buildProtocol(self, addr: Any) -> Role:
        return Role(self.name)


@dataclass
class Setup:
    reactor: ListeningReactor
    faults: FaultSet
    listeners: Listeners
    events: List[Dict[str, Any]]

    def served(self) -> Dict[Tuple[str, str], ServedPort]:
        """(address, role) -> the port serving it now (the roles have different port numbers)."""
        roles = {self.listeners.port(role): role for role in ("https", "http")}
        return {(port.address, roles[port.port]): port for port in self.reactor.served if port.closing is None}


def setup(*faults: Any, hosts: Tuple[str, ...] = (), close_later: bool = False,
          ports: Optional[Dict[str, int]] = None) -> Setup:
    reactor = ListeningReactor(close_later)
    events: List[Dict[str, Any]] = []
    record = lambda kind, **fields: events.append({"kind": kind, **fields})   # noqa: E731
    fault_set = FaultSet(faults, record=record)
    listeners = Listeners(reactor, fault_set, AddressPlan("127.0.0.1", hosts),
                          {"https": RoleFactory("https"), "http": RoleFactory("http")},
                          ports or {"https": 0, "http": 0}, record)
    return Setup(reactor, fault_set, listeners, events)


@pytest.fixture
def started() -> Iterator[Callable[..., Setup]]:
    """A Setup factory whose listeners are started, and stopped after the test."""
    made: List[Setup] = []

    def start(*faults: Any, **kwargs: Any) -> Setup:
        made.append(setup(*faults, **kwargs))
        made[-1].listeners.start()
        return made[-1]

    yield start
    for each in made:
        each.listeners.stop()


def connection_refused(address: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((address, port)) == errno.ECONNREFUSED


def bound_elsewhere(address: str, port: int) -> bool:
    """Whether something holds the port (binding it ourselves fails)."""
    with socket.socket() as sock:
        try:
            sock.bind((address, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
        return False


def connect(port: ServedPort, peer_port: int = 40000) -> Tuple[protocol.Protocol, StringTransport]:
    """One connection accepted on ``port``: the protocol its factory builds, made on a StringTransport."""
    transport = StringTransport(hostAddress=port.getHost(), peerAddress=IPv4Address("TCP", "127.0.0.1", peer_port))
    built = port.factory.buildProtocol(transport.getPeer())
    built.makeConnection(transport)
    return built, transport


# ---- which ports -------------------------------------------------------------------------------------------------
def test_each_role_is_served_on_its_own_ephemeral_port(started):
    s = started()
    served = s.served()
    assert sorted(served) == [("127.0.0.1", "http"), ("127.0.0.1", "https")]
    assert served[("127.0.0.1", "https")].port == s.listeners.port("https") != 0
    assert served[("127.0.0.1", "http")].port == s.listeners.port("http") != 0
    assert s.listeners.port("https") != s.listeners.port("http")
    assert s.listeners.states() == {"127.0.0.1": {"https": "open", "http": "open"}}
    assert s.events == []


def test_a_requested_port_that_is_taken_fails_the_start():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        s = setup(ports={"https": holder.getsockname()[1], "http": 0})
        with pytest.raises(OSError) as raised:
            s.listeners.start()
    assert raised.value.errno == errno.EADDRINUSE
    assert s.reactor.served == []


def test_a_host_with_its_own_network_fault_gets_its_own_address_on_the_same_ports(started):
    s = started(Refused(host="mail.contoso.test"), hosts=("Mail.Contoso.Test",))
    https, http = s.listeners.port("https"), s.listeners.port("http")
    assert s.listeners.states() == {"127.0.0.1": {"https": "open", "http": "open"},
                                    "127.0.1.1": {"https": "refused", "http": "open"}}
    assert sorted((key, port.port) for key, port in s.served().items()) == [
        (("127.0.0.1", "http"), http), (("127.0.0.1", "https"), https), (("127.0.1.1", "http"), http)]
    assert connection_refused("127.0.1.1", https)
    assert [(e["address"], e["role"], e["state"], e["fault"]) for e in s.events] == [
        ("127.0.1.1", "https", "refused", "network.refused")]


# ---- refused and black-holed ports ----------------------------------------------------------------------------
def test_a_refused_port_is_kept_bound_but_not_served(started):
    s = started(Refused())
    port = s.listeners.port("https")
    assert s.listeners.states()["127.0.0.1"] == {"https": "refused", "http": "open"}
    assert sorted(s.served()) == [("127.0.0.1", "http")]
    assert connection_refused("127.0.0.1", port) and bound_elsewhere("127.0.0.1", port)
    (event,) = s.events
    assert (event["kind"], event["port"], event["state"], event["was"]) == ("listener", port, "refused", None)


def test_a_blackholed_port_is_kept_bound_but_not_served(started):
    s = started(Blackhole(port=80))
    port = s.listeners.port("http")
    assert s.listeners.states()["127.0.0.1"] == {"https": "open", "http": "blackhole"}
    assert sorted(s.served()) == [("127.0.0.1", "https")]
    assert bound_elsewhere("127.0.0.1", port)
    assert [(e["role"], e["state"], e["fault"]) for e in s.events] == [("http", "blackhole", "network.blackhole")]


# ---- the accept hook ----------------------------------------------------------------------------------------------
def test_without_accept_faults_connections_go_to_the_role_factory(started):
    s = started()
    served = s.served()
    built, transport = connect(served[("127.0.0.1", "https")], peer_port=40001)
    assert built == Role("https") and not transport.disconnecting
    assert connect(served[("127.0.0.1", "http")])[0] == Role("http")


def test_a_reset_at_connect_aborts_the_connection_and_is_recorded(started):
    s = started(Reset(when="connect"))
    served = s.served()
    assert s.listeners.states()["127.0.0.1"]["https"] == "open"   # a reset shapes connections, not the port
    built, transport = connect(served[("127.0.0.1", "https")])
    assert not isinstance(built, Role) and transport.disconnected
    assert [(e["kind"], e["fault"], e["hook"]) for e in s.events] == [("fault", "network.reset", "accept")]
    assert connect(served[("127.0.0.1", "http")])[0] == Role("http")   # the fault is for the HTTPS listener


def test_a_stall_at_connect_holds_the_connection_until_its_seconds_pass(started):
    s = started(Stall(when="connect", seconds=5.0))
    https = s.served()[("127.0.0.1", "https")]
    _, transport = connect(https)
    s.reactor.advance(4.999)
    assert transport.value() == b"" and not transport.disconnecting
    s.reactor.advance(0.001)
    assert transport.disconnected


def test_a_stalled_connection_the_client_gives_up_on_leaves_no_timer(started):
    s = started(Stall(when="connect", seconds=5.0))
    built, _ = connect(s.served()[("127.0.0.1", "https")])
    built.connectionLost(None)
    assert s.reactor.getDelayedCalls() == []


def test_the_accept_hook_is_asked_per_address_so_a_host_fault_spares_the_shared_address(started):
    s = started(Reset(host="mail.contoso.test", when="connect"), hosts=("mail.contoso.test",))
    served = s.served()
    assert connect(served[("127.0.0.1", "https")])[0] == Role("https")
    assert connect(served[("127.0.1.1", "https")])[1].disconnected


# ---- changing state -------------------------------------------------------------------------------------------
def test_reconcile_moves_a_port_to_refused_and_back_on_the_same_number(started):
    s = started()
    port = s.listeners.port("https")
    first = s.served()[("127.0.0.1", "https")]
    s.faults.add(Refused())
    s.listeners.reconcile()
    assert first.closing is not None
    assert s.listeners.states()["127.0.0.1"]["https"] == "refused" and connection_refused("127.0.0.1", port)
    s.faults.remove("network.refused")
    s.listeners.reconcile()
    again = s.served()[("127.0.0.1", "https")]
    assert again is not first and again.port == port
    assert [(e["state"], e["was"]) for e in s.events if e["kind"] == "listener"] == [("refused", "open"),
                                                                                     ("open", "refused")]


def test_a_port_is_rebound_only_once_twisted_has_closed_it_and_changes_meanwhile_wait(started):
    s = started(close_later=True)
    first = s.served()[("127.0.0.1", "https")]
    s.faults.add(Refused())
    s.listeners.reconcile()
    assert s.listeners.states()["127.0.0.1"]["https"] == "closed"   # Twisted still holds the socket
    s.faults.remove("network.refused")
    s.listeners.reconcile()                                           # a transition is under way: later
    assert len(s.reactor.served) == 2
    first.closing.callback(None)
    assert s.listeners.states()["127.0.0.1"]["https"] == "open"
    assert s.served()[("127.0.0.1", "https")].port == first.port


def test_stop_gives_every_port_up(started):
    s = started(Refused())
    refused_port = s.listeners.port("https")
    http = s.served()[("127.0.0.1", "http")]
    done = s.listeners.stop()
    assert done.called and http.closing is not None
    assert s.listeners.states() == {"127.0.0.1": {"https": "closed", "http": "closed"}}
    assert not bound_elsewhere("127.0.0.1", refused_port)


# ---- the address plan --------------------------------------------------------------------------------------------
def test_the_address_plan_gives_hosts_addresses_in_name_order():
    plan = AddressPlan("127.0.0.1", ["mail.contoso.test", "Autodiscover.contoso.test"])
    assert plan.addresses == ["127.0.0.1", "127.0.1.1", "127.0.2.1"]
    assert plan.address_of("AUTODISCOVER.contoso.test") == "127.0.1.1"
    assert plan.address_of("mail.contoso.test") == "127.0.2.1"
    assert plan.address_of("ex01.contoso.test") == "127.0.0.1"
    assert plan.hosts_by_address() == {"127.0.1.1": "autodiscover.contoso.test", "127.0.2.1": "mail.contoso.test"}


@pytest.mark.parametrize("listen", ["::1", "10.0.0.1"])
def test_hosts_of_their_own_need_an_ipv4_loopback_listen_address(listen):
    assert AddressPlan(listen, []).addresses == [listen]
    with pytest.raises(ValueError, match="IPv4 loopback"):
        AddressPlan(listen, ["mail.contoso.test"])
