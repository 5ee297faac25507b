"""The fault mechanism: named, parameterised fault classes, and the active FaultSet the services consult.

A fault is data plus hooks. A service never tests for a particular fault; at a well-named hook point it asks the
FaultSet (``faults.first("http_request", scope, request)``) and acts on the answer. A fault class implements a hook by
defining ``on_<hook>``; the FaultSet indexes faults by hook and by scope (host, user), so a server holding thousands
of scoped faults pays only for the ones that can apply to the request at hand.

Hook points (the service that calls them, the arguments after ``scope``, what a non-None answer means):
  tls_profile        services/tls.py      (host,)                    a TlsProfile replacing the default one
  accept             services/server.py   (info,)                    a ConnectAction: refuse/reset/stall the connection
  write              services/web.py      (info, data)               a WritePlan: slice, delay, truncate or reset output
  dns_query          services/dns.py      (name, qtype)              a DnsAnswer replacing the zone's answer
  auth_methods       services/site.py     (request,)                 the WWW-Authenticate schemes offered there
  auth_result        services/site.py     (request, outcome)         an AuthOutcome replacing the real verdict
  http_request       services/site.py     (request,)                 an HttpResponse sent instead of the real one
  autodiscover       services/site.py     (request, answer)          an AutodiscoverAnswer replacing the real one
  rpc_channel        services/rpcproxy.py (request, server, port)    HttpError refusing the channel, or ChannelCut
  rts                protocols/rpcproxy.py (direction, pdu_name)     an RtsAction (drop, refuse, follow)
  rpc_bind           protocols/dcerpc.py  (interface, auth_level)    a BindNak
  rpc_call           protocols/dcerpc.py  (interface, opnum)         a CallFault
  mailbox            rpc/emsmdb.py, rpc/nspi.py (operation, mailbox, call)  a MailboxError (connect/logon/resolve)
For the RPC hooks, scope host = the RPC server name as the client wrote it (?<name>:<port>), user = the mailbox.
Faults that only change state at start (e.g. DNS records) may read the FaultSet once instead.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, Iterable, List, Optional, Tuple

REQUIRED = object()
HOOKS = ("tls_profile", "accept", "write", "dns_query", "auth_methods", "auth_result", "http_request", "autodiscover",
         "rpc_channel", "rts", "rpc_bind", "rpc_call", "mailbox")
LAYERS = ("tls", "network", "auth", "autodiscover", "dns", "rpc", "mailbox")
SCOPE_PARAMS = ("host", "user")  # every fault accepts these: it then applies only to that host (SNI/Host) / user


@dataclass(frozen=True)
class Param:
    kind: Any                       # a type or a tuple of types (YAML scalars: str, int, float, bool, list, dict)
    default: Any = REQUIRED
    help: str = ""
    choices: Optional[Tuple] = None
    minimum: Optional[float] = None     # numbers: the smallest allowed value
    below: Optional[float] = None       # numbers: values must stay under this
    items: Optional[type] = None        # lists: the type every item must have

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Scope:
    """Who a hook call is about; faults scoped to another host or user are never consulted."""
    host: Optional[str] = None
    user: Optional[str] = None      # the mailbox's e-mail address, when known


class FaultParamError(ValueError):
    def __init__(self, param: str, message: str, hint: str = ""):
        self.param, self.message, self.hint = param, message, hint
        super().__init__(f"{param}: {message}")


class Fault:
    """Base class. Subclasses set the class attributes and define ``on_<hook>(self, scope, *args)`` methods."""
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""          # one line: the effect
    description: ClassVar[str] = ""      # what it imitates in the real world
    symptoms: ClassVar[Dict[str, str]] = {}   # client -> what that client reports (e.g. "python-ssl": "...")
    # What `mockex probe` should conclude (fails_at, reason); values may name parameters: "autodiscover-error-{code}".
    analyzer: ClassVar[Optional[Dict[str, str]]] = None
    params: ClassVar[Dict[str, Param]] = {}

    def __init__(self, rng: Optional[random.Random] = None, **values: Any):
        self.values = self.validate(values)
        self.rng = rng or random.Random(0)
        self.host = (self.values.get("host") or "").lower() or None
        self.user = (self.values.get("user") or "").lower() or None

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]

    @classmethod
    def all_params(cls) -> Dict[str, Param]:
        scope = {"host": Param(str, None, "apply only to this host name (SNI / Host header / DNS name)"),
                 "user": Param(str, None, "apply only to this user (e-mail address)")}
        return {**cls.params, **{k: v for k, v in scope.items() if k not in cls.params}}

    @classmethod
    def validate(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        from harness.yamlfile import closest
        spec = cls.all_params()
        for key in values:
            if key not in spec:
                raise FaultParamError(str(key), "unknown parameter", closest(str(key), spec) if spec else
                                      "this fault takes no parameters")
        result = {}
        for key, param in spec.items():
            if key not in values:
                if param.required:
                    raise FaultParamError(key, "required parameter is missing", param.help)
                result[key] = param.default
                continue
            value = values[key]
            kinds = param.kind if isinstance(param.kind, tuple) else (param.kind,)
            if float in kinds and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
                names = " or ".join(k.__name__ for k in kinds)
                raise FaultParamError(key, f"expected {names}, got {type(value).__name__} {value!r}", param.help)
            if param.choices is not None and value not in param.choices:
                raise FaultParamError(key, f"{value!r} is not allowed",
                                      "allowed: " + ", ".join(map(str, param.choices)))
            if param.items is not None and value is not None:
                for item in value:
                    if isinstance(item, bool) or not isinstance(item, param.items):
                        raise FaultParamError(key, f"{item!r} is not {param.items.__name__}",
                                              f"a list of {param.items.__name__} values")
            if param.minimum is not None and value is not None and value < param.minimum:
                raise FaultParamError(key, f"must be at least {param.minimum:g}")
            if param.below is not None and value is not None and value >= param.below:
                raise FaultParamError(key, f"must be below {param.below:g}")
            result[key] = value
        return result

    def hooks(self) -> List[str]:
        return [hook for hook in HOOKS if callable(getattr(self, f"on_{hook}", None))]

    def verdict(self) -> Optional[Dict[str, str]]:
        if self.analyzer is None:
            return None
        return {key: value.format(**self.values) for key, value in self.analyzer.items()}

    def describe(self) -> str:
        shown = {k: v for k, v in self.values.items() if v is not None}
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


class HostScoped(Fault):
    """A fault whose hook never knows the user (connections, TLS, DNS, the schemes offered, raw output): it takes
    the `host` scope only, and a `user` in a scenario is refused when it loads, since it could never match."""
    user_refusal: ClassVar[str] = "this fault acts before any user is known"

    @classmethod
    def all_params(cls) -> Dict[str, Param]:
        return {name: param for name, param in super().all_params().items() if name != "user"}

    @classmethod
    def validate(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        if "user" in values:
            raise FaultParamError("user", cls.user_refusal, "scope it with `host`, or leave the scope out")
        return super().validate(values)


CATALOG: Dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator adding a fault to the catalogue; names are '<layer>.<name>'."""
    layer = cls.name.split(".", 1)[0]
    if layer not in LAYERS:
        raise ValueError(f"fault {cls.name!r}: layer {layer!r} is not one of {LAYERS}")
    if cls.name in CATALOG:
        raise ValueError(f"fault {cls.name!r} registered twice")
    if not cls.summary:
        raise ValueError(f"fault {cls.name!r} needs a summary")
    CATALOG[cls.name] = cls
    return cls


