"""`mockex run`: a client (any program, unmodified, or the built-in probe) against every selected scenario, each
judged by its `expect`, with a summary, JUnit XML and JSON (harness/cli.py adds the parser and dispatches)."""
from __future__ import annotations

import argparse
import os
import sys
import time

from harness.faults.base import LAYERS
from harness.org import DEFAULT_ORG_DIR

DESCRIPTION = """\
Run a client against scenarios, each against a fresh mock with the scenario's faults, and judge what the client
did by the scenario's `expect`: by default a correct client succeeds (exit 0) where `mockex probe` passes and
fails cleanly (non-zero exit, no crash, no hang) where the probe fails at a step; in every scenario it sends
credentials only over TLS it could trust. A scenario's `expect.client` overrides this (exit, stdout/stderr
patterns, credentials, timeout). `--client probe` runs the built-in analyzer, judged by the exact step, reason and
host of `expect.analyzer`.

The client command is split into words like a shell would (no shell runs it) and each placeholder is filled per
scenario: {email} {password} {username} {login} {upn} {netbios_domain} {domain} {host} {https_port} {http_port}
{dns_host} {dns_port} {dns} {autodiscover_url} {autodiscover_svc_url} {ews_url} {rpc_proxy_url} {ca_file}
{endpoints} {transcript} {state_dir} {scenario} {seed} {addresses[HOST]}; other braces are left alone, so inline
code needs no escaping ({{email}} is the literal text {email}). The same values are in the client's
environment as MOCKEX_EMAIL, MOCKEX_PASSWORD, ... (--ca-env adds SSL_CERT_FILE, REQUESTS_CA_BUNDLE,
NODE_EXTRA_CA_CERTS and CURL_CA_BUNDLE). The mock listens on 127.0.0.1 with ephemeral ports: the client must use
the ports (and the DNS server) it is given. With --sandbox each worker runs in namespaces of its own (no root
needed) where the mock serves the real ports 443/80/53 and the system resolver asks it, so an unmodified client
needs only {email} and {password}. Full guide: docs/runner.md."""

