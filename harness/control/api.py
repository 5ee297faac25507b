"""The control API: a route table and its operations on a running MockExchange, JSON in and out.

Every operation runs on the reactor thread inside one request, and builds and checks everything before it changes
the active faults (one ``FaultSet.replace``): a client sees each apply or clear whole or not at all.

Errors are JSON ``{"error": text, "errors": [{"source", "line", "field", "message", "hint"}]}``; a scenario or fault
that fails validation gives the very messages `mockex scenarios validate` gives for a file.
"""
from __future__ import annotations

import hmac
import json
import os
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import parse_qsl

from twisted.internet import defer

from harness.protocols.http import HttpRequest, HttpResponse
from harness.scenario import FaultSpec, Scenario, builtin_scenarios, inline_scenario, parse_fault, resolve
from harness.yamlfile import SpecError, SpecErrors

WAIT_DEFAULT = 30.0     # seconds a /events/wait holds when the client names no timeout
WAIT_MAX = 300.0        # and at most
MAX_WAITERS = 64        # long polls held at once; more get 503
EVENTS_LIMIT = 1000     # events one /events answer carries at most (page on with ``after``)
CHECKED_FAULTS = 1024   # inline faults remembered as checked (by their canonical JSON)
CHECKED_SIZE = 4096     # a fault longer than this as JSON is checked each time (its key would cost as much)


@dataclass(frozen=True)
class Query:
    name: str
    kind: str          # "integer", "number" or "string" (the OpenAPI type)
    help: str


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    operation: str                  # the ControlApi method answering it
    summary: str
    query: Tuple[Query, ...] = ()
    body: Optional[Dict[str, Any]] = None      # JSON schema of the request body
    answer: Dict[str, Any] = field(default_factory=lambda: {"type": "object"})


_STR = {"type": "string"}
_EVENT = {"type": "object", "description": "a transcript event: seq, time, kind and the kind's fields"}
_APPLIED = {"type": "object", "properties": {"id": _STR, "kind": {"enum": ["scenario", "fault"]}, "name": _STR,
                                             "faults": {"type": "array", "items": _STR}}}
_FILTER = (Query("after", "integer", "only events with a larger seq (default 0: from the start)"),
           Query("kind", "string", "only these kinds, comma-separated (repeatable)"),
           Query("match.FIELD", "string", "only events whose FIELD equals this value (repeatable)"))

ROUTES: Tuple[Route, ...] = (
    Route("GET", "/info", "info", "the server: pid, seed, org, active faults, what the control plane applied",
          answer={"type": "object", "properties": {
              "pid": {"type": "integer"}, "seed": {"type": "integer"}, "org": _STR, "last_seq": {"type": "integer"},
              "scenarios": {"type": "array", "items": _STR}, "faults": {"type": "array", "items": _STR},
              "applied": {"type": "array", "items": _APPLIED}, "transcript": _STR}}),
    Route("GET", "/scenarios", "scenarios", "the built-in scenarios, and what the control plane applied",
          answer={"type": "object", "properties": {"builtin": {"type": "array", "items": {"type": "object"}},
                                                   "applied": {"type": "array", "items": _APPLIED}}}),
    Route("POST", "/apply", "apply", "apply a scenario's faults (built-in name, file on the server's machine, or "
                                     "given inline as a name and a file's faults list) or one fault with "
                                     "parameters; applying the same again replaces it",
          body={"type": "object", "oneOf": [
              {"required": ["scenario"], "properties": {"scenario": _STR}},
              {"required": ["name", "faults"], "properties": {"name": _STR, "faults": {
                  "type": "array", "description": "as a scenario file's faults: NAME or {NAME: {params}}",
                  "items": {"oneOf": [_STR, {"type": "object"}]}}}},
              {"required": ["fault"], "properties": {"fault": _STR, "params": {"type": "object"}}}]},
          answer={"type": "object", "properties": {"applied": _APPLIED, "faults": {"type": "array", "items": _STR}}}),
    Route("POST", "/clear", "clear", "remove what the control plane applied: by id or name, or everything",
          body={"type": "object", "properties": {"name": {**_STR, "description": "an applied id or name; "
                                                                                 "absent: everything"}}},
          answer={"type": "object", "properties": {"cleared": {"type": "array", "items": _STR},
                                                   "faults": {"type": "array", "items": _STR}}}),
    Route("POST", "/reset", "reset", "the scenario state of the start: initial faults back, steps re-armed, "
                                     "everything applied live removed (as SIGHUP)",
          answer={"type": "object", "properties": {"faults": {"type": "array", "items": _STR}}}),
    Route("GET", "/events", "events", "recorded transcript events, oldest first",
          query=_FILTER + (Query("limit", "integer", f"at most this many (default and cap {EVENTS_LIMIT})"),),
          answer={"type": "object", "properties": {"events": {"type": "array", "items": _EVENT},
                                                   "last_seq": {"type": "integer"}}}),
    Route("GET", "/events/wait", "wait", "the first event after `after` matching the filter, waiting for it up to "
                                         "`timeout` seconds; `event` is null when none came",
          query=_FILTER + (Query("timeout", "number", f"seconds to wait (default {WAIT_DEFAULT:g}, "
                                                      f"at most {WAIT_MAX:g})"),),
          answer={"type": "object", "properties": {"event": {**_EVENT, "nullable": True},
                                                   "last_seq": {"type": "integer"}}}),
)


