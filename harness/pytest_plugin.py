"""pytest fixtures for testing your own Exchange client against mockex (installed with the package; no conftest
needed). docs/pytest-plugin.md tells the whole story:

    @pytest.mark.mockex("tls-expired")                     # built-in names, or YAML paths (test file's dir, rootdir)
    def test_refuses_expired(mockex_org):                  # the session's server, a fresh org state for this test
        with pytest.raises(SSLError):
            mytool.connect(mockex_org.autodiscover_url, ca=mockex_org.ca_file)
        assert not mockex_org.events(kind="auth")

    def test_two_orgs(mockex_orgs):                        # a factory: each call its own server process
        a, b = mockex_orgs("tls-expired"), mockex_orgs()

One `mockex serve --control` per session (per xdist worker) serves every ``mockex_org``: before each test it is put
back to the start (``/reset``) and the test's scenarios applied (``/apply``); after it they are cleared. A scenario
the control plane cannot apply live (one with steps, or a fault acting at connect for a host of its own) gets a
dedicated server for that test instead. Every server of a session has one seed (``--mockex-seed N`` to choose it;
a failing test's report names it) and starts from one CA and set of keys, made once per run (shared by the xdist
workers), so no start generates a key and a client trusts one ``ca_file`` throughout.

The older fixtures stay: ``mockex`` (a factory of dedicated servers, returning harness.testing.Served),
``mockex_server`` (the session's server) and ``mockex_fresh`` (it, reset by SIGHUP, with a transcript view).
"""
from __future__ import annotations

import fcntl
import http.client
import json
import os
import random
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlencode, urlsplit

import pytest

from harness.scenario import BUILTIN_DIR, resolve
from harness.testing import Served, start_server
from harness.yamlfile import SpecError

SEEDS = pytest.StashKey[List[Tuple[str, int]]]()   # (which server, its seed) for each server a test used


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mockex")
    group.addoption("--mockex-seed", type=int, default=None, metavar="N",
                    help="the seed of every mockex server of this run (default: a fresh one per session, named in "
                         "the report of a failing test), to replay a failure")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mockex(*scenarios): the scenarios (built-in names or YAML paths) the "
                                       "mockex_org fixture applies for this test")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    seeds = item.stash.get(SEEDS, [])
    if report.failed and seeds:
        lines = [f"mockex seed {seed}: replay with --mockex-seed {seed}" + (f"   ({label})" if label else "")
                 for label, seed in dict.fromkeys(seeds)]
        report.sections.append(("mockex", "\n".join(lines)))


# ---- the control plane, over one kept-alive connection ----------------------------------------------------------
class ControlError(Exception):
    pass


class Control:
    """The control API of one server (its endpoints.json "control"): a kept-alive HTTP/1.1 connection, so a test's
    reset costs a few loopback round trips and no connects."""

    def __init__(self, control: Dict[str, Any], timeout: float = 60.0):
        self.host, self.port = urlsplit(control["url"]).hostname, control["port"]
        self.headers = {"Authorization": f"Bearer {control['token']}", "Content-Type": "application/json"}
        self.timeout = timeout
        self._connection: Optional[http.client.HTTPConnection] = None

    def call(self, method: str, path: str, body: Optional[dict] = None,
             query: Sequence[Tuple[str, str]] = (), timeout: Optional[float] = None) -> Dict[str, Any]:
        url = path + ("?" + urlencode(list(query)) if query else "")
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        for attempt in (1, 2):   # a kept-alive connection the server closed (idle timeout) is opened again, once
            if self._connection is None:
                self._connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)
            elif timeout is not None and self._connection.sock is not None:
                self._connection.sock.settimeout(timeout)
            try:
                self._connection.request(method, url, body=data, headers=self.headers)
                answer = self._connection.getresponse()
                payload = answer.read()
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt == 2:
                    raise
                continue
            finally:
                if self._connection is not None and self._connection.sock is not None:
                    self._connection.sock.settimeout(self.timeout)
            if answer.status != 200:
                raise ControlError(f"{method} {path}: {answer.status}: {json.loads(payload).get('error', '')}")
            return json.loads(payload)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _filter(kind: Union[str, Iterable[str], None], match: Dict[str, Any]) -> List[Tuple[str, str]]:
    kinds = [kind] if isinstance(kind, str) else list(kind or [])
    query = [("kind", k) for k in kinds]
    for name, value in match.items():   # the API compares numbers and booleans as JSON text
        query.append((f"match.{name}", value if isinstance(value, str) else json.dumps(value)))
    return query


