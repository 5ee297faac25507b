"""`mockex fuzz`: the command line of harness/fuzz (harness/cli.py adds the parser and dispatches)."""
from __future__ import annotations

import argparse
import sys
import time

EPILOG = """\
exit status: 0 no finding (or --replay: the saved finding did not come back), 1 findings (--replay: it came back),
2 usage error.

A run is a plan of layers x seeds (each layer on its own unless --mix-layers; seeds --seed .. --seed+--seeds-1),
--max-examples each; -j runs that many at a time (one mock each), --shard K/N takes every N-th of the plan.

examples:
  mockex fuzz --client "mytool --email {email} --password {password} --url {autodiscover_url}" --max-examples 500
  mockex fuzz --client ./client.sh --seed 7 --save-failures fuzz-found/ --database .fuzz-db
  mockex fuzz --replay fuzz-found/fuzz-autodiscover-3f2a1b9c.yaml --client ./client.sh
  mockex run fuzz-found/fuzz-autodiscover-3f2a1b9c.yaml --client ./client.sh     # the same, judged by the runner
  mockex fuzz --client ./client.sh --layer autodiscover --layer tls --seed 100 --seeds 4 -j 2 --junit fuzz.xml
  mockex fuzz --client ./client.sh --seed 100 --seeds 8 --shard 3/4 --database /shared/fuzz-db --json fuzz-3.json

Placeholders are those of `mockex run` ({email} {password} {autodiscover_url} {host} {https_port} {http_port}
{ca_file} ...). Guide: docs/fuzzing.md."""


# The layers harness/fuzz/strategies.py draws for (named here so that building the parser loads no Hypothesis).
FUZZ_LAYERS = ("autodiscover", "tls", "http", "auth", "ntlm", "rts", "dcerpc", "nspi", "emsmdb")


def add_fuzz_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "fuzz", help="fuzz a client from the server side: Hypothesis draws what the mock answers, failures shrink "
                     "and are saved as scenarios",
        description="Serve a client misbehaving answers drawn by Hypothesis (one mock, changed per example through "
                    "the control plane), judge each run (crash, hang, credentials where they must not go), shrink "
                    "each failure to the smallest misbehaviour and save it as a scenario file.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client", required=True, metavar="COMMAND", help="the command, with {placeholders}")
    parser.add_argument("--layer", action="append", default=[], choices=FUZZ_LAYERS,
                        help="what to mutate: " + ", ".join(FUZZ_LAYERS) + " (repeatable; default autodiscover)")
    parser.add_argument("--max-examples", type=int, default=200, metavar="N",
                        help="examples in all, shrinking included (default 200)")
    parser.add_argument("--seed", type=int, help="seed (default: Hypothesis' derandomized run, the same each time)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="per client run; past it the client is killed and the example is a hang (default 10)")
    parser.add_argument("--save-failures", metavar="DIR", help="write each finding as a scenario file here")
    parser.add_argument("--database", metavar="DIR", help="Hypothesis example database (replays past failures first)")
    parser.add_argument("--max-findings", type=int, default=5, metavar="N", help="stop after N distinct findings")
    parser.add_argument("--ca-env", action="store_true", help="point SSL_CERT_FILE etc. at the mock's CA file")
    parser.add_argument("--org", metavar="DIR", help="org fixture directory (default contoso.test)")
    parser.add_argument("--listen", default="127.0.0.1", metavar="ADDRESS",
                        help="the mock's loopback address (default 127.0.0.1)")
    parser.add_argument("--https-port", type=int, default=0, metavar="PORT",
                        help="the mock's HTTPS port (default: ephemeral; 443 for clients such as exchanger.py that "
                             "know no other, with -j 1 or one --listen address per job)")
    parser.add_argument("--replay", metavar="FILE", help="serve this saved finding once and judge the client")
    parser.add_argument("--seeds", type=_positive, default=None, metavar="M",
                        help="seeds per layer: --seed .. --seed+M-1 (default: -j's N, else 1)")
    parser.add_argument("--mix-layers", action="store_true",
                        help="one run mixing all --layer's faults in each example, instead of one run per layer")
    parser.add_argument("-j", "--jobs", type=_positive, default=1, metavar="N",
                        help="runs in parallel, each with its own mock (default 1)")
    parser.add_argument("--shard", metavar="K/N", help="only every N-th run of the plan, from the K-th (CI matrix)")
    parser.add_argument("--junit", metavar="FILE", help="write JUnit XML (a testcase per finding and a summary)")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON ('-' for stdout)")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number, 1 or more")
    return value


def fuzz_command(args) -> int:
    from harness.fuzz.engine import FuzzOptions, replay
    from harness.runner.client import CommandError, missing_program, parse_command
    try:
        problem = missing_program(parse_command(args.client))
    except CommandError as exc:
        problem = str(exc)
    if problem:
        print(f"mockex fuzz: --client: {problem}", file=sys.stderr)
        return 2
    if args.https_port and args.jobs > 1:
        print("mockex fuzz: --https-port with -j: every job's mock would bind the same port; use -j 1",
              file=sys.stderr)
        return 2
    options = FuzzOptions(layers=tuple(args.layer or ["autodiscover"]), max_examples=args.max_examples,
                          seed=args.seed, timeout=args.timeout, save_failures=args.save_failures,
                          database=args.database, max_findings=args.max_findings, export_ca=args.ca_env,
                          org=args.org, listen=args.listen, https_port=args.https_port)
    if args.replay:
        verdict, run = replay(args.replay, args.client, options)
        if verdict is None:
            print(f"no finding: the client {run.describe()}")
            return 0
        print(f"reproduced [{verdict.oracle}] {verdict.detail}")
        return 1

    from harness import __version__
    from harness.fuzz import report as fuzz_report
    from harness.fuzz.parallel import fuzz_plan, plan, shard
    from harness.runner.plan import parse_shard
    seeds = args.seeds or args.jobs
    runs = plan(options.layers, args.seed, seeds, args.mix_layers)
    if args.shard:
        try:
            runs = shard(runs, *parse_shard(args.shard))
        except ValueError as exc:
            print(f"mockex fuzz: --shard: {exc}", file=sys.stderr)
            return 2
    meta = {"client": args.client, "layers": list(options.layers), "seed": args.seed, "seeds": seeds,
            "jobs": args.jobs, "shard": args.shard, "max_examples": args.max_examples, "mockex": __version__,
            "started": time.time(), "runs": len(runs)}
    progress = fuzz_report.FuzzProgress()
    report = fuzz_plan(args.client, options, runs, args.jobs, progress.update)
    progress.close()
    meta["seconds"] = round(report.seconds, 3)
    if args.junit:
        fuzz_report.write_junit(args.junit, report, meta)
    if args.json:
        fuzz_report.write_json(args.json, report, meta)
    if args.json != "-":
        for finding in report.findings:
            print(finding.describe() + (f"\n  saved: {finding.path}" if finding.path else ""))
        print(f"{report.examples} examples in {len(runs)} runs, {report.seconds:.1f} s ({report.rate:.1f}/s): "
              f"{len(report.findings)} findings")
    return 1 if report.findings else 0