class ApiError(Exception):
    def __init__(self, status: int, message: str, errors: Optional[List[Dict[str, Any]]] = None):
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors or []


REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 413: "Request Entity Too Large", 503: "Service Unavailable"}


def json_response(status: int, body: Any, headers: Optional[List[Tuple[str, str]]] = None) -> HttpResponse:
    data = (json.dumps(body, indent=1, default=str) + "\n").encode("utf-8")
    return HttpResponse(status, REASONS.get(status, ""), [("Content-Type", "application/json"),
                                                          ("Cache-Control", "no-store"), *(headers or [])], data)


def spec_errors(exc: SpecError) -> List[Dict[str, Any]]:
    found = exc.errors if isinstance(exc, SpecErrors) else [exc]
    return [{"source": e.path, "line": e.line, "field": e.field, "message": e.message, "hint": e.hint}
            for e in found]


@dataclass
class Applied:
    id: str
    kind: str
    name: str
    faults: list
    texts: List[str] = field(init=False)   # the faults' describe(), said once (the transcript, the answer, /info)

    def __post_init__(self) -> None:
        self.texts = [f.describe() for f in self.faults]

    def describe(self) -> Dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "name": self.name, "faults": list(self.texts)}


@dataclass
class Filter:
    after: int = 0
    kinds: Tuple[str, ...] = ()
    match: Dict[str, str] = field(default_factory=dict)

    def accepts(self, event: Dict[str, Any]) -> bool:
        if event.get("seq", 0) <= self.after or (self.kinds and event.get("kind") not in self.kinds):
            return False
        return all(_same(event.get(name), wanted) for name, wanted in self.match.items())


def _same(value: Any, wanted: str) -> bool:
    return value == wanted or (not isinstance(value, str) and value is not None and json.dumps(value) == wanted)


