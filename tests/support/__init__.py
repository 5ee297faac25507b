"""What mockex's own tests share: one home for helpers, so no test module imports another (tests/test_layout.py).

- ``servers``: start `mockex serve` for a test (several in parallel, scenario texts, :443), small loopback servers.
- ``clients``: the real clients a test drives: curl, Python's ssl, dnspython, impacket (ncacn_http, exchanger.py),
  requests, the probe.
- ``netns``: a private network + mount namespace where the system resolver asks mockex (exchangelib's discovery).
- ``sandbox``: `mockex sandbox` run as this user or as nobody, and what a run left behind (``sandbox_clients.py``
  is the exchangelib + exchanger.py script run inside).
- ``transcript``: reading what a server recorded since a point in the test.
- ``autodiscover``: Autodiscover request bodies and answer readers.
- ``ews``: the built-in org's mailbox store on a fixed clock and EWS envelopes; ``exchangelib_ews.py`` is the
  exchangelib script the EWS tests run (browse, page, sync, throttled).
- ``ews_schema_check``: the session-wide check of every EWS answer against Microsoft's schema, when found;
  ``ews_schema_minimal/`` a small EWS-shaped schema written for the check's own tests.
- ``fuzz``: the hypothesis profiles and the strategies and settings several fuzz tests use.
- ``echo``: a small RPC interface that shows what the DCE/RPC layers did with a call.
- ``rpchttp``: a raw RPC-over-HTTP client on plain sockets (channels, CONN/A1, CONN/B1, virtual connections); also
  benchmarks/rpc.py's.

conftest.py defines the fixtures on top of these. ``harness.testing`` stays the public helper for users' suites;
this package builds on it and never changes it.
"""
from __future__ import annotations

import os

# The checkout the tests run from (not where harness is installed: under tox that is site-packages).
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
