"""`mockex ctl`: the control API's command-line client (urllib), finding URL and token in endpoints.json."""
from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlencode

import yaml

CTL_EPILOG = """\
examples:
  mockex serve --control --state-dir ./state &
  mockex ctl apply auth-wrong-password               # a built-in scenario or a file (read by the server)
  mockex ctl apply --fault mailbox.server-busy backoff_ms=2000 --user alice@contoso.test
  mockex ctl clear auth-wrong-password               # or: clear (everything applied live)
  mockex ctl events --kind auth,fault --follow
  mockex ctl wait --kind auth --match result=failure --timeout 30

exit status: 0 done; 1 the wait timed out; 2 the server refused (the message says why); 3 unreachable.
"""


def add_ctl_parser(sub: Any) -> None:
    ctl = sub.add_parser("ctl", help="control a running `mockex serve --control`: apply/clear scenarios and faults, "
                                     "reset, read and wait for events",
                         description="Talk to the control API of a running `mockex serve --control`.",
                         epilog=CTL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ctl.add_mutually_exclusive_group()
    where.add_argument("--endpoints", metavar="FILE", help="the server's endpoints.json")
    where.add_argument("--state-dir", metavar="DIR", help="the server's state directory (default: ./state, or "
                                                          "$MOCKEX_ENDPOINTS when set)")
    actions = ctl.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("info", help="pid, seed, active faults, what was applied live")
    actions.add_parser("list", help="built-in scenarios and what was applied live")
    apply = actions.add_parser("apply", help="apply a scenario (NAME|FILE) or one fault (--fault NAME k=v ...)")
    apply.add_argument("items", nargs="*", default=[], metavar="NAME|FILE | PARAM=VALUE",
                       help="a scenario; or, with --fault, the fault's parameters (values are read as YAML: 2000, "
                            "true, [a, b])")
    apply.add_argument("--fault", metavar="NAME", help="one fault from the catalogue (`mockex faults`)")
    apply.add_argument("--user", help="scope the fault to this user (e-mail address)")
    apply.add_argument("--host", help="scope the fault to this host name")
    clear = actions.add_parser("clear", help="remove what was applied live: one id or name, or everything")
    clear.add_argument("name", nargs="?", metavar="ID|NAME")
    actions.add_parser("reset", help="back to the start's scenario state (as SIGHUP)")
    events = actions.add_parser("events", help="print transcript events as JSON lines")
    _add_filter(events)
    events.add_argument("--follow", action="store_true", help="keep printing new events until Ctrl-C")
    events.add_argument("--count", type=int, default=None, help="with --follow: stop after N events")
    wait = actions.add_parser("wait", help="wait for one event matching the filter; print it")
    _add_filter(wait)
    wait.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30, at most 300)")
    wait.add_argument("--new", action="store_true", help="only events recorded from now on")


