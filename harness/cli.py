"""The `mockex` command line."""
from __future__ import annotations

import argparse
import gc
import os
import random
import re
import signal
import sys
from typing import TYPE_CHECKING, List, Optional, Tuple

from harness.faults.base import LAYERS
from harness.org import DEFAULT_ORG_DIR
from harness.transcript import DEFAULT_KEEP
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
  mockex sandbox -- exchanger.py 'CONTOSO/alice:P@ssw0rd-alice@mail.contoso.test' nspi list-tables
                                                 # :443/:80/:53 without root, for one command (see `sandbox --help`)
  mockex serve --transcript-max-bytes 100M       # long runs: rotate transcript.jsonl (.1 .2 .3 kept)

Everything a client needs (URLs, users, passwords, CA file) is printed at start and written to
<state-dir>/endpoints.json; every exchange is recorded in <state-dir>/transcript.jsonl.
"""


SANDBOX_DESCRIPTION = """\
Run one command in a private user + network + mount namespace (made without root where the kernel allows
unprivileged user namespaces) where the mock serves the org on 127.0.0.1:443 (HTTPS), :80 (HTTP) and :53 (DNS),
every program resolves the org's names through it (/etc/resolv.conf and /etc/hosts are replaced inside the namespace
only), and the CA is trusted through SSL_CERT_FILE, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS and CURL_CA_BUNDLE.
The mock starts first and stops when the command ends, on Ctrl-C, or when the parent of `mockex sandbox` dies.
Nothing else is reachable inside: only loopback exists there.
"""

SANDBOX_EPILOG = """\
examples:
  mockex sandbox -- curl --ntlm -u 'CONTOSO\\alice:P@ssw0rd-alice' https://autodiscover.contoso.test/autodiscover/autodiscover.xml
  mockex sandbox --scenario tls-expired -- node my-ews-client.js
  mockex sandbox --state-dir ./state -- python my_client.py     # keep the transcript

exit status: the command's (128+N if signal N ended it); 125 when the sandbox cannot be made (the message names
the setting that forbids user namespaces) or the mock does not start; 126 the command cannot run; 127 not found.
The command runs as root of the namespace (your own uid outside); $MOCKEX_ENDPOINTS names endpoints.json.
"""

HAR_DESCRIPTION = """\
Write every HTTP exchange of STATE_DIR's transcript (transcript.jsonl, and rotated transcript.jsonl.N before it)
as an HTTP Archive (HAR 1.2) that browser dev tools and HAR viewers open: method, URL, headers, query, status,
redirect target, sizes, timing, connection id and server address. Each entry's comment gives the connection's TLS
version and SNI and the authentication outcome of the request. Bodies are not in the transcript, so entries have
content size and type but no text; Authorization and Cookie headers stay masked as the transcript recorded them.

exit status: 0 written; 2 the state directory or its transcript cannot be read, or OUT cannot be written.
"""

MIN_TRANSCRIPT_BYTES = 4096
MAX_TRANSCRIPT_KEEP = 100
_SIZE = re.compile(r"(\d+)([KMG]?)", re.IGNORECASE | re.ASCII)


def transcript_max_bytes(text: str) -> Optional[int]:
    """--transcript-max-bytes: bytes, or KiB/MiB/GiB with a K/M/G suffix; 0 is no cap (None)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"--transcript-max-bytes {text!r}: expected a size in bytes, e.g. 50000000 or 50M")
    value = int(match.group(1)) * 1024 ** " KMG".index(match.group(2).upper() or " ")
    if 0 < value < MIN_TRANSCRIPT_BYTES:
        raise ValueError(f"--transcript-max-bytes {text!r}: at least {MIN_TRANSCRIPT_BYTES} bytes (0: no cap)")
    return value or None


