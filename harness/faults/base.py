"""Faults: named, parameterised classes that answer hook points, their parameters, and the catalogue.

A fault is data plus hooks. A service never tests for a particular fault; at a hook point declared in the core that
owns the answer type (see harness/hooks.py and docs/architecture.md) it asks the active ``FaultSet`` and acts on the
answer. A fault class answers a hook by defining ``on_<hook>(self, scope, <the hook's arguments>)``; ``register``
refuses a method that names no hook point, so a misspelling fails at import.
"""
from __future__ import annotations

import importlib
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Tuple

from harness.hooks import HOOKS, Hook, check_provider, provided_hooks
from harness.yamlfile import closest, describe_value, kind_name

REQUIRED = object()
LAYERS = ("tls", "network", "auth", "autodiscover", "dns", "rpc", "mailbox", "ews", "mapihttp")
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


_SCOPE = {"host": Param(str, None, "apply only to this host name (SNI / Host header / DNS name)"),
          "user": Param(str, None, "apply only to this user (e-mail address)")}


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
        return {**cls.params, **{k: v for k, v in _SCOPE.items() if k not in cls.params}}

    @classmethod
    def validate(cls, values: Dict[str, Any]) -> Dict[str, Any]:
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
                names = " or ".join(kind_name(k) for k in kinds)
                raise FaultParamError(key, f"expected {names}, got {describe_value(value)}", param.help)
            if param.choices is not None and value not in param.choices:
                raise FaultParamError(key, f"{value!r} is not allowed",
                                      "allowed: " + ", ".join(map(str, param.choices)))
            if param.items is not None and value is not None:
                for item in value:
                    if isinstance(item, bool) or not isinstance(item, param.items):
                        raise FaultParamError(key, f"{item!r} is not {kind_name(param.items)}",
                                              f"a list of {kind_name(param.items)} values")
            if param.minimum is not None and value is not None and value < param.minimum:
                raise FaultParamError(key, f"must be at least {param.minimum:g}")
            if param.below is not None and value is not None and value >= param.below:
                raise FaultParamError(key, f"must be below {param.below:g}")
            result[key] = value
        return result

    def hooks(self) -> List[str]:
        return provided_hooks(type(self))

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
    # The hooks declared so far cover a fault whose module imported the answer types it returns; only a name none of
    # them knows loads every declaring module (some bring impacket), for the check and its "did you mean".
    known = HOOKS if all(name in HOOKS for name in provided_hooks(cls)) else declared_hooks()
    check_provider(cls, known)
    CATALOG[cls.name] = cls
    return cls


# The modules that declare hook points (each beside its answer type); faults may answer any of them.
HOOK_MODULES = ("harness.protocols.tls", "harness.protocols.connection", "harness.protocols.dns",
                "harness.protocols.http", "harness.protocols.httpauth", "harness.protocols.logon",
                "harness.protocols.autodiscover_answer", "harness.protocols.rpcproxy", "harness.protocols.rpcout",
                "harness.protocols.dcerpc", "harness.rpc.base",
                "harness.rpc.nspi.values", "harness.protocols.ews", "harness.rpc.mapihttp",
                "harness.rpc.emsmdb.ropedit")


def declared_hooks() -> Dict[str, Hook[Any, Any]]:
    """Every hook point, after importing the modules that declare them."""
    for module in HOOK_MODULES:
        importlib.import_module(module)
    return dict(HOOKS)


def fault_class(name: str) -> Optional[type]:
    """The fault registered as ``name``, importing only its family (``harness.faults.tls`` for ``tls.expired``), so
    a scenario loads the families it names and not the whole catalogue; None when there is no such fault."""
    family = name.split(".", 1)[0]
    if name not in CATALOG and family in LAYERS:
        importlib.import_module(f"harness.faults.{family}")
    return CATALOG.get(name)


def catalog() -> Dict[str, type]:
    """Every registered fault (importing the family modules registers them)."""
    from harness.faults import load_families
    load_families()
    return dict(sorted(CATALOG.items()))


@dataclass
class Expectation:
    """A scenario's `expect` block: what a correct client / the analyzer should observe."""
    analyzer: Dict[str, Any] = field(default_factory=dict)
    clients: Dict[str, Any] = field(default_factory=dict)
