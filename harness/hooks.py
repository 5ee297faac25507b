"""The hook kernel: typed hook points, the scope of a call, and the indexed set of active hook providers.

This is the bottom layer of harness: it imports nothing of harness, so every protocol core, RPC interface, fault
family and Twisted edge can build on it without a cycle.

A *hook point* is a place where a service asks the active faults what to do. It is declared once, with
``@hookspec``, on a stub whose signature is the hook's typed arguments (after the ``Scope``) and whose return
annotation is its answer type::

    @hookspec(fires_in="services/tls.py", means="the TLS profile served instead of the default one")
    def tls_profile_hook(host: str) -> TlsProfile: ...

The stub is named ``<hook>_hook`` (so it never shadows a module or function of the core); the hook's name drops the
suffix. The rule for where a hook is declared: **in the module that defines its answer type** (the protocol core whose
message it answers), so the answer and the question always live together. A provider (a fault) answers a hook by
defining ``on_<name>(self, scope, <the hook's arguments>)``; a provider method naming no declared hook is refused
when the class is registered (see ``check_provider``).

``faults.first(tls_profile_hook, scope, host)`` asks the providers that can apply to ``scope`` in the order they were
added and returns the first non-None answer, typed as the hook's answer type.
"""
from __future__ import annotations

import difflib
import inspect
import typing
import weakref
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    Iterable,
    Iterator,
    List,
    Optional,
    ParamSpec,
    Protocol,
    Tuple,
    TypeVar,
    Union,
)

P = ParamSpec("P")
R = TypeVar("R")

PREFIX = "on_"       # a provider's method answering hook <name> is on_<name>
SUFFIX = "_hook"     # the declaring stub of hook <name> is <name>_hook


@dataclass(frozen=True)
class Scope:
    """Who a hook call is about; providers scoped to another host or user are never consulted."""
    host: Optional[str] = None
    user: Optional[str] = None      # the mailbox's e-mail address, when known


class HookError(TypeError):
    """A provider does not fit the hook points: an unknown hook name, a wrong arity, an answer of the wrong type."""


class Hook(Generic[P, R]):
    """One declared hook point: its name, typed arguments (``P``) and answer type (``R``)."""

    def __init__(self, name: str, fires_in: str, means: str, params: Tuple[str, ...],
                 answer: Tuple[type, ...], answer_text: str, signature: str = ""):
        self.name = name
        self.signature = signature      # "(scope, host: str)", for the docs
        self.declared_in = ""           # the module of the stub
        self.method = PREFIX + name
        self.fires_in = fires_in
        self.means = means
        self.params = params
        self.answer = answer
        self.answer_text = answer_text

    def __repr__(self) -> str:
        return f"<hook {self.name}({', '.join(('scope',) + self.params)}) -> {self.answer_text}>"

    def check_answer(self, provider: object, answer: object) -> None:
        if not isinstance(answer, self.answer):
            raise HookError(f"{type(provider).__name__}.{self.method} answered {type(answer).__name__}; "
                            f"the {self.name!r} hook's answer is {self.answer_text}")


HOOKS: Dict[str, Hook[Any, Any]] = {}


def hookspec(fires_in: str, means: str) -> Callable[[Callable[P, R]], Hook[P, R]]:
    """Declare a hook point from a stub: its parameters are the hook's arguments after the scope, its return
    annotation the answer type (a class or a Union of classes)."""

    def declare(stub: Callable[P, R]) -> Hook[P, R]:
        if not stub.__name__.endswith(SUFFIX):
            raise HookError(f"hook stub {stub.__name__!r} must be named <hook>{SUFFIX}")
        name = stub.__name__[:-len(SUFFIX)]
        if name in HOOKS:
            raise HookError(f"hook {name!r} declared twice ({HOOKS[name].fires_in} and {fires_in})")
        hints = typing.get_type_hints(stub)
        answer = hints.get("return")
        if answer is None:
            raise HookError(f"hook {name!r} needs a return annotation: its answer type")
        classes = tuple(typing.get_args(answer)) if typing.get_origin(answer) is Union else (answer,)
        params = tuple(inspect.signature(stub).parameters)
        text = " or ".join(c.__name__ for c in classes)
        typed = ", ".join(["scope"] + [f"{p}: {_type_text(hints[p])}" for p in params])
        hook: Hook[P, R] = Hook(name, fires_in, means, params, classes, text, f"({typed})")
        hook.declared_in = stub.__module__
        HOOKS[name] = hook
        return hook

    return declare


def _type_text(annotation: Any) -> str:
    if typing.get_origin(annotation) is Union:
        args = typing.get_args(annotation)
        inner = [a for a in args if a is not type(None)]
        text = " | ".join(_type_text(a) for a in inner)
        return f"Optional[{text}]" if len(inner) < len(args) else text
    return str(getattr(annotation, "__name__", annotation))


class Provider(Protocol):
    """What a HookSet holds: a named object scoped to a host and/or user (faults are providers)."""
    name: str
    host: Optional[str]
    user: Optional[str]


def provided_hooks(cls: type) -> List[str]:
    """The hook names ``cls`` answers, from its ``on_<name>`` methods (read once per class: a fuzz run builds its
    faults anew for every example, and ``dir`` lists every attribute)."""
    found = _PROVIDED.get(cls)
    if found is None:
        found = _PROVIDED[cls] = tuple(attr[len(PREFIX):] for attr in dir(cls)
                                       if attr.startswith(PREFIX) and callable(getattr(cls, attr)))
    return list(found)


_PROVIDED: "weakref.WeakKeyDictionary[type, Tuple[str, ...]]" = weakref.WeakKeyDictionary()