def transcript_keep(text: str) -> int:
    """--transcript-keep: how many rotated files stay beside transcript.jsonl."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_TRANSCRIPT_KEEP:
        raise ValueError(f"--transcript-keep {text!r}: expected a number of files, 1..{MAX_TRANSCRIPT_KEEP}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is 0..65535 (0 = any free port)")
    return value


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The `mockex` parser; with ``only="serve"``, the top level with that command alone: what `mockex serve`
    parses, without building (and importing the modules of) every other command's parser on each start."""
    parser = argparse.ArgumentParser(prog="mockex", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from harness import __version__
    parser.add_argument("--version", action="version", version=f"mockex {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="serve an org (Autodiscover, RPC over HTTP, redirect, DNS) until Ctrl-C",
                           description="Serve an Exchange 2013 org on loopback until Ctrl-C or SIGTERM.",
                           epilog=SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--state-dir", default=os.path.join(os.getcwd(), "state"), metavar="DIR",
                       help="where the CA, certificates, endpoints.json and transcript.jsonl go (default: ./state)")
    serve.add_argument("--listen", default="127.0.0.1", metavar="ADDR",
                       help="address for every listener (default 127.0.0.1; non-loopback needs --allow-remote)")
    serve.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --listen address")
    record = serve.add_argument_group("transcript size (it grows ~1.45 KB per Autodiscover request)")
    record.add_argument("--transcript-max-bytes", default="0", metavar="SIZE",
                        help="before transcript.jsonl passes SIZE bytes (K, M, G: KiB, MiB, GiB; at least "
                             f"{MIN_TRANSCRIPT_BYTES}) it becomes transcript.jsonl.1 and a fresh file starts "
                             "(default 0: no cap)")
    record.add_argument("--transcript-keep", default=str(DEFAULT_KEEP), metavar="N",
                        help=f"rotated files kept, .1 the newest; older ones are deleted (1..{MAX_TRANSCRIPT_KEEP}, "
                             f"default {DEFAULT_KEEP})")
    record.add_argument("--rpc-capture", action="store_true",
                        help="record the inner DCE/RPC PDUs of every RPC over HTTP virtual connection in "
                             "STATE_DIR/rpc/ for `mockex export pcap` (files 0600: they hold NTLM exchanges)")
    serve.add_argument("--rpc-out-framing", choices=("exchange2013", "legacy"), default="exchange2013",
                       help="how RPC_OUT_DATA's 200 carries the PDUs: exchange2013 (default; Transfer-Encoding: "
                            "chunked, one PDU per chunk, as Exchange 2013's front end) or legacy (IIS rpcproxy of "
                            "2007/2010: Content-Length: 1073741824, raw PDUs)")
    serve.add_argument("--https-port", type=_port, default=8443, help="HTTPS (CAS) port (default 8443; 0 = any)")
    serve.add_argument("--http-port", type=_port, default=8080,
                       help="plain HTTP redirect port, the port-80 role (default 8080; 0 = any)")
    serve.add_argument("--dns-port", type=_port, default=5353, help="DNS port, UDP and TCP (default 5353; 0 = any)")
    serve.add_argument("--epm-port", type=_port, default=None,
                       help="serve the RPC endpoint mapper on this TCP port (135 where the mock has an address of its "
                            "own; 0 = any; default off): it registers no Exchange interface, as Exchange 2013")
    serve.add_argument("--ews-schema-dir", metavar="DIR", default=os.environ.get("MOCKEX_EWS_SCHEMA_DIR") or None,
                       help="serve Microsoft's EWS schema from DIR (Services.wsdl, messages.xsd, types.xsd, fetched "
                            "from an Exchange server: docs/ews.md) at /EWS/ as Exchange does (default: "
                            "$MOCKEX_EWS_SCHEMA_DIR when set, else not served)")
    _add_org_options(serve)
    serve.add_argument("--quiet", action="store_true", help="print only the endpoints.json path")
    control = serve.add_argument_group("control plane (see docs/control.md and `mockex ctl`)")
    control.add_argument("--control", action="store_true",
                         help="serve the control API (HTTP/JSON, bearer token) on loopback; its URL and token go to "
                              "endpoints.json under \"control\"")
    control.add_argument("--control-listen", default="127.0.0.1", metavar="ADDR",
                         help="its address: loopback only, whatever --allow-remote says (default 127.0.0.1)")
    control.add_argument("--control-port", type=_port, default=0, help="its port (default 0: any free port)")
    if only == "serve":
        return parser

    sandbox = sub.add_parser("sandbox", help="run one command against the org on the real ports 443/80/53, without "
                                             "root, in a private network namespace",
                             description=SANDBOX_DESCRIPTION, epilog=SANDBOX_EPILOG,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    sandbox.add_argument("--state-dir", default=None, metavar="DIR",
                         help="keep the CA, endpoints.json and transcript.jsonl here (default: a temporary "
                              "directory removed at exit)")
    _add_org_options(sandbox)
    sandbox.add_argument("--quiet", action="store_true", help="no banner on stderr (errors are still reported)")
    sandbox.add_argument("program", nargs=argparse.REMAINDER, metavar="-- CMD [ARG ...]",
                         help="the command to run inside, with its arguments")

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
    from harness.control.ctl import add_ctl_parser
    add_ctl_parser(sub)
    from harness.runner.cli import add_report_parser, add_run_parser
    add_run_parser(sub)
    add_report_parser(sub)
    from harness.fuzz.cli import add_fuzz_parser
    add_fuzz_parser(sub)
    org = sub.add_parser("org", help="the org fixture in Exchange's terms (Get-OutlookAnywhere, Get-ExchangeServer)")
    org_sub = org.add_subparsers(dest="action", metavar="ACTION")
    org_show = org_sub.add_parser("show", help="print the org as Get-ExchangeServer | fl and Get-OutlookAnywhere | fl "
                                               "would (see docs/org.md)")
    org_show.add_argument("--org", default=DEFAULT_ORG_DIR, metavar="DIR",
                          help="org fixture directory holding org.yaml (default: the built-in contoso.test)")
    faults = sub.add_parser("faults", help="the fault catalogue: every fault with its parameters")
    faults.add_argument("name", nargs="?", help="show one fault in full")
    export = sub.add_parser("export", help="write a state directory's transcript in another format (HAR, pcapng)",
                            description="Write what a mockex run recorded in a format other tools read.")
    export_sub = export.add_subparsers(dest="format", metavar="FORMAT")
    har = export_sub.add_parser("har", help="every HTTP exchange as an HTTP Archive (HAR 1.2)",
                                description=HAR_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    har.add_argument("state_dir", metavar="STATE_DIR", help="the --state-dir of a mockex serve (running or stopped)")
    har.add_argument("out", metavar="OUT.har", help="the file to write (- for stdout)")
    pcap = export_sub.add_parser("pcap", help="the RPC traffic `serve --rpc-capture` recorded, as pcapng",
                                 description="Each RPC over HTTP virtual connection's inner PDUs (RTS and DCE/RPC) "
                                             "as one synthetic TCP connection to port 135, which Wireshark/tshark "
                                             "dissect as DCE/RPC with NSPI, RFR and EMSMDB operation names. See "
                                             "docs/export.md.")
    pcap.add_argument("state_dir", metavar="STATE_DIR", help="the --state-dir of a `mockex serve --rpc-capture`")
    pcap.add_argument("out", metavar="OUT.pcapng", help="the file to write")
    return parser


def _mailbox_size(text: str) -> Tuple[str, int]:
    user, _, count = text.partition("=")
    if not user or not count.isdigit() or int(count) > 1_000_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not USER=N (N from 0 to 1000000)")
    return user, int(count)


def _add_org_options(parser: argparse.ArgumentParser) -> None:
    """What the mock serves and how it treats connections: shared by `serve` and `sandbox` (which passes them on
    to the `mockex serve` it starts; keep MOCK_OPTIONS in step)."""
    parser.add_argument("--org", default=DEFAULT_ORG_DIR, metavar="DIR",
                        help="org fixture directory holding org.yaml (default: the built-in contoso.test)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed for every random choice, to replay a run exactly (default: the scenario's seed, "
                             "else a fresh random seed per start, printed and recorded, so NTLM challenges never "
                             "repeat across runs)")
    parser.add_argument("--scenario", action="append", default=[], metavar="NAME|FILE",
                        help="activate a scenario (a built-in name or a YAML file); repeatable. "
                             "`kill -HUP <pid>` resets scenario state without a restart")
    parser.add_argument("--keylog", metavar="FILE", type=os.path.abspath,
                        default=os.environ.get("SSLKEYLOGFILE") or None,
                        help="append every TLS session's secrets to FILE (NSS key log format, mode 0600), so "
                             "Wireshark/tshark decrypt a capture (default: $SSLKEYLOGFILE when set)")
    # harness.protocols.tls's TLS_VERSIONS, spelt out: importing it here would load cryptography for every command
    parser.add_argument("--tls-max", choices=("1.0", "1.1", "1.2", "1.3"), default=None, metavar="VERSION",
                        help="the highest TLS version served: 1.0, 1.1, 1.2 or 1.3 (default 1.2, as Exchange 2013 on "
                             "Windows Server 2012 R2; 1.3 for a newer server). A tls.protocol-version fault's `max` "
                             "overrides it for its hosts")
    parser.add_argument("--mailbox-size", action="append", default=[], metavar="USER=N", type=_mailbox_size,
                        help="N generated messages in USER's Inbox (a user name or address), for paging at scale; "
                             "repeatable")
    limits = parser.add_argument_group("connection limits (as IIS/http.sys; 0 switches a limit off)")
    limits.add_argument("--idle-timeout", type=float, default=120.0, metavar="S",
                        help="close a connection with no request for S seconds (IIS connectionTimeout; default 120)")
    limits.add_argument("--header-wait-timeout", type=float, default=120.0, metavar="S",
                        help="close a connection whose request head is not whole after S seconds (http.sys "
                             "HeaderWait; default 120)")
    limits.add_argument("--tls-handshake-timeout", type=float, default=60.0, metavar="S",
                        help="reset a TLS connection whose handshake is not done after S seconds (default 60)")
    limits.add_argument("--send-timeout", type=float, default=120.0, metavar="S",
                        help="reset a connection whose client takes none of its answers for S seconds (IIS "
                             "connectionTimeout; default 120)")
    limits.add_argument("--max-connections-per-address", type=int, default=0, metavar="N",
                        help="reset connections beyond N open from one client address (default 0: no cap)")


# (option, attribute) of _add_org_options, in the order `sandbox` hands them to `mockex serve`
MOCK_OPTIONS = [("--org", "org"), ("--seed", "seed"), ("--keylog", "keylog"), ("--tls-max", "tls_max"),
                ("--idle-timeout", "idle_timeout"),
                ("--header-wait-timeout", "header_wait_timeout"), ("--tls-handshake-timeout", "tls_handshake_timeout"),
                ("--send-timeout", "send_timeout"),
                ("--max-connections-per-address", "max_connections_per_address")]


def mock_arguments(args: argparse.Namespace) -> List[str]:
    """The `mockex serve` arguments that give the org, scenarios, seed and limits of ``args``."""
    argv = [f"--scenario={ref}" for ref in args.scenario]
    argv += [f"--mailbox-size={user}={count}" for user, count in args.mailbox_size]
    for option, attribute in MOCK_OPTIONS:
        value = getattr(args, attribute)
        if value is not None:
            argv.append(f"{option}={value}")
    return argv


def main(argv: Optional[List[str]] = None) -> int:
    # Start-up only makes objects that live as long as the process (modules, classes, the parser, the org): the
    # cyclic collector would walk them again and again (about a tenth of `serve`'s start) and free nothing. It is
    # off until the command is under way (_collect_again); `python -m harness` turns it off before these imports.
    collecting = gc.isenabled()
    gc.disable()
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
    finally:
        if collecting:
            gc.enable()


def _collect_again(freeze: bool = False) -> None:
    """The cyclic collector back on for the command's own work; with ``freeze``, what start-up made is moved where
    no later collection walks it again (a server's full collections then scan only what requests make)."""
    if freeze:
        gc.freeze()
    gc.enable()


def _command_of(argv: List[str]) -> Optional[str]:
    """The command word of a command line (the top level's own options take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser(only="serve" if _command_of(sys.argv[1:] if argv is None else argv) == "serve" else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command != "serve":   # it turns the collector on itself, once its listeners are up
        _collect_again()
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "sandbox":
            return _sandbox(args, parser)
        if args.command == "scenarios":
            from harness import catalog_cli
            return catalog_cli.scenarios(args, parser)
        if args.command == "probe":
            from harness.probe.cli import run_probe
            return run_probe(args)
        if args.command == "ctl":
            from harness.control.ctl import run_ctl
            return run_ctl(args)
        if args.command == "run":
            from harness.runner.cli import run_command
            return run_command(args)
        if args.command == "fuzz":
            from harness.fuzz.cli import fuzz_command
            return fuzz_command(args)
        if args.command == "report":
            from harness.runner.cli import report_command
            return report_command(args)
        if args.command == "faults":
            from harness import catalog_cli
            return catalog_cli.faults(args)
        if args.command == "export":
            return _export(args, parser)
        if args.command == "org":
            if args.action != "show":
                parser.error("org: name the action: mockex org show [--org DIR]")
            from harness.org import load_org
            from harness.protocols.shell import org_show
            print(org_show(load_org(args.org)), end="")
            return 0
    except SpecError as exc:
        print(f"mockex: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2


def _export(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.format not in ("har", "pcap"):
        parser.error("export: name the format: mockex export har|pcap STATE_DIR OUT")
    from harness.export.har import ExportError, export_har
    if args.format == "pcap":
        from harness.export.pcap import export_pcap
        try:
            connections, pdus = export_pcap(args.state_dir, args.out)
        except (ExportError, OSError) as exc:
            print(f"mockex export: {exc}", file=sys.stderr)
            return 2
        print(f"{pdus} PDUs of {connections} RPC virtual connections written to {args.out}", file=sys.stderr)
        return 0
    try:
        count = export_har(args.state_dir, args.out)
    except ExportError as exc:
        print(f"mockex export: {exc}", file=sys.stderr)
        return 2
    if args.out != "-":
        print(f"{count} HTTP exchanges written to {args.out}", file=sys.stderr)
    return 0


def _serve(args) -> int:
    try:   # checked here, not by argparse: a bad value is one line, not the usage text
        max_bytes, keep = transcript_max_bytes(args.transcript_max_bytes), transcript_keep(args.transcript_keep)
    except ValueError as exc:
        print(f"mockex: {exc}", file=sys.stderr)
        return 2
    from twisted.internet import reactor

    from harness.org import load_org
    from harness.protocols.tls import EXCHANGE_2013_MAX_VERSION
    from harness.services.server import MockExchange, ServeOptions, is_loopback

    if not is_loopback(args.listen) and not args.allow_remote:
        print(f"mockex: --listen {args.listen} is not a loopback address; add --allow-remote if you mean it",
              file=sys.stderr)
        return 2
    control = None
    if args.control:
        from harness.control.service import ControlService
        try:
            control = ControlService(args.control_listen, args.control_port)
        except ValueError as exc:
            print(f"mockex: --control-listen: {exc}", file=sys.stderr)
            return 2
    org = load_org(args.org)
    if args.mailbox_size:   # the mailbox code loads only when asked for (or at a first request needing it)
        from harness.mailbox.store import sizes_by_email
        try:
            sizes_by_email(dict(args.mailbox_size), org.mailboxes)
        except ValueError as exc:
            print(f"mockex: --mailbox-size: {exc}", file=sys.stderr)
            return 2
    scenarios = []
    if args.scenario:
        from harness.scenario import resolve
        scenarios = [resolve(ref) for ref in args.scenario]
        from harness.scenario import configured_org
        configured_org(org, scenarios)   # a setting the org cannot take fails here, before anything listens
    seed = args.seed if args.seed is not None else next((s.seed for s in scenarios if s.seed is not None), None)
    schema_dir = os.path.abspath(args.ews_schema_dir) if args.ews_schema_dir else None
    if seed is None:  # a fixed default would repeat the NTLM server challenge, letting a captured logon replay
        seed = random.SystemRandom().randrange(1 << 31)
    server = MockExchange(org, ServeOptions(state_dir=os.path.abspath(args.state_dir), listen=args.listen,
                                            https_port=args.https_port, http_port=args.http_port,
                                            dns_port=args.dns_port, seed=seed,
                                            allow_remote=args.allow_remote, limits=_limits(args),
                                            keylog=args.keylog, tls_max=args.tls_max or EXCHANGE_2013_MAX_VERSION,
                                            rpc_capture=args.rpc_capture,
                                            transcript_max_bytes=max_bytes, transcript_keep=keep,
                                            mailbox_sizes=dict(args.mailbox_size),
                                            rpc_out_framing=args.rpc_out_framing, epm_port=args.epm_port,
                                            ews_schema_dir=schema_dir),
                           scenarios=scenarios, control=control)
    # endpoints.json tells a supervisor the server is up, before reactor.run() installs Twisted's handlers: a
    # SIGTERM/SIGINT/SIGHUP in that window must still end cleanly (or reset), not kill the process mid-write.
    def stop_soon(*_: object) -> None:
        reactor.callFromThread(lambda: reactor.running and reactor.stop())

    signal.signal(signal.SIGTERM, stop_soon)
    signal.signal(signal.SIGINT, stop_soon)
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(server.steps.reset))
    try:
        endpoints = server.start(reactor)
    except (OSError, ValueError) as exc:  # a port in use, a permission error: the message names address and port
        print(f"mockex: cannot start: {exc}", file=sys.stderr)
        return 1
    print(summary(endpoints, os.path.join(server.options.state_dir, "endpoints.json"), quiet=args.quiet), flush=True)
    _collect_again(freeze=True)
    reactor.run()  # installs SIGINT/SIGTERM handlers that stop the reactor cleanly
    server.transcript.record("stop")
    server.transcript.close()
    if not args.quiet:
        print("mockex: stopped", flush=True)
    return 0


def _sandbox(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from harness.sandbox import SETUP_FAILED, SandboxOptions, exec_sandbox, unavailable_reason
    from harness.scenario import resolve

    command = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not command:
        parser.error("sandbox: name the command to run: mockex sandbox [OPTIONS] -- CMD [ARG ...]")
    for ref in args.scenario:   # a misspelt scenario fails here, before any namespace is made
        resolve(ref)
    reason = unavailable_reason()
    if reason is not None:
        print(f"mockex sandbox: {reason}", file=sys.stderr)
        return SETUP_FAILED
    state_dir = os.path.abspath(args.state_dir) if args.state_dir else None
    exec_sandbox(SandboxOptions(command=command, serve_args=mock_arguments(args), state_dir=state_dir,
                                quiet=args.quiet))


def _limits(args: argparse.Namespace) -> "ConnectionLimits":
    from harness.protocols.httpconn import ConnectionLimits
    return ConnectionLimits(idle_timeout=args.idle_timeout or None,
                            header_wait_timeout=args.header_wait_timeout or None,
                            handshake_timeout=args.tls_handshake_timeout or None,
                            send_timeout=args.send_timeout or None,
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
    if "control" in endpoints:   # its token stays in endpoints.json (0600), never on the terminal
        lines.append(f"  control API   {endpoints['control']['url']}   (token in endpoints.json; `mockex ctl`)")
    lines += [f"  endpoints     {path}", f"  transcript    {endpoints['transcript']}",
              f"  try: curl --cacert {endpoints['ca_file']} --resolve {autodiscover}:{https['port']}:"
              f"{endpoints.get('addresses', {}).get(autodiscover, https['host'])} --ntlm "
              f"-u '{alice['domain']}\\{alice['username']}:{alice['password']}' -H 'Content-Type: text/xml' "
              f"-d @request.xml https://{autodiscover}:{https['port']}/autodiscover/autodiscover.xml",
              "Ctrl-C to stop."]
    return "\n".join(lines)
