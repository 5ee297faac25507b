"""The TCP listeners: which loopback address serves which host, and what the ``accept`` hook makes of each port.

Faults that act before anything names the host (a refused or blackholed port, a reset or stall at connect) need
the host on an address of its own: the AddressPlan gives each host such a fault names a dedicated loopback
address, and DNS answers with it. Every (address, role) pair, role "https" or "http", gets one listener on the
same port numbers, kept in the state the ``accept`` hook asks for:

  open       listening and serving; a per-connection ConnectAction may still reset or stall one connection
  refused    bound but not listening: the kernel answers a SYN with RST (ECONNREFUSED); the port stays reserved
  blackhole  listening with a backlog of 0 that one connection of our own fills, so the kernel drops every
             further SYN and the client's connect() never completes (ETIMEDOUT), no root or firewall needed

Listener states are re-evaluated whenever a scenario step changes the active faults or they are reset.
"""
from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from twisted.internet import defer, protocol

from harness.hooks import FaultSet, Scope
from harness.protocols.connection import ConnectAction, accept_hook
from harness.protocols.http import ConnectionInfo

ROLES = ("https", "http")
PORT_STATES = {"refuse": "refused", "blackhole": "blackhole"}   # the actions that shape the port itself
LISTEN_BACKLOG = 128
FILL_TIMEOUT = 2.0
BIND_ATTEMPTS = 5


class AddressPlan:
    """The listen address serves every host, except hosts given their own address: for an IPv4 loopback listen
    address 127.a.b.c the k-th such host (sorted by name) gets 127.a.b.c + 256*k (127.0.0.1 -> 127.0.1.1, ...)."""

    def __init__(self, listen: str, own_address_hosts: Iterable[str]):
        self.listen = listen
        hosts = sorted({host.lower() for host in own_address_hosts})
        self.dedicated: Dict[str, str] = {}
        if not hosts:
            return
        base = ipaddress.ip_address(listen)
        if base.version != 4 or not base.is_loopback:
            raise ValueError(f"hosts with their own network faults ({', '.join(hosts)}) need an IPv4 loopback "
                             f"--listen address to get their own 127.x.y.z; {listen} is not one")
        loopback = ipaddress.ip_network("127.0.0.0/8")
        for index, host in enumerate(hosts, start=1):
            address = ipaddress.ip_address(int(base) + 256 * index)
            if address not in loopback:
                raise ValueError(f"too many hosts with their own network faults for --listen {listen}")
            self.dedicated[host] = str(address)

    @property
    def addresses(self) -> List[str]:
        return [self.listen] + list(self.dedicated.values())

    def address_of(self, host: str) -> str:
        return self.dedicated.get(host.lower(), self.listen)

    def hosts_by_address(self) -> Dict[str, str]:
        return {address: host for host, address in self.dedicated.items()}


class _AcceptGate(protocol.Factory):
    """One listener's factory: asks the ``accept`` hook about each new connection, else hands it on."""
    noisy = False

    def __init__(self, inner, faults: FaultSet, listener: "_Listener", clock):
        self.inner, self.faults, self.listener, self.clock = inner, faults, listener, clock

    def buildProtocol(self, addr):
        if self.faults.has(accept_hook):
            action = self.faults.first(accept_hook, self.listener.scope, self.listener.info((addr.host, addr.port)))
            if action is not None:
                return _Mistreated(action, self.clock)
        return self.inner.buildProtocol(addr)


class _Mistreated(protocol.Protocol):
    """A connection the accept hook spoiled: reset at once, or held in silence."""

    def __init__(self, action: ConnectAction, clock):
        self.action, self.clock = action, clock
        self._timer = None

    def connectionMade(self) -> None:
        if self.action.kind in ("reset", "refuse"):
            self.transport.abortConnection()
        elif self.action.seconds:
            self._timer = self.clock.callLater(self.action.seconds, self.transport.abortConnection)

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()


class _Listener:
    """One (address, role) port in one of the three states."""

    def __init__(self, reactor, faults: FaultSet, address: str, role: str, host: Optional[str], inner):
        self.reactor, self.address, self.role, self.host = reactor, address, role, host
        self.scope = Scope(host=host)
        self.gate = _AcceptGate(inner, faults, self, reactor)
        self.state: Optional[str] = None
        self.port = 0
        self._twisted_port = None
        self._sockets: List[socket.socket] = []

    def info(self, peer: Tuple[str, int] = ("", 0)) -> ConnectionInfo:
        """What the accept hook is told about a connection to this listener (no peer: about the port itself)."""
        return ConnectionInfo(peer=peer, local=(self.address, self.port), tls=self.role == "https", host=self.host)

    def enter(self, state: str) -> None:
        """Bind the port (0: any, then remembered) in ``state``; the listener holds nothing when called."""
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.address, self.port))
            self.port = sock.getsockname()[1]
            if state == "open":
                sock.listen(LISTEN_BACKLOG)
                sock.setblocking(False)
                self._twisted_port = self.reactor.adoptStreamPort(sock.fileno(), family, self.gate)
                sock.close()  # Twisted serves its own duplicate of the descriptor
            elif state == "blackhole":
                sock.listen(0)
                filler = socket.socket(family, socket.SOCK_STREAM)
                self._sockets = [sock, filler]
                filler.settimeout(FILL_TIMEOUT)
                filler.connect((self.address, self.port))  # completes: the empty queue takes it, and is now full
            else:
                self._sockets = [sock]
        except OSError as exc:
            sock.close()
            self.leave()
            raise ListenError(exc.errno, f"cannot listen on {self.address}:{self.port} ({self.role.upper()}): "
                                         f"{exc.strerror or exc}") from exc
        except BaseException:
            sock.close()
            self.leave()
            raise
        self.state = state

    def leave(self) -> Optional[defer.Deferred]:
        """Give the port up; the Deferred fires once Twisted has closed its socket (None: closed already)."""
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        self.state = None
        port, self._twisted_port = self._twisted_port, None
        return port.stopListening() if port is not None else None