def _add_filter(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--after", type=int, default=0, metavar="SEQ", help="only events with a larger seq")
    parser.add_argument("--kind", action="append", default=[], help="only these kinds (comma-separated, repeatable)")
    parser.add_argument("--match", action="append", default=[], metavar="FIELD=VALUE",
                        help="only events whose FIELD equals VALUE (repeatable)")


class CtlError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class Client:
    def __init__(self, url: str, token: str):
        self.url, self.token = url.rstrip("/"), token

    @classmethod
    def from_endpoints(cls, path: str) -> "Client":
        try:
            with open(path, encoding="utf-8") as handle:
                endpoints = json.load(handle)
        except OSError as exc:
            raise CtlError(3, f"cannot read {path}: {exc.strerror} (is `mockex serve --control` running?)") from None
        control = endpoints.get("control")
        if not control:
            raise CtlError(3, f"{path}: the server runs without --control")
        return cls(control["url"], control["token"])

    def call(self, method: str, path: str, body: Optional[Dict[str, Any]] = None,
             query: Optional[List[Tuple[str, str]]] = None, timeout: float = 30.0) -> Dict[str, Any]:
        url = self.url + path + ("?" + urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Authorization": f"Bearer {self.token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("error", "")
            except ValueError:
                detail = exc.reason
            raise CtlError(2, f"{exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise CtlError(3, f"cannot reach {self.url}: {getattr(exc, 'reason', exc)}") from None


def endpoints_path(args: argparse.Namespace) -> str:
    if args.endpoints:
        return args.endpoints
    if args.state_dir:
        return os.path.join(args.state_dir, "endpoints.json")
    return os.environ.get("MOCKEX_ENDPOINTS") or os.path.join(os.getcwd(), "state", "endpoints.json")


def fault_params(items: List[str], user: Optional[str], host: Optional[str]) -> Dict[str, Any]:
    params: Dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise CtlError(2, f"{item!r}: a parameter is written NAME=VALUE")
        params[name] = yaml.safe_load(text) if text else ""
    params.update({k: v for k, v in (("user", user), ("host", host)) if v})
    return params


def run_ctl(args: argparse.Namespace, out=sys.stdout) -> int:
    try:
        return _run(args, out)
    except CtlError as exc:
        print(f"mockex ctl: {exc}", file=sys.stderr)
        return exc.code


def _print(out, value: Any) -> None:
    print(json.dumps(value, indent=1), file=out, flush=True)


def _run(args: argparse.Namespace, out) -> int:
    if args.action is None:
        raise CtlError(2, "name an action: info, list, apply, clear, reset, events, wait (see `mockex ctl --help`)")
    client = Client.from_endpoints(endpoints_path(args))
    if args.action == "info":
        _print(out, client.call("GET", "/info"))
    elif args.action == "list":
        found = client.call("GET", "/scenarios")
        for scenario in found["builtin"]:
            print(f"{scenario['name']:<44} {','.join(scenario['layers']):<18} {scenario['summary']}", file=out)
        for applied in found["applied"]:
            print(f"applied: {applied['id']}", file=out)
    elif args.action == "apply":
        if args.fault is None:
            if len(args.items) != 1 or args.user or args.host:
                raise CtlError(2, "apply NAME|FILE, or apply --fault NAME [PARAM=VALUE ...] [--user U] [--host H]")
            ref = args.items[0]
            body: Dict[str, Any] = {"scenario": os.path.abspath(ref) if os.path.exists(ref) else ref}
        else:
            body = {"fault": args.fault, "params": fault_params(args.items, args.user, args.host)}
        _print(out, client.call("POST", "/apply", body))
    elif args.action == "clear":
        _print(out, client.call("POST", "/clear", {"name": args.name} if args.name else {}))
    elif args.action == "reset":
        _print(out, client.call("POST", "/reset"))
    elif args.action == "events":
        return _events(client, args, out)
    elif args.action == "wait":
        query = _filter(args)
        if args.new:
            query = [("after", str(client.call("GET", "/info")["last_seq"]))] + query[1:]
        answer = client.call("GET", "/events/wait", query=query + [("timeout", str(args.timeout))],
                             timeout=min(args.timeout, 300) + 30)
        if answer["event"] is None:
            print(f"mockex ctl: no matching event in {args.timeout:g} s", file=sys.stderr)
            return 1
        print(json.dumps(answer["event"]), file=out, flush=True)
    return 0


def _filter(args: argparse.Namespace) -> List[Tuple[str, str]]:
    query = [("after", str(args.after))] + [("kind", kind) for kind in args.kind]
    for item in args.match:
        name, sep, value = item.partition("=")
        if not sep:
            raise CtlError(2, f"--match {item!r}: write FIELD=VALUE")
        query.append((f"match.{name}", value))
    return query


def _events(client: Client, args: argparse.Namespace, out) -> int:
    """Print what is recorded; with --follow, long-poll for each next event (the seq moves the filter on)."""
    query = _filter(args)
    after, printed = args.after, 0
    while True:
        page = client.call("GET", "/events", query=[("after", str(after))] + query[1:])
        for event in page["events"]:
            if args.count is not None and printed >= args.count:
                return 0
            print(json.dumps(event), file=out, flush=True)
            printed += 1
            after = event["seq"]
        if not args.follow or (args.count is not None and printed >= args.count):
            return 0
        if page["events"]:
            continue   # a full page: read on before waiting
        answer = client.call("GET", "/events/wait", query=[("after", str(after))] + query[1:] + [("timeout", "30")],
                             timeout=60)
        event = answer["event"]
        if event is not None:
            print(json.dumps(event), file=out, flush=True)
            printed += 1
            after = event["seq"]
