"""`mockex probe`: the command line of the connectivity analyzer (harness/cli.py adds the parser and dispatches)."""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

PASSWORD_ENV = "MOCKEX_PROBE_PASSWORD"

DESCRIPTION = """\
Test Outlook connectivity for one mailbox, as Microsoft's Remote Connectivity Analyzer does for Outlook Anywhere:
Autodiscover in Outlook's order (https://<domain>, https://autodiscover.<domain>, the HTTP redirect method, the
_autodiscover._tcp SRV record; redirects followed, https only, at most 10), then for the Outlook Anywhere host:
DNS, TCP port, certificate (name, dates, chain trust, missing intermediate, key size, signature, TLS version),
the HTTP authentication methods on /rpc/rpcproxy.dll against the AuthPackage, an RPC proxy ping, an address book
bind and Check Name (6004), a referral (6002), a mailbox logon (6001) and the Inbox (list it, read a message).
When Autodiscover offers MAPI over HTTP (the probe says it can, as Outlook 2013 SP1 does), the MailStore URL's
DNS, port and certificate, Connect, the mailbox logon and the Inbox over /mapi/emsmdb instead. With --test ews, as
the analyzer's Exchange Web Services test instead: the EWS URL from Autodiscover, its DNS, port and certificate, the
HTTP authentication methods of /EWS/Exchange.asmx, GetFolder on the Inbox and a FindItem of a few items. Every
failure names the step, a reason id and what to do.

Credentials are sent only over TLS connections whose certificate passed validation, never over plain HTTP."""

EPILOG = f"""\
exit status: 0 every step passed, 1 a step failed, 2 usage error.

examples:
  mockex probe alice@contoso.test --password 'P@ssw0rd-alice' --dns 127.0.0.1:5353 --ca-file state/pki/root-ca.pem \\
      --port 8443 --http-port 8080
  mockex probe alice@contoso.test --proxy mail.contoso.test --skip-autodiscover --json
  {PASSWORD_ENV}=secret mockex probe alice@contoso.test --user 'CONTOSO\\alice'
  mockex probe alice@contoso.test --endpoints state/endpoints.json   # a running mock: ports, DNS, CA, password
  mockex probe alice@contoso.test --endpoints state/endpoints.json --test ews

The password comes from --password, else ${PASSWORD_ENV}, else the --endpoints file, else a prompt (on a terminal).
Reason ids, their steps and remedies: docs/probe.md. JSON schema: docs/probe.schema.json."""


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError("a port is 1..65535")
    return value


def _dns_server(text: str):
    try:
        from harness.probe.net import parse_server  # lazily: `mockex serve` builds this parser too
        return parse_server(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected IP[:PORT] of a DNS server ({exc})")


def add_probe_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("probe",
                                   help="test Autodiscover and Outlook Anywhere (or EWS) for a mailbox, step by step",
                                   description=DESCRIPTION, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("email", help="the mailbox's e-mail address (what Outlook is given)")
    who = parser.add_argument_group("credentials")
    who.add_argument("--password", help=f"the password (else ${PASSWORD_ENV}, else --endpoints, else a prompt)")
    who.add_argument("--user", metavar="LOGIN", help="logon name: DOMAIN\\user or a UPN (default: the e-mail address)")
    who.add_argument("--auth", choices=("NTLM", "Negotiate", "Basic"),
                     help="HTTP scheme to prefer for Autodiscover when offered (default NTLM, then Negotiate, Basic)")
    net = parser.add_argument_group("where to look")
    net.add_argument("--endpoints", metavar="FILE",
                     help="a running mock's endpoints.json: its DNS, CA file, https/http ports and the mailbox's "
                          "password, each unless given by its own option")
    net.add_argument("--dns", type=_dns_server, metavar="IP[:PORT]",
                     help="DNS server to ask (default: the system's resolv.conf servers)")
    net.add_argument("--ca-file", metavar="PEM", help="trusted root(s) for certificate checks (default: system store)")
    net.add_argument("--port", type=_port, default=None,
                     help="port standing in for 443 in every https step (default 443)")
    net.add_argument("--http-port", type=_port, default=None,
                     help="port standing in for 80 in the HTTP redirect step (default 80)")
    manual = parser.add_argument_group("without Autodiscover")
    manual.add_argument("--skip-autodiscover", action="store_true", help="use --proxy and friends instead")
    manual.add_argument("--proxy", metavar="HOST", help="Outlook Anywhere (RPC proxy) host name; with --test ews, the "
                                                        "host of https://HOST/EWS/Exchange.asmx")
    manual.add_argument("--rpc-server", metavar="NAME",
                        help="RPC server name behind the proxy (default: learnt from the NTLM challenge)")
    manual.add_argument("--auth-package", choices=("Basic", "Ntlm", "Negotiate"), default="Ntlm",
                        help="Outlook Anywhere authentication, as EXPR AuthPackage would say (default Ntlm)")
    run = parser.add_argument_group("run")
    run.add_argument("--test", choices=("outlook-anywhere", "ews"), default="outlook-anywhere",
                     help="what to test after Autodiscover: Outlook Anywhere (default) or Exchange Web Services")
    run.add_argument("--timeout", type=_positive, default=10.0, metavar="SECONDS",
                     help="per-step timeout: DNS query, connect, each HTTP/RPC answer (default 10)")
    run.add_argument("--total-timeout", type=_positive, default=120.0, metavar="SECONDS",
                     help="bound on the whole run (default 120)")
    run.add_argument("--seed", type=int, help="seed for the RPC cookies, to replay a run")
    run.add_argument("--transport", choices=("auto", "rpc-http", "mapi-http"), default="auto",
                     help="auto (default): MAPI over HTTP when Autodiscover offers it (the request says the client "
                          "can), else Outlook Anywhere; rpc-http: Outlook Anywhere only (MAPI over HTTP not "
                          "announced); mapi-http: MAPI over HTTP even when Autodiscover does not offer it")
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the JSON report (docs/probe.schema.json) instead "
                                                         "(same as --format json)")
    out.add_argument("--format", choices=("text", "json", "exchange"), default=None,
                     help="text (default): the step tree; json: the JSON report; exchange: Test-OutlookConnectivity's "
                          "result table")
    out.add_argument("--html", metavar="FILE", help="also write a Remote Connectivity Analyzer-style HTML report here")
    out.add_argument("--verbose", "-v", action="store_true", help="show each step's evidence in the text report")
    out.add_argument("--no-color", action="store_true", help="no colour even on a terminal")
    return parser


def _usage_error(message: str) -> int:
    print(f"mockex probe: {message}", file=sys.stderr)
    return 2


def _ca_file_problem(path: str) -> str:
    """Why ``path`` cannot be a trust store ("" when it can): it must be a readable PEM with a certificate."""
    import ssl
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return exc.strerror or str(exc)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return "no PEM certificate in it (is it a key or a DER file?)"
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, ValueError) as exc:
        return f"not a usable PEM certificate file ({exc})"
    return ""