class ListenError(OSError):
    """A port that cannot be bound, named with its address and role; ``errno`` is the socket's."""

    def __str__(self) -> str:
        return str(self.strerror)


class Listeners:
    """Every TCP listener of the server, kept in the state the ``accept`` hook asks for."""

    def __init__(self, reactor, faults: FaultSet, plan: AddressPlan, factories: Dict[str, object],
                 ports: Dict[str, int], record: Callable[..., object]):
        self.reactor, self.faults, self.plan, self.record = reactor, faults, plan, record
        self.ports = dict(ports)
        hosts = plan.hosts_by_address()
        self._listeners: Dict[Tuple[str, str], _Listener] = {}
        for role in ROLES:
            for address in plan.addresses:
                self._listeners[(address, role)] = _Listener(reactor, faults, address, role, hosts.get(address),
                                                             factories[role])
        self._busy: Optional[defer.Deferred] = None
        self._again = False

    def start(self) -> None:
        """Bind everything: the listen address first (its port may be chosen by the kernel), then the others on
        the same port number. The kernel only checks the listen address when it picks a port, so the number may be
        taken on a dedicated address: then all of that role starts over on another number."""
        for role in ROLES:
            requested = self.ports[role]
            for attempt in range(1, BIND_ATTEMPTS + 1):
                try:
                    self._start_role(role, requested)
                    break
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE or requested or attempt == BIND_ATTEMPTS:
                        raise
                    for address in self.plan.addresses:
                        self._listeners[(address, role)].leave()

    def _start_role(self, role: str, port: int) -> None:
        self.ports[role] = port
        for address in self.plan.addresses:
            listener = self._listeners[(address, role)]
            listener.port = self.ports[role]
            state, fault = self._wanted(listener)
            listener.enter(state)
            self.ports[role] = listener.port
            if state != "open":
                self._record(listener, state, fault, was=None)

    def port(self, role: str) -> int:
        return self.ports[role]

    def states(self) -> Dict[str, Dict[str, str]]:
        """address -> role -> state, for endpoints.json."""
        table: Dict[str, Dict[str, str]] = {}
        for (address, role), listener in self._listeners.items():
            table.setdefault(address, {})[role] = listener.state or "closed"
        return table

    def reconcile(self) -> None:
        """Bring every listener to the state the faults now ask for (after a step or a reset)."""
        if self._busy is not None:  # a transition is under way: look again when it is done
            self._again = True
            return
        waits = []
        for listener in self._listeners.values():
            wanted, fault = self._wanted(listener)
            if wanted != listener.state:
                self._record(listener, wanted, fault, was=listener.state)
                waits.append(self._move(listener, wanted))
        if waits:
            self._busy = defer.gatherResults(waits)
            self._busy.addBoth(self._settled)

    def _settled(self, result):
        self._busy = None
        if self._again:
            self._again = False
            self.reconcile()
        return None

    def _move(self, listener: _Listener, state: str) -> defer.Deferred:
        def rebind(_=None) -> None:
            try:
                listener.enter(state)
            except OSError as exc:  # someone took the port meanwhile: say so, keep serving the rest
                self.record("listener", address=listener.address, role=listener.role, port=listener.port,
                            state="closed", was=None, fault=None, error=str(exc))

        closing = listener.leave()
        if closing is None:
            rebind()
            return defer.succeed(None)
        return closing.addCallback(rebind)

    def _wanted(self, listener: _Listener) -> Tuple[str, Optional[str]]:
        """The state the faults ask of the port, and the fault asking. The same question as for a connection (the
        first fault that answers decides), asked of each fault directly: whether anything happens to the port is
        recorded as a listener event, not as a firing."""
        if self.faults.has(accept_hook):
            for fault in self.faults.candidates(accept_hook, listener.scope):
                action = fault.on_accept(listener.scope, listener.info())
                if action is not None:
                    return PORT_STATES.get(action.kind, "open"), fault.name
        return "open", None

    def _record(self, listener: _Listener, state: str, fault: Optional[str], was: Optional[str]) -> None:
        self.record("listener", address=listener.address, role=listener.role, port=listener.port, state=state,
                    was=was, fault=fault if state != "open" else None)

    def stop(self) -> defer.Deferred:
        waits = [listener.leave() for listener in self._listeners.values()]
        return defer.gatherResults([wait for wait in waits if wait is not None])
