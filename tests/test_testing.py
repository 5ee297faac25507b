"""harness.testing, which mockex's own tests and the pytest plugin start servers with: a fresh view of a running
server (``Served.fresh``) and a start from another state dir's CA and keys (``pki_from``)."""
from __future__ import annotations

import filecmp
import os
import stat
import time

import pytest
from lxml import etree

from harness.pki import PKI
from harness.protocols import autodiscover as pox
from harness.testing import start_server
from tests.support.autodiscover import pox_request
from tests.support.clients import curl
from tests.support.servers import scenario_args, server_running

STEPPED = """\
name: stepped
faults:
  - autodiscover.error-code: {code: 603}
steps:
  - after: {requests: 1, path: /autodiscover/autodiscover.xml, status: 200}
    remove: [autodiscover.error-code]
expect:
  analyzer: {passes: true}
"""


def error_code(served) -> str | None:
    alice = served.user("alice")
    result = curl(served, "autodiscover.contoso.test", "--basic", "-u", f"alice@contoso.test:{alice['password']}",
                  data=pox_request("alice@contoso.test"))
    assert result.status == 200
    return etree.fromstring(result.body.encode()).findtext(f".//{{{pox.RESPONSE_NS}}}ErrorCode")


def all_closed(served, timeout: float = 5.0) -> bool:
    """Every connection's disconnect is recorded (one recorded later lands in the next view: a connection that
    outlives a reset is not the view's to hide)."""
    deadline = time.monotonic() + timeout
    while len(served.transcript("connect")) != len(served.transcript("disconnect")):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_fresh_resets_the_steps_and_its_transcript_starts_after_the_reset(tmp_path):
    with server_running(*scenario_args(tmp_path, "stepped", STEPPED)) as served:
        assert [error_code(served), error_code(served)] == ["603", None]   # the step removed the fault
        assert served.wait_for(lambda e: e["kind"] == "step") and all_closed(served)
        view = served.fresh()
        assert view.process is served.process and view.transcript() == []
        assert error_code(view) == "603"                                     # the fault is back
        assert [e["status"] for e in view.transcript("http")] == [200]       # this request only
        assert len(served.transcript("http")) == 3 and len(served.transcript("reset")) == 1
        assert all_closed(view)
        again = view.fresh()
        assert again.transcript_start > view.transcript_start and again.transcript() == []


def test_fresh_on_a_stopped_server_says_so(tmp_path):
    served = start_server(str(tmp_path))
    assert served.stop() == 0
    with pytest.raises(RuntimeError, match="did not reset"):
        served.fresh(timeout=5)


def test_a_server_started_from_another_pki_keeps_its_ca_and_key_modes(tmp_path):
    template = str(tmp_path / "template")
    PKI(template)
    keys = [name for name in os.listdir(os.path.join(template, "pki")) if name.endswith(".key.pem")]
    assert keys
    state = str(tmp_path / "copy")
    os.makedirs(state)
    served = start_server(state, pki_from=template)
    try:
        assert filecmp.cmp(served.ca_file, os.path.join(template, "pki", "root-ca.pem"), shallow=False)
        for name in keys:
            copied = os.path.join(state, "pki", name)
            assert filecmp.cmp(copied, os.path.join(template, "pki", name), shallow=False)
            assert stat.S_IMODE(os.stat(copied).st_mode) == 0o600
    finally:
        assert served.stop() == 0
