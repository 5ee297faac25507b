"""The fuzz run's link to its mock (harness/fuzz/server.py), against canned peers: the kept-alive control connection
(reused, opened again when the server closes it, errors told apart), the transcript reader (skipping what came
before a run without parsing it, never losing a line being written), and the thread an in-process client runs on."""
from __future__ import annotations

import json
import socket
import threading
from typing import List

import pytest

from harness.control.ctl import CtlError
from harness.fuzz.engine import ClientThread
from harness.fuzz.server import FuzzServer, KeptAlive


class CannedControl:
    """A loopback listener answering each request with the next canned answer; it records every request and counts
    connections. An answer None closes the connection without answering."""

    def __init__(self, answers: List[object]):
        self.answers, self.requests, self.connections = list(answers), [], 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with connection, connection.makefile("rb") as reader:
                while self.answers:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = reader.readline()
                        if not line:
                            break
                        head += line
                    if not head:
                        break
                    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                      if line.lower().startswith(b"content-length")))
                    self.requests.append((head, reader.read(length)))
                    answer = self.answers.pop(0)
                    if answer is None:
                        break
                    connection.sendall(answer)   # type: ignore[arg-type]
                    if b"Connection: close" in answer:   # type: ignore[operator]
                        break

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


def answer(status: int, body: dict, *headers: str) -> bytes:
    data = json.dumps(body).encode()
    lines = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{lines}Content-Length: {len(data)}\r\n\r\n" \
        .encode() + data


def test_the_control_connection_is_reused_reopened_when_closed_and_tells_errors_apart() -> None:
    canned = CannedControl([answer(200, {"n": 1}), answer(200, {"n": 2}, "Connection: close"),
                            None, answer(200, {"n": 3}),
                            answer(400, {"error": "faults[0]: unknown fault"})])
    kept = KeptAlive(f"http://127.0.0.1:{canned.port}", "s3cret")
    try:
        assert kept.post("/apply", {"a": 1}) == {"n": 1}
        assert kept.post("/apply", {"a": 2}) == {"n": 2}
        assert canned.connections == 1, "the second request went on the first connection"
        assert kept.post("/apply", {"a": 3}) == {"n": 3}, "closed unanswered: sent again on a new connection"
        assert canned.connections == 3
        with pytest.raises(CtlError) as refused:
            kept.post("/apply", {"a": 4})
        assert refused.value.code == 2 and str(refused.value) == "400: faults[0]: unknown fault"
    finally:
        kept.close()
        canned.close()
    head, body = canned.requests[0]
    assert head.startswith(b"POST /apply HTTP/1.1\r\n") and b"Authorization: Bearer s3cret\r\n" in head
    assert json.loads(body) == {"a": 1}


def test_an_unreachable_control_api_is_an_error_after_one_retry() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(CtlError) as unreachable:
        KeptAlive(f"http://127.0.0.1:{port}", "t", timeout=2).post("/apply", {})
    assert unreachable.value.code == 3


def test_events_before_a_run_are_skipped_and_a_line_being_written_waits_for_its_end(tmp_path) -> None:
    path = tmp_path / "events.log"   # not transcript.jsonl: the suite checks those against the schema
    path.write_bytes(b'{"seq": 1, "kind": "control"}\n{"seq": 2, "kind": "disc')
    server = FuzzServer(state_dir=str(tmp_path))
    server._transcript = open(path, "rb")
    try:
        server.skip_events()
        with open(path, "ab") as transcript:
            transcript.write(b'onnect"}\n{"seq": 3, "kind": "connect"}\n{"seq": 4, "kind": "tls"')
        assert [e["seq"] for e in server.new_events()] == [3], "seq 2 began before the run; seq 4 is unfinished"
        with open(path, "ab") as transcript:
            transcript.write(b'}\n')
        assert [e["kind"] for e in server.new_events()] == ["tls"]
    finally:
        server._transcript.close()


def test_an_in_process_client_runs_on_one_thread_until_it_hangs_then_on_a_new_one() -> None:
    runner, threads, release = ClientThread(), {}, threading.Event()

    def on(label: str, then=lambda: None):
        return lambda: threads.__setitem__(label, threading.current_thread()) or then()
    try:
        assert runner.run(on("first"), 10) and runner.run(on("second"), 10)
        assert threads["first"] is threads["second"] is not threading.current_thread()
        assert not runner.run(on("hung", lambda: release.wait(30)), 0.05), "a call that has not returned is a hang"
        assert runner.run(on("after"), 10), "the call after a hang does not wait behind it"
        assert threads["after"] is not threads["first"]
    finally:
        release.set()
        runner.close()
    for label in ("first", "after"):
        threads[label].join(10)
        assert not threads[label].is_alive(), "the hung thread ends once its call returns; close ends the other"
