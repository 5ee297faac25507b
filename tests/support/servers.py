"""Starting `mockex serve` for a test (on top of harness.testing), and small loopback servers that stand in for
other parties (a web server, a TLS peer) in tests of the client side."""
from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Sequence, Tuple

from OpenSSL import SSL

from harness.org import DEFAULT_ORG_DIR
from harness.testing import Served, start_server

# The expect block of a scenario whose faults the analyzer does not notice (a scenario file needs one).
EXPECT_PASSES = "expect:\n  analyzer: {passes: true}\n"


def worker_address(network: str = "127.0.0", base: int = 2) -> str:
    """A loopback address of this pytest-xdist worker's own in ``network`` (127.0.0.2 for gw0 or no xdist,
    127.0.0.3 for gw1, ...), so parallel workers can each hold :443."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return f"{network}.{base + int(worker[2:] or 0)}"


def scenario_args(root: Path, name: str, scenario: str) -> Tuple[str, ...]:
    """``start_server`` arguments for a server with its own state directory ``root/name`` that serves ``scenario``:
    YAML text (written to ``root/name.yaml``) or the name of a built-in scenario (one word, no line break)."""
    state = root / name
    state.mkdir()
    if "\n" in scenario:
        path = root / f"{name}.yaml"
        path.write_text(scenario)
        scenario = str(path)
    return str(state), "--scenario", scenario


@contextlib.contextmanager
def servers_running(*serve_args: Sequence[str]) -> Iterator[List[Served]]:
    """One `mockex serve` per argument list (``start_server(*args)``), started in parallel (each start waits for
    its own key generation and listeners); on leaving the block every one must stop with exit status 0."""
    with ThreadPoolExecutor(len(serve_args)) as pool:
        started = list(pool.map(lambda args: start_server(*args), serve_args))
    try:
        yield started
    finally:
        assert [served.stop() for served in started] == [0] * len(started)


@contextlib.contextmanager
def scenario_servers(root: Path, scenarios: Mapping[str, str]) -> Iterator[Dict[str, Served]]:
    """``servers_running`` for scenarios by name (YAML text or a built-in's name): name -> Served."""
    with servers_running(*(scenario_args(root, name, scenario) for name, scenario in scenarios.items())) as started:
        yield dict(zip(scenarios, started))


@contextlib.contextmanager
def server_running(state_dir: str, *args: str) -> Iterator[Served]:
    """One `mockex serve` for the block, which must stop with exit status 0."""
    with servers_running((state_dir, *args)) as (served,):
        yield served


def mapi_http_org_dir(tmp_path_factory) -> str:
    """A copy of the built-in org in which MAPI over HTTP is enabled (it is off by default, as in Exchange 2013
    SP1)."""
    org_dir = tmp_path_factory.mktemp("org")
    text = Path(DEFAULT_ORG_DIR, "org.yaml").read_text(encoding="utf-8")
    assert "mapi_http: {Enabled: false}" in text
    (org_dir / "org.yaml").write_text(text.replace("mapi_http: {Enabled: false}", "mapi_http: {Enabled: true}"))
    return str(org_dir)


def start_mapi_http_server(tmp_path_factory, name: str, *args: str) -> Served:
    """start_on_port_443 with the org of ``mapi_http_org_dir``; ``args``: more `mockex serve` arguments."""
    return start_on_port_443(str(tmp_path_factory.mktemp(name)), "--org", mapi_http_org_dir(tmp_path_factory), *args)


def start_on_port_443(state_dir: str, *args: str) -> Served:
    """mockex on a loopback address of its own at :443 when root (exchanger.py speaks to nothing else; the address
    is drawn so that parallel runs do not collide), else on an ephemeral 127.0.0.1 port, which impacket's transport
    still reaches through set_rpc_proxy_url."""
    if os.geteuid() != 0:
        return start_server(state_dir, *args)
    draw = random.Random(f"{os.getpid()}:{state_dir}")
    for _ in range(5):
        address = f"127.{draw.randrange(64, 250)}.{draw.randrange(1, 250)}.{draw.randrange(1, 250)}"
        try:
            return start_server(state_dir, *args, listen=address, https_port=443)
        except RuntimeError as exc:
            if "Address already in use" not in str(exc):
                raise
    raise RuntimeError("no free loopback address for :443")


class LoopbackListener:
    """Accepts on 127.0.0.1 (ephemeral port) and hands each connection to the subclass's ``_serve(sock)`` on its
    own thread, until ``stop`` (or the end of a ``with`` block)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    def __enter__(self) -> "LoopbackListener":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:   # stopped
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not on Linux
        except OSError:
            pass
        self.listener.close()
        self.accepting.join(timeout=10)


def tls_accept(context: SSL.Context, sock: socket.socket) -> SSL.Connection:
    """The server side of a TLS handshake on an accepted socket, with a pyOpenSSL context (as harness.pki makes)."""
    connection = SSL.Connection(context, sock)
    connection.set_accept_state()
    connection.do_handshake()
    return connection