def _from_endpoints(path: str, email: str) -> dict:
    """What the probe takes from a running mock's endpoints.json (the password only if the mailbox is one of its
    users)."""
    from harness.probe.expectation import endpoint_user, options_from_endpoints
    with open(path, encoding="utf-8") as handle:
        endpoints = json.load(handle)
    if not isinstance(endpoints, dict) or "users" not in endpoints:
        raise ValueError("not a mockex endpoints.json (no users)")
    options = options_from_endpoints(endpoints)
    found = {"dns": options.dns, "ca_file": options.ca_file, "https_port": options.https_port,
             "http_port": options.http_port}
    try:
        found["password"] = endpoint_user(endpoints, email)["password"]
    except KeyError:
        pass   # another mailbox: its password must come from --password, the environment or a prompt
    return found


def run_probe(args) -> int:
    from harness.probe.report import render_text
    from harness.probe.runner import ProbeOptions, probe
    email = args.email.strip()
    local, at, domain = email.rpartition("@")
    if not at or not local or "." not in domain:
        return _usage_error(f"{args.email!r} is not an e-mail address")
    if args.skip_autodiscover and not args.proxy:
        return _usage_error("--skip-autodiscover needs --proxy HOST")
    if args.proxy and not args.skip_autodiscover:
        return _usage_error("--proxy is used only with --skip-autodiscover")
    if args.skip_autodiscover and args.transport == "mapi-http":
        return _usage_error("--transport mapi-http needs Autodiscover (the legacy DN and the MailStore URL come "
                            "from it)")
    mock: dict = {}
    if args.endpoints:
        try:
            mock = _from_endpoints(args.endpoints, email)
        except (OSError, ValueError, KeyError) as exc:
            return _usage_error(f"--endpoints {args.endpoints}: {exc}")
    ca_file = args.ca_file or mock.get("ca_file")
    if ca_file:
        problem = _ca_file_problem(ca_file)
        if problem:
            return _usage_error(f"--ca-file {ca_file}: {problem}")
    password = args.password if args.password is not None else os.environ.get(PASSWORD_ENV, mock.get("password"))
    if password is None:
        if not sys.stdin.isatty():
            return _usage_error(f"no password: give --password or set ${PASSWORD_ENV}")
        password = getpass.getpass(f"Password for {args.user or email}: ")
    options = ProbeOptions(email=email, password=password, login=args.user, dns=args.dns or mock.get("dns"),
                           ca_file=ca_file, https_port=args.port or mock.get("https_port", 443),
                           http_port=args.http_port or mock.get("http_port", 80), step_timeout=args.timeout,
                           total_timeout=args.total_timeout, skip_autodiscover=args.skip_autodiscover,
                           proxy=args.proxy, rpc_server=args.rpc_server, auth_package=args.auth_package,
                           auth=args.auth, seed=args.seed, test=args.test, transport=args.transport)
    output = "json" if args.json else (args.format or "text")
    if args.json and args.format not in (None, "json"):
        return _usage_error(f"--json and --format {args.format} name two outputs; give one")
    report = probe(options)
    data = report.to_json()   # --json, --format exchange and --html all state these facts
    if args.html:
        from harness.probe.formats import render_html
        with open(args.html, "w", encoding="utf-8") as handle:
            handle.write(render_html(data))
    if output == "json":
        print(json.dumps(data, indent=2))
    elif output == "exchange":
        from harness.probe.formats import render_exchange
        print(render_exchange(data), end="")
    else:
        colour = sys.stdout.isatty() and not args.no_color and "NO_COLOR" not in os.environ
        print(render_text(report, colour=colour, verbose=args.verbose))
    return report.exit_code