def catalog() -> Dict[str, type]:
    """Every registered fault (importing the family modules registers them)."""
    from harness.faults import load_families
    load_families()
    return dict(sorted(CATALOG.items()))


class FaultSet:
    """The active faults of a running server, indexed by hook and scope. Mutated only on the reactor thread."""

    def __init__(self, faults: Iterable[Fault] = (), record: Optional[Callable[..., Any]] = None):
        self._record = record or (lambda kind, **fields: None)
        self._faults: List[Fault] = []
        self._index: Dict[str, Dict[Tuple[Optional[str], Optional[str]], List[Fault]]] = {}
        for fault in faults:
            self.add(fault)

    def __iter__(self):
        return iter(list(self._faults))

    def __len__(self) -> int:
        return len(self._faults)

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)
        for hook in fault.hooks():
            self._index.setdefault(hook, {}).setdefault((fault.host, fault.user), []).append(fault)

    def remove(self, name: str) -> int:
        """Remove every active fault with this name; returns how many were removed."""
        keep = [f for f in self._faults if f.name != name]
        removed = len(self._faults) - len(keep)
        self.replace(keep)
        return removed

    def replace(self, faults: Iterable[Fault]) -> None:
        self._faults, self._index = [], {}
        for fault in faults:
            self.add(fault)

    def candidates(self, hook: str, scope: Scope) -> List[Fault]:
        buckets = self._index.get(hook)
        if not buckets:
            return []
        host = scope.host.lower() if scope.host else None
        user = scope.user.lower() if scope.user else None
        found: List[Fault] = []
        for key in {(None, None), (host, None), (None, user), (host, user)}:
            if key in buckets and (key[0] is None or host) and (key[1] is None or user):
                found.extend(buckets[key])
        if len(found) > 1:
            order = {id(f): i for i, f in enumerate(self._faults)}
            found.sort(key=lambda f: order[id(f)])
        return found

    def first(self, hook: str, scope: Scope, *args: Any) -> Any:
        """The answer of the first applicable fault that answers (not None); each firing is recorded."""
        for fault in self.candidates(hook, scope):
            answer = getattr(fault, f"on_{hook}")(scope, *args)
            if answer is not None:
                self._record("fault", fault=fault.name, hook=hook, host=scope.host, user=scope.user,
                             effect=_effect(answer))
                return answer
        return None

    def has(self, hook: str) -> bool:
        return bool(self._index.get(hook))


def _effect(answer: Any) -> str:
    describe = getattr(answer, "describe", None)
    if callable(describe):
        return describe()
    text = repr(answer)
    return text if len(text) <= 200 else text[:197] + "..."


@dataclass
class Expectation:
    """A scenario's `expect` block: what a correct client / the analyzer should observe."""
    analyzer: Dict[str, Any] = field(default_factory=dict)
    clients: Dict[str, Any] = field(default_factory=dict)
