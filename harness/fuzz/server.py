"""The one mock a fuzz run talks to: `mockex serve --control` in a child process (the fuzzer and the mock then use
two cores), examples applied to it through the control plane, and the transcript read where it grows."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from harness.control.ctl import Client, CtlError

START_TIMEOUT = 120.0    # seconds for the mock to write endpoints.json (a cold start makes its CA)
STOP_TIMEOUT = 10.0
EXAMPLE_NAME = "fuzz-example"   # the per-example scenario: applying it again replaces the previous example


class ServerError(RuntimeError):
    pass


class FuzzServer:
    """Start with ``start()``, stop with ``stop()`` (or use as a context manager)."""

    def __init__(self, org: Optional[str] = None, listen: str = "127.0.0.1", seed: int = 0,
                 state_dir: Optional[str] = None, https_port: int = 0):
        self.org, self.listen, self.seed, self.https_port = org, listen, seed, https_port
        self._own_dir = state_dir is None
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="mockex-fuzz-")
        self.process: Optional[subprocess.Popen] = None
        self.endpoints: Dict[str, Any] = {}
        self.control: Optional[Client] = None
        self._transcript: Any = None
        self._partial = b""
        self._skip_line = False   # the line being written at skip_events() is not the run's either
        self._kept: Optional[KeptAlive] = None

    @property
    def endpoints_path(self) -> str:
        return os.path.join(self.state_dir, "endpoints.json")

    def __enter__(self) -> "FuzzServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> Dict[str, Any]:
        argv = [sys.executable, "-m", "harness", "serve", "--control", "--quiet", "--state-dir", self.state_dir,
                "--listen", self.listen, "--https-port", str(self.https_port), "--http-port", "0", "--dns-port", "0",
                "--seed", str(self.seed)]
        if self.org:
            argv += ["--org", self.org]
        log = open(os.path.join(self.state_dir, "serve.log"), "wb")
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"the mock exited with status {self.process.returncode}: {self._log_tail()}")
            endpoints = self._read_endpoints()
            if endpoints is not None:
                self.endpoints = endpoints
                self.control = Client(endpoints["control"]["url"], endpoints["control"]["token"])
                self._transcript = open(endpoints["transcript"], "rb")
                self._transcript.seek(0, os.SEEK_END)
                return endpoints
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"the mock did not start within {START_TIMEOUT:g} s: {self._log_tail()}")

    def _read_endpoints(self) -> Optional[Dict[str, Any]]:
        try:
            with open(self.endpoints_path, encoding="utf-8") as handle:
                endpoints = json.load(handle)
        except (OSError, ValueError):
            return None   # not there yet, or being written
        return endpoints if "control" in endpoints else None

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(self.state_dir, "serve.log"), "rb") as handle:
                return handle.read()[-2000:].decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def apply(self, faults: List[Dict[str, Any]], name: str = EXAMPLE_NAME) -> None:
        """Serve these faults from now on (instead of the previous example's): the scenario's content inline, on
        the kept-alive control connection (no file written, no connection opened per example)."""
        assert self.control is not None, "start() first"
        self._keep_alive().post("/apply", {"name": name, "faults": scenario_document(name, faults)["faults"]})

    def apply_file(self, path: str) -> None:
        assert self.control is not None, "start() first"
        self.control.call("POST", "/apply", {"scenario": os.path.abspath(path)})

    def clear(self) -> None:
        assert self.control is not None, "start() first"
        self.control.call("POST", "/clear", {})

    def skip_events(self) -> None:
        """Pass over the transcript as it is now, without parsing it (what came before a run is not the run's), and
        over the line being written now when it is done."""
        data = self._partial + self._transcript.read()
        self._partial = data[data.rfind(b"\n") + 1:]
        self._skip_line = bool(self._partial)

    def new_events(self) -> List[Dict[str, Any]]:
        """Transcript events recorded since the last call (the file is written unbuffered, one line per event)."""
        data = self._partial + self._transcript.read()
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if self._skip_line and lines:
            self._skip_line = False
            lines.pop(0)
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def _keep_alive(self) -> "KeptAlive":
        if self._kept is None:
            assert self.control is not None, "start() first"
            self._kept = KeptAlive(self.control.url, self.control.token)
        return self._kept

    def stop(self) -> None:
        if self._kept is not None:
            self._kept.close()
            self._kept = None
        if self._transcript is not None:
            self._transcript.close()
            self._transcript = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._own_dir:
            import shutil
            shutil.rmtree(self.state_dir, ignore_errors=True)


class KeptAlive:
    """One HTTP/1.1 connection to the control API, reused request after request (opened again if the server closed
    it): a fuzz run applies an example every few milliseconds. The control API always answers with a Content-Length,
    so the exchange is written and read here directly (http.client's header parsing would cost more than the
    request). A request is sent again once on a connection found closed; that is safe for /apply and /clear, which
    replace by name."""

    def __init__(self, url: str, token: str, timeout: float = 30.0):
        parts = urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname or "127.0.0.1", parts.port or 80, timeout
        self.head = (f"Host: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
                     "Content-Type: application/json\r\n").encode()
        self.socket: Optional[socket.socket] = None
        self.reader: Any = None

    def post(self, path: str, body: Dict[str, Any]) -> Dict[str, Any]:
        data = json.dumps(body).encode()
        request = b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (path.encode(), self.head, len(data), data)
        for attempt in (1, 2):
            try:
                if self.socket is None:
                    self.socket = socket.create_connection((self.host, self.port), self.timeout)
                    self.reader = self.socket.makefile("rb")
                self.socket.sendall(request)
                status, closes, answer = self._answer()
            except (OSError, ValueError) as exc:
                self.close()
                if attempt == 2:
                    raise CtlError(3, f"cannot reach the control API: {exc}") from None
                continue
            if closes:
                self.close()
            if status != 200:
                try:
                    detail = json.loads(answer).get("error", "")
                except ValueError:
                    detail = answer[:200].decode("utf-8", "replace")
                raise CtlError(2, f"{status}: {detail}")
            return json.loads(answer)
        raise AssertionError("unreachable")

    def _answer(self) -> Tuple[int, bool, bytes]:
        """(status, whether the server closes the connection after it, body) of the next answer."""
        line = self.reader.readline(65537)
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise ConnectionError(f"no HTTP answer: {line[:80]!r}")
        status, length, closes = int(parts[1]), None, parts[0] == b"HTTP/1.0"
        while True:
            header = self.reader.readline(65537)
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                closes = b"close" in value.lower()
        if not header or length is None:
            raise ConnectionError("the answer ended early, or has no Content-Length")
        answer = self.reader.read(length)
        if len(answer) != length:
            raise ConnectionError("the answer ended early")
        return status, closes, answer

    def close(self) -> None:
        if self.socket is not None:
            self.reader.close()
            self.socket.close()
            self.socket = self.reader = None


def scenario_document(name: str, faults: List[Dict[str, Any]], **extra: Any) -> Dict[str, Any]:
    """A scenario file's content for these faults (the form `mockex serve --scenario` and `mockex run` read)."""
    listed = [{f["fault"]: dict(f["params"])} if f.get("params") else f["fault"] for f in faults]
    return {"name": name, **extra, "faults": listed}
