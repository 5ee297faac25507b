"""Run unmodified exchanger.py, once per command, so that the fuzz crash oracle can see impacket's bugs.

exchanger.py catches every exception in main() and logs "Protocol failed: <message>" with exit status 0, so a
struct.error deep in impacket looks like a clean refusal. This wrapper runs the script as it is (runpy, as
__main__) and watches that one log call: when the exception being handled is not one of impacket's (or the
network's, or exchanger's own deliberate ``Exception("...")``), it prints the traceback and exits 1, which the
crash oracle reads as any Python crash.

    python exchanger_traced.py EXCHANGER_PY TARGET nspi list-tables [--also nspi dump-tables -name GAL ...]
"""
from __future__ import annotations

import logging
import runpy
import sys
import traceback
from typing import List

from impacket.dcerpc.v5.rpch import RPCProxyClientException
from impacket.dcerpc.v5.rpcrt import DCERPCException

# What impacket and the network raise for an answer they refuse: clean failures, not crashes.
CLEAN = (DCERPCException, RPCProxyClientException, OSError)


def clean(exc: BaseException) -> bool:
    # exchanger raises plain Exception("...") itself when it decides an answer is wrong (e.g. "NspiQueryRows
    # returned wrong result" after failing to read the rows): deliberate, so clean
    return isinstance(exc, CLEAN) or type(exc) is Exception


def run(script: str, target: str, command: List[str]) -> bool:
    """exchanger.py TARGET COMMAND in this process; False when it swallowed an exception that is a crash."""
    crashed = []
    original = logging.critical

    def critical(message, *args, **kwargs):
        exc = sys.exc_info()[1]
        if exc is not None and not clean(exc):
            traceback.print_exc()
            crashed.append(exc)
        original(message, *args, **kwargs)

    logging.critical = critical
    sys.argv = [script, target, *command]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit:
        pass
    finally:
        logging.critical = original
    return not crashed


def main() -> int:
    script, target, *rest = sys.argv[1:]
    commands: List[List[str]] = [[]]
    for word in rest:
        if word == "--also":
            commands.append([])
        else:
            commands[-1].append(word)
    for command in commands:
        if not run(script, target, command):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