def check_provider(cls: type, known: Optional[Dict[str, Hook[Any, Any]]] = None) -> None:
    """Refuse a provider class whose ``on_*`` methods name no declared hook or take other arguments than it does.

    ``known`` defaults to every hook declared so far; callers make sure the declaring modules are imported."""
    hooks = HOOKS if known is None else known
    for name in provided_hooks(cls):
        hook = hooks.get(name)
        if hook is None:
            near = difflib.get_close_matches(name, list(hooks), n=1)
            hint = f" (did you mean on_{near[0]}?)" if near else ""
            raise HookError(f"{cls.__name__}.{PREFIX}{name} names no hook point{hint}; "
                            f"hooks: {', '.join(sorted(hooks))}")
        parameters = list(inspect.signature(getattr(cls, hook.method)).parameters.values())[1:]   # after self
        if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
            continue
        params = [p.name for p in parameters]
        if len(params) != 1 + len(hook.params):
            raise HookError(f"{cls.__name__}.{hook.method} takes ({', '.join(params)}); the hook passes "
                            f"(scope, {', '.join(hook.params)})")


Record = Callable[..., Any]
_Bucket = List[Tuple[Provider, Callable[..., Any]]]
_Asked = Tuple[Tuple[Provider, Callable[..., Any]], ...]


MAX_REMEMBERED_SCOPES = 4096   # (hook, host, user) -> providers asked, remembered by a FaultSet (hosts are clients')


class FaultSet:
    """Active providers indexed by hook and by scope (host, user): a hook nobody answers costs one dict lookup, and
    only providers that can apply to the call's host/user are asked. Which ones those are is remembered per (hook,
    host, user) until the set changes: with a thousand scoped faults loaded, a request none of them concerns costs
    a lookup. Mutated only on the reactor thread."""

    def __init__(self, providers: Iterable[Provider] = (), record: Optional[Record] = None):
        self._record: Record = record or (lambda kind, **fields: None)
        self._providers: List[Provider] = []
        self._index: Dict[str, Dict[Tuple[Optional[str], Optional[str]], _Bucket]] = {}
        self._asked_memo: Dict[Tuple[str, Optional[str], Optional[str]], _Asked] = {}
        for provider in providers:
            self.add(provider)

    def __iter__(self) -> Iterator[Provider]:
        return iter(list(self._providers))

    def __len__(self) -> int:
        return len(self._providers)

    def add(self, provider: Provider) -> None:
        self._asked_memo = {}
        self._providers.append(provider)
        for name in provided_hooks(type(provider)):
            bucket = self._index.setdefault(name, {}).setdefault((provider.host, provider.user), [])
            bucket.append((provider, getattr(provider, PREFIX + name)))

    def remove(self, name: str) -> int:
        """Remove every active provider with this name; returns how many were removed."""
        keep = [p for p in self._providers if p.name != name]
        removed = len(self._providers) - len(keep)
        self.replace(keep)
        return removed

    def replace(self, providers: Iterable[Provider]) -> None:
        self._providers, self._index, self._asked_memo = [], {}, {}
        for provider in providers:
            self.add(provider)

    def _asked(self, hook: Hook[Any, Any], scope: Scope) -> _Asked:
        return self._asked_about(hook.name, scope.host, scope.user)

    def _asked_about(self, name: str, host: Optional[str], user: Optional[str]) -> _Asked:
        buckets = self._index.get(name)
        if not buckets:
            return ()
        key = (name, host, user)
        asked = self._asked_memo.get(key)
        if asked is None:
            asked = self._find(buckets, host, user)
            if len(self._asked_memo) >= MAX_REMEMBERED_SCOPES:
                self._asked_memo = {}
            self._asked_memo[key] = asked
        return asked

    def _find(self, buckets: Dict[Tuple[Optional[str], Optional[str]], _Bucket], host: Optional[str],
              user: Optional[str]) -> _Asked:
        host = host.lower() if host else None
        user = user.lower() if user else None
        found: _Bucket = []
        for key in {(None, None), (host, None), (None, user), (host, user)}:
            if key in buckets and (key[0] is None or host) and (key[1] is None or user):
                found.extend(buckets[key])
        if len(found) > 1:
            order = {id(p): i for i, p in enumerate(self._providers)}
            found.sort(key=lambda entry: order[id(entry[0])])
        return tuple(found)

    def candidates(self, hook: Hook[Any, Any], scope: Scope) -> List[Provider]:
        """The providers of ``hook`` that can apply to ``scope``, in the order they were added."""
        return [provider for provider, _ in self._asked(hook, scope)]

    def first(self, hook: Hook[P, R], scope: Scope, *args: P.args, **kwargs: P.kwargs) -> Optional[R]:
        """The answer of the first applicable provider that answers (not None); each firing is recorded."""
        for provider, method in self._asked(hook, scope):
            answer = method(scope, *args, **kwargs)
            if answer is not None:
                hook.check_answer(provider, answer)
                self._record("fault", fault=provider.name, hook=hook.name, host=scope.host, user=scope.user,
                             effect=describe_answer(answer))
                return typing.cast(R, answer)
        return None

    def has(self, hook: Hook[Any, Any]) -> bool:
        return bool(self._index.get(hook.name))

    def concern(self, hook: Hook[Any, Any], host: Optional[str] = None, user: Optional[str] = None) -> bool:
        """Whether some provider of ``hook`` may apply to a call about this host and user: when none does, a caller
        need not build the Scope and the hook's arguments (``first`` would answer None)."""
        return bool(self._asked_about(hook.name, host, user))


def describe_answer(answer: object) -> str:
    """What the transcript says a firing did: the answer's own ``describe()``; answers are value objects that never
    carry credentials, and a repr is never written (it could)."""
    describe = getattr(answer, "describe", None)
    if callable(describe):
        return str(describe())
    return type(answer).__name__