EPILOG = """\
exit status: 0 every judged scenario passed, 1 one failed (or broke), 2 usage error, 130/143 interrupted.

examples:
  mockex run --all --client probe
  mockex run --all --client "mytool sync --email {email} --password {password}" --junit report.xml
  mockex run --layer tls --layer auth -j 2 --client ./check.sh --json results.json
  mockex run tls-expired dns-timeout --client 'python check.py {autodiscover_url} --dns {dns}' --timeout 20
  mockex run --all --shard 2/3 --client probe --junit shard-2.xml     # one job of a 3-way CI matrix
  mockex run --all --list --shard 1/3                                  # which scenarios that shard runs
  mockex run --sandbox -j 2 --layer tls --client "curl -sSf --ntlm -u 'CONTOSO\\alice:{password}' \\
      https://autodiscover.contoso.test/autodiscover/autodiscover.xml"     # unmodified, on 443, 2 namespaces"""


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _jobs(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def add_run_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("run", help="run a client against every scenario; summary, JUnit XML, JSON",
                                   description=DESCRIPTION, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="NAME|FILE", help="scenarios to run (built-in names or files)")
    which = parser.add_argument_group("which scenarios")
    which.add_argument("--all", action="store_true", help="every built-in scenario")
    which.add_argument("--layer", action="append", default=[], choices=LAYERS,
                       help="built-in scenarios touching this layer; repeatable")
    which.add_argument("--exclude", action="append", default=[], metavar="NAME", help="leave this scenario out")
    which.add_argument("--shard", metavar="K/N",
                       help="run only the K-th of N deterministic parts of the selection (for a CI matrix)")
    which.add_argument("--list", action="store_true", help="print the scenarios this run would cover, and exit")
    client = parser.add_argument_group("the client")
    client.add_argument("--client", metavar="COMMAND",
                        help="the command to judge, with {placeholders}; `probe` is the built-in analyzer")
    client.add_argument("--timeout", type=_positive, default=60.0, metavar="SECONDS",
                        help="per-scenario limit for the client; past it the client (and all it started) is "
                             "killed and the scenario fails (default 60; expect.client.timeout overrides)")
    client.add_argument("--sandbox", action="store_true",
                        help="run each worker (and so its mocks and clients) in a user, network and mount namespace "
                             "of its own, made without root, as `mockex sandbox` does: the mock serves 127.0.0.1:443, "
                             ":80 and :53, the org's names resolve through it, the CA variables are set; unmodified "
                             "clients need no placeholders. Works with -j N (one namespace per worker)")
    client.add_argument("--ca-env", action="store_true",
                        help="also point SSL_CERT_FILE, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS, CURL_CA_BUNDLE at "
                             "the mock's CA file")
    mock = parser.add_argument_group("the mock")
    mock.add_argument("--org", default=DEFAULT_ORG_DIR, metavar="DIR", help="org fixture directory (default "
                                                                             "contoso.test)")
    mock.add_argument("--listen", default="127.0.0.1", metavar="ADDR", help="loopback address (default 127.0.0.1)")
    mock.add_argument("--seed", type=int, help="seed for every scenario (default: each scenario's own, else one "
                                               "derived from its name, so runs replay)")
    mock.add_argument("--state-dir", metavar="DIR",
                      help="keep each scenario's endpoints.json and transcript under DIR/scenarios/ (default: a "
                           "temporary directory, removed after the run)")
    run = parser.add_argument_group("run and report")
    run.add_argument("-j", "--jobs", type=_jobs, default=1, metavar="N", help="scenarios run in parallel (default 1)")
    run.add_argument("--junit", metavar="FILE", help="write JUnit XML (one testcase per scenario)")
    run.add_argument("--json", metavar="FILE", help="write the results as JSON ('-' for stdout)")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress and no table: only failures and the "
                                                                 "totals")
    return parser