class Org:
    """One test's org on a running mockex: where it listens, its users and CA, and the events of this test."""

    def __init__(self, served: Served, control: Control, seed: int, dedicated: bool):
        self.served, self.control, self.seed, self.dedicated = served, control, seed, dedicated
        self.endpoints: Dict[str, Any] = served.endpoints
        self.after = 0   # events with a larger seq are this test's
        self.pid = served.process.pid

    # where it listens
    @property
    def host(self) -> str:
        return self.endpoints["https"]["host"]

    @property
    def https_port(self) -> int:
        return self.endpoints["https"]["port"]

    @property
    def http_port(self) -> int:
        return self.endpoints["http"]["port"]

    @property
    def dns_port(self) -> int:
        return self.endpoints["dns"]["port"]

    @property
    def ca_file(self) -> str:
        return self.endpoints["ca_file"]

    @property
    def domain(self) -> str:
        return self.endpoints["domain"]

    @property
    def autodiscover_url(self) -> str:
        """https://autodiscover.DOMAIN:PORT/autodiscover/autodiscover.xml (the name resolves through ``dns_port``,
        and every name of ``addresses`` is ``host``)."""
        return next(u for u in self.endpoints["autodiscover_urls"] if "//autodiscover." in u)

    @property
    def direct_url(self) -> str:
        """The Autodiscover URL by address (https://127.0.0.1:PORT/...), needing no name resolution."""
        return self.endpoints["direct_url"]

    @property
    def users(self) -> List[Dict[str, Any]]:
        return self.endpoints["users"]

    def user(self, name: str) -> Dict[str, Any]:
        """A user by username or e-mail address: email, username, domain, upn, password, display_name, ..."""
        return next(u for u in self.users if name in (u["username"], u["email"]))

    # what happened
    def events(self, kind: Union[str, Iterable[str], None] = None, **match: Any) -> List[Dict[str, Any]]:
        """This test's transcript events, oldest first: only ``kind`` (a name or several) and only those whose
        fields equal ``match`` (``events(kind="auth", result="failure")``)."""
        found: List[Dict[str, Any]] = []
        after = self.after
        while True:
            page = self.control.call("GET", "/events", query=[("after", str(after))] + _filter(kind, match))
            found += page["events"]
            if not page["events"] or page["events"][-1]["seq"] >= page["last_seq"]:
                return found
            after = page["events"][-1]["seq"]

    def wait_for(self, kind: Union[str, Iterable[str], None] = None, timeout: float = 10.0,
                 **match: Any) -> Optional[Dict[str, Any]]:
        """The first event of this test matching ``kind`` and ``match``, waiting up to ``timeout`` seconds for it
        (the server answers as soon as it is recorded); None when none came."""
        query = [("after", str(self.after))] + _filter(kind, match) + [("timeout", str(timeout))]
        return self.control.call("GET", "/events/wait", query=query, timeout=timeout + 30)["event"]

    # changing it within the test
    def apply(self, scenario: str) -> Dict[str, Any]:
        """Apply one more scenario (a built-in name or an absolute path) now; ``clear`` takes it away."""
        return self.control.call("POST", "/apply", {"scenario": scenario})

    def clear(self, name: Optional[str] = None) -> Dict[str, Any]:
        return self.control.call("POST", "/clear", {"name": name} if name else {})

    def begin(self, scenarios: Sequence[str]) -> "Org":
        """This server as a new test wants it: the start's state, ``scenarios`` applied, events from here on."""
        if not self.dedicated:
            self.control.call("POST", "/reset")
            for scenario in scenarios:
                self.apply(scenario)
        self.after = self.control.call("GET", "/info")["last_seq"]
        return self


# ---- scenarios named by a test ----------------------------------------------------------------------------------
def scenario_ref(ref: str, bases: Sequence[Path]) -> str:
    """A built-in name as it is; a path made absolute against the first of ``bases`` where it exists (the server
    runs elsewhere: a relative path means nothing to it)."""
    if os.sep not in ref and not ref.endswith((".yaml", ".yml")) and os.path.exists(
            os.path.join(BUILTIN_DIR, f"{ref}.yaml")):
        return ref
    path = Path(ref).expanduser()
    if path.is_absolute():
        return str(path)
    for base in bases:
        if (base / path).exists():
            return str((base / path).resolve())
    return ref   # resolve() says what is wrong with it


def live_applicable(ref: str, seed: int) -> bool:
    """Whether the control plane can apply this scenario on the shared server (what `POST /apply` refuses: steps,
    settings (config), and a fault acting at connect for a host that would need an address of its own)."""
    scenario = resolve(ref)
    if scenario.steps or scenario.config is not None or (scenario.seed is not None and scenario.seed != seed):
        return False
    return not any(f.host and "accept" in f.hooks() for f in scenario.build_faults(seed))


def _bases(request: pytest.FixtureRequest) -> List[Path]:
    return [Path(request.path).parent, Path(request.config.rootpath)]


def _refs(request: pytest.FixtureRequest, scenarios: Sequence[str]) -> List[str]:
    refs = [scenario_ref(str(s), _bases(request)) for s in scenarios]
    for ref in refs:
        try:
            resolve(ref)
        except SpecError as exc:
            pytest.fail(f"mockex: {exc}", pytrace=False)
    return refs