class ControlApi:
    """Routes requests to operations on ``server`` (a started MockExchange); ``token`` is the bearer secret."""

    def __init__(self, server: Any, token: str, clock: Any):
        self.server, self.token, self.clock = server, token, clock
        self.applied: List[Applied] = []
        self._waiters: List[Tuple[Filter, defer.Deferred, Any]] = []
        self._routes = {(r.method, r.path): r for r in ROUTES}
        self._checked: Dict[str, FaultSpec] = {}   # canonical JSON of an inline fault -> its checked spec
        server.transcript.listeners.append(self._on_event)

    def close(self) -> None:
        if self._on_event in self.server.transcript.listeners:
            self.server.transcript.listeners.remove(self._on_event)
        for _filter, waiting, timer in self._waiters:
            timer.cancel()
            waiting.callback(self._waited(None))
        self._waiters = []

    # ---- HTTP --------------------------------------------------------------------------------------------------
    def handle(self, request: HttpRequest) -> Union[HttpResponse, defer.Deferred]:
        if not self._authorized(request.header("authorization") or ""):
            return json_response(401, {"error": "a valid bearer token is required (see endpoints.json: control)"},
                                 [("WWW-Authenticate", 'Bearer realm="mockex-control"')])
        route = self._routes.get((request.method, request.path))
        if route is None:
            allowed = [r.method for r in ROUTES if r.path == request.path]
            if allowed:
                return json_response(405, {"error": f"{request.method} is not allowed here"},
                                     [("Allow", ", ".join(allowed))])
            return json_response(404, {"error": f"no such route {request.path}",
                                       "routes": [f"{r.method} {r.path}" for r in ROUTES]})
        try:
            query = parse_qsl(request.query, keep_blank_values=True)
            body = self._body(request) if route.body is not None else {}
            answer = getattr(self, route.operation)(query, body)
        except ApiError as exc:
            return json_response(exc.status, {"error": exc.message, "errors": exc.errors})
        if isinstance(answer, defer.Deferred):
            return answer.addCallback(lambda value: json_response(200, value))
        return json_response(200, answer)

    def _authorized(self, header: str) -> bool:
        scheme, _, presented = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), self.token.encode())

    @staticmethod
    def _body(request: HttpRequest) -> Dict[str, Any]:
        if not request.body.strip():
            return {}
        try:
            body = json.loads(request.body)
        except ValueError as exc:
            raise ApiError(400, f"the body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        return body

    # ---- operations ---------------------------------------------------------------------------------------------
    def info(self, query: list, body: dict) -> Dict[str, Any]:
        server = self.server
        return {"pid": os.getpid(), "seed": server.options.seed, "org": server.org.domain,
                "scenarios": [s.name for s in server.scenarios], "faults": self._active(),
                "applied": [a.describe() for a in self.applied], "last_seq": server.transcript.last_seq,
                "transcript": server.transcript.path}

    def scenarios(self, query: list, body: dict) -> Dict[str, Any]:
        return {"builtin": [{"name": s.name, "summary": s.summary, "layers": s.layers, "steps": len(s.steps)}
                            for s in builtin_scenarios()],
                "applied": [a.describe() for a in self.applied]}

    def apply(self, query: list, body: dict) -> Dict[str, Any]:
        entry = self._build(body)
        kept = [a for a in self.applied if a.id != entry.id]
        replaced = [a for a in self.applied if a.id == entry.id]
        self._set_faults(self._without(replaced) + entry.faults)
        self.applied = kept + [entry]
        self.server.transcript.record("control", action="apply", id=entry.id, applied=list(entry.texts),
                                      removed=[text for a in replaced for text in a.texts])
        return {"applied": entry.describe(), "faults": self._active()}

    def clear(self, query: list, body: dict) -> Dict[str, Any]:
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise ApiError(400, "name: expected a string")
        gone = [a for a in self.applied if name is None or name in (a.id, a.name)]
        if name is not None and not gone:
            raise ApiError(404, f"{name!r} is not applied", [{"field": "name", "message": "not applied",
                                                             "hint": "applied: " + (", ".join(
                                                                 a.id for a in self.applied) or "nothing")}])
        self._set_faults(self._without(gone))
        self.applied = [a for a in self.applied if a not in gone]
        self.server.transcript.record("control", action="clear", ids=[a.id for a in gone],
                                      removed=[text for a in gone for text in a.texts])
        return {"cleared": [a.id for a in gone], "faults": self._active()}

    def reset(self, query: list, body: dict) -> Dict[str, Any]:
        self.server.steps.reset()   # its `reset` event empties self.applied
        return {"faults": self._active()}

    def events(self, query: list, body: dict) -> Dict[str, Any]:
        wanted = self._filter(query)
        limit = _number(query, "limit", int, EVENTS_LIMIT)
        limit = max(1, min(limit, EVENTS_LIMIT))
        found = [e for e in self._recorded(wanted.after) if wanted.accepts(e)][:limit]
        return {"events": found, "last_seq": self.server.transcript.last_seq}

    def wait(self, query: list, body: dict) -> Union[Dict[str, Any], defer.Deferred]:
        wanted = self._filter(query)
        timeout = min(max(_number(query, "timeout", float, WAIT_DEFAULT), 0.0), WAIT_MAX)
        found = next((e for e in self._recorded(wanted.after) if wanted.accepts(e)), None)
        if found is not None or timeout == 0:
            return self._waited(found)
        if len(self._waiters) >= MAX_WAITERS:
            raise ApiError(503, f"{MAX_WAITERS} waits are open already")
        waiting: defer.Deferred = defer.Deferred()
        self._waiters.append((wanted, waiting, self.clock.callLater(timeout, self._expire, waiting)))
        return waiting

    # ---- helpers ------------------------------------------------------------------------------------------------
    def _build(self, body: Dict[str, Any]) -> Applied:
        """The faults a request names, built and checked; nothing is active yet."""
        server, seed = self.server, self.server.options.seed
        keys = set(body)
        if keys not in ({"scenario"}, {"name", "faults"}, {"fault"}, {"fault", "params"}):
            raise ApiError(400, 'name either {"scenario": NAME|FILE}, {"name": NAME, "faults": [...]} or '
                                '{"fault": NAME, "params": {...}}')
        try:
            if "faults" in body:   # a scenario file's content, without the file (no steps, no expect)
                scenario = self._inline(body["name"], body["faults"])
                entry = Applied(f"scenario:{scenario.name}", "scenario", scenario.name,
                                scenario.build_faults(seed))
            elif "scenario" in body:
                if not isinstance(body["scenario"], str):
                    raise ApiError(400, "scenario: expected a string")
                scenario = resolve(body["scenario"])
                if scenario.steps:
                    raise ApiError(400, f"scenario {scenario.name!r} has steps; steps run only in scenarios given "
                                        "at start (`mockex serve --scenario`)")
                if scenario.config is not None:
                    raise ApiError(400, f"scenario {scenario.name!r} changes the org's settings (config); settings "
                                        "apply only in scenarios given at start (`mockex serve --scenario`)")
                entry = Applied(f"scenario:{scenario.name}", "scenario", scenario.name,
                                scenario.build_faults(seed))
            else:
                params = body.get("params", {})
                spec = parse_fault(str(body["fault"]), {} if params is None else params, "fault")
                fault = spec.build(random.Random(f"{seed}:control:{spec.name}:{sorted(spec.params.items())}"))
                entry = Applied(f"fault:{fault.describe()}", "fault", spec.name, [fault])
        except SpecError as exc:
            raise ApiError(400, str(exc), spec_errors(exc)) from None
        for fault in entry.faults:
            if fault.host and "accept" in fault.hooks() and fault.host not in server.plan.dedicated:
                raise ApiError(400, f"{fault.describe()} acts at connect for {fault.host}, which has no address of "
                                    "its own in this run; give it at start (`mockex serve --scenario`)")
        return entry

    def _inline(self, name: Any, faults: Any) -> Scenario:
        """inline_scenario, each fault checked once: a fuzz run applies an example every few milliseconds, and the
        same faults come again and again (Hypothesis shrinks by sending them again). Only faults that passed are
        remembered, so a wrong one gets its messages every time."""
        keys = [_canonical(item) for item in faults] if isinstance(faults, list) else []
        known = [self._checked.get(key) for key in keys if key is not None]
        if not keys or len(known) < len(keys) or None in known:
            scenario = inline_scenario(name, faults, "faults")
            for key, spec in zip(keys, scenario.faults):
                if key is not None and key not in self._checked:
                    if len(self._checked) >= CHECKED_FAULTS:
                        self._checked.pop(next(iter(self._checked)))   # the oldest
                    self._checked[key] = spec
            return scenario
        scenario = inline_scenario(name, [], "faults")   # the name checked as ever
        scenario.faults = [spec for spec in known if spec is not None]
        return scenario

    def _without(self, entries: List[Applied]) -> list:
        gone = {id(f) for a in entries for f in a.faults}
        return [f for f in self.server.faults if id(f) not in gone]

    def _set_faults(self, faults: list) -> None:
        self.server.faults.replace(faults)

    def _active(self) -> List[str]:
        said = {id(f): text for a in self.applied for f, text in zip(a.faults, a.texts)}
        return [said.get(id(f)) or f.describe() for f in self.server.faults]

    @staticmethod
    def _filter(query: List[Tuple[str, str]]) -> Filter:
        kinds = tuple(k for name, value in query if name == "kind" for k in value.split(",") if k)
        match = {name[len("match."):]: value for name, value in query if name.startswith("match.")}
        return Filter(_number(query, "after", int, 0), kinds, match)

    def _recorded(self, after: int) -> List[Dict[str, Any]]:
        """Events after ``after``: read from the transcript file (the server keeps none in memory when it has one)."""
        transcript = self.server.transcript
        if not transcript.path:
            return [e for e in transcript.events if e["seq"] > after]
        found = []
        with open(transcript.path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue   # a line being written
                if event.get("seq", 0) > after:
                    found.append(event)
        return found

    def _on_event(self, event: Dict[str, Any]) -> None:
        if event["kind"] == "reset":
            self.applied = []
        for entry in list(self._waiters):
            wanted, waiting, timer = entry
            if wanted.accepts(event):
                self._waiters.remove(entry)
                timer.cancel()
                waiting.callback(self._waited(event))

    def _expire(self, waiting: defer.Deferred) -> None:
        self._waiters = [w for w in self._waiters if w[1] is not waiting]
        waiting.callback(self._waited(None))

    def _waited(self, event: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        return {"event": event, "last_seq": self.server.transcript.last_seq}


def _canonical(item: Any) -> Optional[str]:
    """A fault as written in an inline scenario, as one string (None: too long to be worth remembering)."""
    try:
        text = json.dumps(item, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None
    return text if len(text) <= CHECKED_SIZE else None


def _number(query: List[Tuple[str, str]], name: str, kind: Callable[[str], Any], default: Any) -> Any:
    values = [value for key, value in query if key == name]
    if not values:
        return default
    try:
        return kind(values[-1])
    except ValueError:
        raise ApiError(400, f"{name}: expected {'an integer' if kind is int else 'a number'}, "
                            f"got {values[-1]!r}") from None
