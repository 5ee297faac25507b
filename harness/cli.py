"""The `mockex` command line."""
from __future__ import annotations

import argparse
import os
import random
import signal
import sys
from typing import TYPE_CHECKING, List, Optional

from harness.faults.base import LAYERS
from harness.org import DEFAULT_ORG_DIR
from harness.yamlfile import SpecError

if TYPE_CHECKING:
    from harness.protocols.httpconn import ConnectionLimits

DESCRIPTION = """\
mockex: a scriptable mock of Microsoft Exchange 2013 (Autodiscover, Outlook Anywhere / RPC over HTTP, DNS)
for testing the software that talks to Exchange. It serves the built-in org contoso.test unless told otherwise.
"""

SERVE_EPILOG = """\
examples:
  mockex serve                                   # contoso.test on 127.0.0.1 (https 8443, http 8080, dns 5353)
  mockex serve --https-port 0 --http-port 0 --dns-port 0 --state-dir /tmp/mx   # ephemeral ports
  sudo mockex serve --listen 127.0.0.2 --https-port 443 --http-port 80 --dns-port 53
  unshare -rn sh -c 'ip link set lo up; mockex serve --https-port 443'   # :443 without root (user+net namespace)

Everything a client needs (URLs, users, passwords, CA file) is printed at start and written to
<state-dir>/endpoints.json; every exchange is recorded in <state-dir>/transcript.jsonl.
"""


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is 0..65535 (0 = any free port)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mockex", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from harness import __version__
    parser.add_argument("--version", action="version", version=f"mockex {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="serve an org (Autodiscover, RPC over HTTP, redirect, DNS) until Ctrl-C",
                           description="Serve an Exchange 2013 org on loopback until Ctrl-C or SIGTERM.",
                           epilog=SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--org", default=DEFAULT_ORG_DIR, metavar="DIR",
                       help="org fixture directory holding org.yaml (default: the built-in contoso.test)")
    serve.add_argument("--state-dir", default=os.path.join(os.getcwd(), "state"), metavar="DIR",
                       help="where the CA, certificates, endpoints.json and transcript.jsonl go (default: ./state)")
    serve.add_argument("--listen", default="127.0.0.1", metavar="ADDR",
                       help="address for every listener (default 127.0.0.1; non-loopback needs --allow-remote)")
    serve.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --listen address")
    limits = serve.add_argument_group("connection limits (as IIS/http.sys; 0 switches a limit off)")
    limits.add_argument("--idle-timeout", type=float, default=120.0, metavar="S",
                        help="close a connection with no request for S seconds (IIS connectionTimeout; default 120)")
    limits.add_argument("--header-wait-timeout", type=float, default=120.0, metavar="S",
                        help="close a connection whose request head is not whole after S seconds (http.sys "
                             "HeaderWait; default 120)")
    limits.add_argument("--tls-handshake-timeout", type=float, default=60.0, metavar="S",
                        help="reset a TLS connection whose handshake is not done after S seconds (default 60)")
    limits.add_argument("--max-connections-per-address", type=int, default=0, metavar="N",
                        help="reset connections beyond N open from one client address (default 0: no cap)")
    serve.add_argument("--https-port", type=_port, default=8443, help="HTTPS (CAS) port (default 8443; 0 = any)")
    serve.add_argument("--http-port", type=_port, default=8080,
                       help="plain HTTP redirect port, the port-80 role (default 8080; 0 = any)")
    serve.add_argument("--dns-port", type=_port, default=5353, help="DNS port, UDP and TCP (default 5353; 0 = any)")
    serve.add_argument("--seed", type=int, default=None,
                       help="seed for every random choice, to replay a run exactly (default: the scenario's seed, "
                            "else a "
                            "fresh random seed per start, printed and recorded, so NTLM challenges never repeat "
                            "across runs)")
    serve.add_argument("--scenario", action="append", default=[], metavar="NAME|FILE",
                       help="activate a scenario (a built-in name or a YAML file); repeatable. "
                            "`kill -HUP <pid>` resets scenario state without a restart")
    serve.add_argument("--quiet", action="store_true", help="print only the endpoints.json path")

    scenarios = sub.add_parser("scenarios", help="list, show and validate scenarios (built-in or files)",
                               description="The built-in scenario library and scenario files.")
    scenario_sub = scenarios.add_subparsers(dest="action", metavar="ACTION")
    listing = scenario_sub.add_parser("list", help="name, layers and one-line effect of every built-in scenario")
    listing.add_argument("--layer", choices=LAYERS, help="only scenarios touching this layer")
    show = scenario_sub.add_parser("show", help="a scenario in full: faults, parameters, expected client symptoms")
    show.add_argument("scenario", metavar="NAME|FILE")
    check = scenario_sub.add_parser("validate", help="check scenario files; errors name file:line: field")
    check.add_argument("files", nargs="+", metavar="FILE")
    scenario_sub.add_parser("schema", help="print the JSON schema of scenario files")
    from harness.probe.cli import add_probe_parser
    add_probe_parser(sub)
    faults = sub.add_parser("faults", help="the fault catalogue: every fault with its parameters")
    faults.add_argument("name", nargs="?", help="show one fault in full")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()   # a pipe closed by the reader fails here, inside the handler, not at interpreter exit
        return code
    except BrokenPipeError:
        # `mockex scenarios list | head`: the reader left; say nothing more and exit as other Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