MERGE_EPILOG = """\
exit status: 0 every scenario of every file passed and no shard is missing or interrupted, 1 otherwise,
2 the files cannot be merged.

example (after a 3-way CI matrix ran `mockex run --all --shard K/3 --client ... --json shard-K.json`):
  mockex report shard-1.json shard-2.json shard-3.json --junit all.xml --json all.json"""


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("report", help="merge the JSON results of several `mockex run`s (CI shards)",
                                   description="Merge the --json results of several `mockex run`s (the shards of a "
                                               "CI matrix) into one summary, JUnit XML and JSON.",
                                   epilog=MERGE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", metavar="RESULTS.json", help="`mockex run --json` outputs")
    parser.add_argument("--junit", metavar="FILE", help="write the merged JUnit XML")
    parser.add_argument("--json", metavar="FILE", help="write the merged JSON")
    parser.add_argument("--quiet", "-q", action="store_true", help="only failures and the totals")
    return parser


def report_command(args) -> int:
    from harness.runner import report
    from harness.runner.merge import MergeError, load, merge
    try:
        results, meta, warnings = merge([(path, load(path)) for path in args.files])
    except (MergeError, ValueError) as exc:
        print(f"mockex report: {exc}", file=sys.stderr)
        return 2
    if args.junit:
        report.write_junit(args.junit, results, meta)
    if args.json:
        report.write_json(args.json, results, meta)
    if args.quiet:
        for result in results:
            if result["outcome"] in ("failed", "error"):
                print(f"{result['outcome'].upper()} {result['name']}: {report.first_problem(result)}")
        print(report.summary_table(results, meta["seconds"]).splitlines()[-1])
    else:
        print(report.summary_table(results, meta["seconds"]))
    for warning in warnings:
        print(f"mockex report: {warning}", file=sys.stderr)
    return 1 if warnings else report.exit_status(results)


def _usage(message: str) -> int:
    print(f"mockex run: {message}", file=sys.stderr)
    return 2


def run_command(args) -> int:
    from harness import __version__
    from harness.runner import report
    from harness.runner.client import PROBE, CommandError, missing_program, parse_command
    from harness.runner.execute import Interrupted, Run, RunSettings
    from harness.runner.plan import Selection, parse_shard, select
    shard = None
    if args.shard:
        try:
            shard = parse_shard(args.shard)
        except ValueError as exc:
            return _usage(f"--shard: {exc}")
    selection = Selection(all=args.all, layers=tuple(args.layer), refs=tuple(args.scenarios),
                          exclude=tuple(args.exclude))
    if selection.empty():
        return _usage("say which scenarios: --all, --layer LAYER or scenario names/files")
    scenarios = select(selection, shard)   # SpecError (unknown name, bad file) is reported by harness/cli.py
    if args.list:
        for scenario in scenarios:
            print(scenario.name)
        print(f"{len(scenarios)} scenarios" + (f" (shard {args.shard})" if shard else ""), file=sys.stderr)
        return 0
    if not args.client:
        return _usage("--client COMMAND is required (or --client probe for the built-in analyzer)")
    from harness.services.server import is_loopback
    if not is_loopback(args.listen):
        return _usage(f"--listen {args.listen} is not a loopback address")
    try:
        words = PROBE if args.client.strip() == PROBE else parse_command(args.client)
    except CommandError as exc:
        return _usage(str(exc))
    problem = missing_program(words) if words != PROBE else ""
    if problem:
        return _usage(f"--client: {problem}")
    if args.sandbox:
        if args.listen != "127.0.0.1":   # the namespace's resolv.conf names 127.0.0.1
            return _usage(f"--sandbox serves on 127.0.0.1; --listen {args.listen} cannot go with it")
        from harness.sandbox import unavailable_reason
        reason = unavailable_reason()
        if reason:
            return _usage(f"--sandbox: {reason}")
    settings = RunSettings(client=words, client_text=args.client, org=os.path.abspath(args.org),
                           timeout=args.timeout, jobs=args.jobs, export_ca=args.ca_env, listen=args.listen,
                           seed=args.seed, state_dir=args.state_dir, sandbox=args.sandbox)
    meta = {"client": args.client, "sandbox": args.sandbox, "shard": args.shard, "jobs": args.jobs, "seed": args.seed,
            "timeout": args.timeout, "mockex": __version__, "started": time.time(), "selected": len(scenarios)}
    progress = report.Progress(len(scenarios), tty=False if args.quiet else None)
    started = time.monotonic()
    run = Run(scenarios, settings)
    status = None
    try:
        results = run.execute(progress.update if not args.quiet else _quiet_failure)
    except Interrupted as exc:
        results = [r for r in run.results if r is not None]
        status = 128 + exc.signum
    progress.close()
    meta["seconds"] = round(time.monotonic() - started, 3)
    meta["interrupted"] = status is not None
    if args.junit:
        report.write_junit(args.junit, results, meta)
    if args.json:
        report.write_json(args.json, results, meta)
    if args.quiet:
        found = report.counts(results)
        print(f"{len(results)} scenarios: {found['passed']} passed, {found['failed']} failed, {found['error']} "
              f"errors, {found['skipped']} skipped in {meta['seconds']:.1f} s")
    elif args.json != "-":
        print(report.summary_table(results, meta["seconds"]))
    if status is not None:
        print(f"mockex run: interrupted after {len(results)} of {len(scenarios)} scenarios", file=sys.stderr)
        return status
    return report.exit_status(results)


def _quiet_failure(result: dict) -> None:
    if result["outcome"] in ("failed", "error"):
        from harness.runner.report import first_problem
        print(f"{result['outcome'].upper()} {result['name']}: {first_problem(result)}", file=sys.stderr, flush=True)