def _record_seed(request: pytest.FixtureRequest, label: str, seed: int) -> None:
    request.node.stash.setdefault(SEEDS, []).append((label, seed))


# ---- fixtures ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def mockex_seed(pytestconfig: pytest.Config) -> int:
    """The seed of every mockex server of this session: ``--mockex-seed N``, else a fresh one."""
    chosen = pytestconfig.getoption("mockex_seed", None)
    return chosen if chosen is not None else random.SystemRandom().randrange(1 << 31)


@pytest.fixture(scope="session")
def mockex_pki(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A state dir holding the run's CA and keys, which every server starts from: made once per run, in the
    temporary directory the xdist workers share (under a lock: the first worker makes it, the others read it)."""
    from harness.pki import PKI
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent   # .../pytest-N/popen-gwK: the run's directory is shared
    state_dir = base / "mockex-pki"
    with open(base / "mockex-pki.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (state_dir / "done").exists():
            state_dir.mkdir(exist_ok=True)
            PKI(str(state_dir))
            (state_dir / "done").touch()
    return str(state_dir)


@pytest.fixture
def mockex(request, tmp_path_factory, mockex_pki, mockex_seed) -> Callable[..., Served]:
    """A factory: ``mockex(*scenarios, seed=None, extra_args=())`` starts a server with those scenarios active
    (paths as for the marker); ``seed`` defaults to the session's."""
    started: List[Served] = []

    def start(*scenarios: str, seed=None, extra_args=()) -> Served:
        args = [arg for ref in _refs(request, scenarios) for arg in ("--scenario", ref)]
        seed = mockex_seed if seed is None else seed
        _record_seed(request, "mockex", seed)
        served = start_server(str(tmp_path_factory.mktemp("mockex")), *args, "--seed", str(seed), *extra_args,
                              pki_from=mockex_pki)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


@pytest.fixture(scope="session")
def mockex_server(tmp_path_factory, mockex_pki, mockex_seed) -> Served:
    """One server with the clean built-in org for the whole session (per xdist worker), with its control API:
    the server ``mockex_org`` and ``mockex_fresh`` reset for each test."""
    served = start_server(str(tmp_path_factory.mktemp("mockex-session")), "--control", "--seed", str(mockex_seed),
                          pki_from=mockex_pki)
    yield served
    served.stop()


@pytest.fixture
def mockex_fresh(mockex_server) -> Served:
    """The session's server as if new for this test, in about a millisecond: its scenario state reset and a
    ``transcript()`` that starts now (``Served.fresh``). A connection your client kept open from an earlier test
    stays open, with its logon."""
    return mockex_server.fresh()


@pytest.fixture(scope="session")
def _mockex_session_org(mockex_server, mockex_seed) -> Org:
    org = Org(mockex_server, Control(mockex_server.endpoints["control"]), mockex_seed, dedicated=False)
    yield org
    org.control.close()


@pytest.fixture
def mockex_orgs(request, tmp_path_factory, mockex_pki, mockex_seed) -> Callable[..., Org]:
    """A factory for several orgs in one test: ``mockex_orgs(*scenarios, seed=None)`` starts a server process of
    its own with those scenarios (any: steps too) and returns its Org; all stop after the test."""
    started: List[Org] = []

    def start(*scenarios: str, seed: Optional[int] = None) -> Org:
        seed = mockex_seed if seed is None else seed
        args = [arg for ref in _refs(request, scenarios) for arg in ("--scenario", ref)]
        _record_seed(request, f"mockex_orgs server {len(started) + 1}", seed)
        served = start_server(str(tmp_path_factory.mktemp("mockex-org")), "--control", "--seed", str(seed), *args,
                              pki_from=mockex_pki)
        org = Org(served, Control(served.endpoints["control"]), seed, dedicated=True)
        started.append(org)
        return org.begin(())

    yield start
    for org in started:
        org.control.close()
        org.served.stop()


@pytest.fixture
def mockex_org(request, _mockex_session_org, mockex_orgs, mockex_seed) -> Org:
    """This test's org, with the scenarios of its ``@pytest.mark.mockex(...)`` markers (module, class, function,
    in that order): the session's server reset for it, or a server of its own when a scenario cannot be applied
    live (steps, or a fault at connect for a host of its own)."""
    scenarios = [arg for marker in reversed(list(request.node.iter_markers("mockex"))) for arg in marker.args]
    refs = _refs(request, scenarios)
    if not all(live_applicable(ref, mockex_seed) for ref in refs):
        yield mockex_orgs(*refs)
        return
    _record_seed(request, "", mockex_seed)
    org = _mockex_session_org.begin(refs)
    yield org
    if refs:
        org.clear()   # the session's server clean for the fixtures that use it as it is (mockex_server)