def _main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "scenarios":
            from harness import catalog_cli
            return catalog_cli.scenarios(args, parser)
        if args.command == "probe":
            from harness.probe.cli import run_probe
            return run_probe(args)
        if args.command == "faults":
            from harness import catalog_cli
            return catalog_cli.faults(args)
    except SpecError as exc:
        print(f"mockex: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2


def _serve(args) -> int:
    from twisted.internet import reactor

    from harness.org import load_org
    from harness.services.server import MockExchange, ServeOptions, is_loopback

    if not is_loopback(args.listen) and not args.allow_remote:
        print(f"mockex: --listen {args.listen} is not a loopback address; add --allow-remote if you mean it",
              file=sys.stderr)
        return 2
    org = load_org(args.org)
    scenarios = []
    if args.scenario:
        from harness.scenario import resolve
        scenarios = [resolve(ref) for ref in args.scenario]
    seed = args.seed if args.seed is not None else next((s.seed for s in scenarios if s.seed is not None), None)
    if seed is None:  # a fixed default would repeat the NTLM server challenge, letting a captured logon replay
        seed = random.SystemRandom().randrange(1 << 31)
    server = MockExchange(org, ServeOptions(state_dir=os.path.abspath(args.state_dir), listen=args.listen,
                                            https_port=args.https_port, http_port=args.http_port,
                                            dns_port=args.dns_port, seed=seed,
                                            allow_remote=args.allow_remote, limits=_limits(args)),
                           scenarios=scenarios)
    # endpoints.json tells a supervisor the server is up, before reactor.run() installs Twisted's handlers: a
    # SIGTERM/SIGINT/SIGHUP in that window must still end cleanly (or reset), not kill the process mid-write.
    def stop_soon(*_: object) -> None:
        reactor.callFromThread(lambda: reactor.running and reactor.stop())

    signal.signal(signal.SIGTERM, stop_soon)
    signal.signal(signal.SIGINT, stop_soon)
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(server.steps.reset))
    try:
        endpoints = server.start(reactor)
    except Exception as exc:  # a port in use or a permission error: say which, no traceback
        print(f"mockex: cannot start: {getattr(exc, 'socketError', None) or exc}", file=sys.stderr)
        return 1
    print(summary(endpoints, os.path.join(server.options.state_dir, "endpoints.json"), quiet=args.quiet), flush=True)
    reactor.run()  # installs SIGINT/SIGTERM handlers that stop the reactor cleanly
    server.transcript.record("stop")
    server.transcript.close()
    if not args.quiet:
        print("mockex: stopped", flush=True)
    return 0


def _limits(args: argparse.Namespace) -> "ConnectionLimits":
    from harness.protocols.httpconn import ConnectionLimits
    return ConnectionLimits(idle_timeout=args.idle_timeout or None,
                            header_wait_timeout=args.header_wait_timeout or None,
                            handshake_timeout=args.tls_handshake_timeout or None,
                            max_connections_per_address=args.max_connections_per_address or None)


def summary(endpoints: dict, path: str, quiet: bool = False) -> str:
    if quiet:
        return path
    https, http, dns = endpoints["https"], endpoints["http"], endpoints["dns"]
    autodiscover, alice = endpoints["hostnames"][1], endpoints["users"][0]
    lines = [
        f"mockex serving {endpoints['domain']} (seed {endpoints['seed']})",
        *(f"  scenario {name}" for name in endpoints["scenarios"]),
        *(f"  fault    {fault}" for fault in endpoints["faults"]),
        f"  HTTPS  {https['host']}:{https['port']}   names: {', '.join(endpoints['hostnames'])}",
        f"  HTTP   {http['host']}:{http['port']}   (302 redirect to Autodiscover)",
        f"  DNS    {dns['host']}:{dns['port']}   (authoritative for {endpoints['domain']}, UDP+TCP)",
        f"  Autodiscover  {endpoints['autodiscover_urls'][1]}",
        f"  RPC proxy     {endpoints['rpc_proxy_url']}",
        f"  CA file       {endpoints['ca_file']}   (trust it: curl --cacert FILE, REQUESTS_CA_BUNDLE=FILE)",
        "  users:",
    ]
    for user in endpoints["users"]:
        lines.append(f"    {user['email']:<28} {user['domain']}\\{user['username']:<10} password {user['password']}")
    lines += [f"  endpoints     {path}", f"  transcript    {endpoints['transcript']}",
              f"  try: curl --cacert {endpoints['ca_file']} --resolve {autodiscover}:{https['port']}:"
              f"{endpoints.get('addresses', {}).get(autodiscover, https['host'])} --ntlm "
              f"-u '{alice['domain']}\\{alice['username']}:{alice['password']}' -H 'Content-Type: text/xml' "
              f"-d @request.xml https://{autodiscover}:{https['port']}/autodiscover/autodiscover.xml",
              "Ctrl-C to stop."]
    return "\n".join(lines)
